"""The simulator against a measured `garrison demo` run: the same devices, cap, arrivals and training job, predicted.

A demo run (governor/demo.py) trains alone, then governs one training job and two bursts of videos on this
machine's CPU core slots under a power cap that binds. `demo_record(...)` is what the planner needs from it, as a
plain dict (benchmarks/planner_fidelity.py extracts it from the run's summary.json and garrison.db; a small one
ships in tests/planner/data/). `predict_demo(record)` replays it:

- devices: one `cpu-core` unit per core slot, in the same home pools; the cap in chip watts (no PUE);
- the built-in model's cost profile is calibrated on the first burst only (the videos submitted before the training
  job; or on all videos, in sample, with `calibrate_on="all"`): the seconds a video held its device (claimed to
  completed, de-rated by the power limit in force) against pixels x frames x steps rendered; joules per second of
  occupancy; and a worker's start-up time (model loading) from the serving worker's first claim;
- the arrivals are the measured request times; the training job is submitted when it was, with as much work as
  its measured steps at the training-alone rate;
- the governor's policies run every control period, as in the demo.

It returns predicted and measured mean latency, joules per video and governed training throughput, with relative
errors (the issue's target: within 10%). What the simulator leaves out: the process start of workers and training
(model loading), and other work on the machine, which the measured run includes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from garrison.planner.profiles import (
    BUILTIN_ACTIVE_W_PER_CORE,
    BUILTIN_IDLE_W_PER_CORE,
    BUILTIN_MODEL,
    CPU_CHIP,
    CostProfile,
    calibrate_builtin,
    default_points,
)
from garrison.planner.scenario import parse_scenario
from garrison.planner.sim import ChipPower, SiteSimulator, speed_under_limit

RECORD_VERSION = 1


def _work(video: dict[str, Any]) -> float:
    """Pixels x frames x steps actually rendered (native size, steps used), the built-in profile's unit of work."""
    w, h = (int(x) for x in str(video["native_size"] or video["size"]).lower().split("x"))
    frames = int(video["seconds"]) * 8
    return float(w * h * frames * int(video["steps_used"] or video["steps"]))


def occupancy_s(video: dict[str, Any]) -> float:
    """Seconds the video held its device: claimed to completed (generation, watermark, signing, encoding)."""
    return float(video["completed_s"] - video["started_s"])


def limit_at_w(record: dict[str, Any], device_id: str | None, t_s: float) -> float:
    """The power limit `device_id` ran under at `t_s` (the last one set before; its maximum before any)."""
    limit = BUILTIN_ACTIVE_W_PER_CORE
    for change in record.get("power_limits", []):
        if change["device_id"] == device_id and change["t_s"] <= t_s:
            limit = change["watts"]
    return limit


def full_speed_s(record: dict[str, Any], video: dict[str, Any]) -> float:
    """The video's occupancy had its device run at full power: a core slot's cgroup quota slows it in proportion."""
    power = ChipPower(BUILTIN_IDLE_W_PER_CORE, BUILTIN_ACTIVE_W_PER_CORE, 0.0, BUILTIN_ACTIVE_W_PER_CORE)
    speed = speed_under_limit(CPU_CHIP, power, limit_at_w(record, video["device_id"], video["started_s"]), 1.0)
    return occupancy_s(video) * speed


def calibration_videos(record: dict[str, Any], on: str = "first_burst") -> list[dict[str, Any]]:
    """The videos the profile is fitted on: `first_burst` (submitted before the training job, so the rest of the
    run is predicted out of sample) or `all` (in sample)."""
    if on not in ("first_burst", "all"):
        raise ValueError(f"calibrate on 'first_burst' or 'all', got {on!r}")
    submitted = record["job"]["submitted_s"]
    return [
        v
        for v in record["videos"]
        if v["status"] == "completed"
        and v["completed_s"] is not None
        and v["started_s"] is not None
        and (on == "all" or v["created_s"] <= submitted)
        and occupancy_s(v) > 0
    ]


def predict_demo(record: dict[str, Any], calibrate_on: str = "first_burst") -> dict[str, Any]:
    """Predicted against measured figures of a demo run (see the module docstring)."""
    if record.get("version") != RECORD_VERSION:
        raise ValueError(f"demo record version {record.get('version')!r}; this planner reads {RECORD_VERSION}")
    calib = calibration_videos(record, calibrate_on)
    if not calib:
        raise ValueError(f"the demo record has no completed video to calibrate on ({calibrate_on})")
    # A worker's first video includes its warm-up (first-call allocations): left out of the fit, and its extra time
    # counted as part of the worker's start-up instead.
    warmup_extra_s = 0.0
    firsts = {}
    for v in sorted(calib, key=lambda v: v["started_s"]):
        firsts.setdefault(v["device_id"], v)
    rest = [v for v in calib if v is not firsts.get(v["device_id"])]
    if rest:
        typical = float(np.median([full_speed_s(record, v) / _work(v) for v in rest]))
        warmup_extra_s = max(max(full_speed_s(record, v) - typical * _work(v) for v in firsts.values()), 0.0)
        calib = rest
    # Energy per second of occupancy, so predicted joules follow predicted occupancy.
    with_joules = [v for v in calib if v["joules"] is not None]
    power_w = sum(v["joules"] for v in with_joules) / sum(occupancy_s(v) for v in with_joules) if with_joules else 5.6
    point = calibrate_builtin(
        [(_work(v), full_speed_s(record, v)) for v in calib],
        power_w,
        f"demo run {record.get('source', '')}, {calibrate_on}",
    )
    points = tuple(p for p in default_points() if p.model != BUILTIN_MODEL) + (point,)
    first = record["videos"][0]
    w, h = (int(x) for x in str(first["size"]).split("x"))
    job = record["job"]
    alone = record["training_steps_per_s_alone"]
    work_s = job["train_steps"] / alone
    horizon_s = max(
        max((v["completed_s"] or 0.0) for v in record["videos"]),
        (job["finished_s"] or 0.0),
        job["submitted_s"] + work_s,
    )
    pools = record["devices"]
    # The serving-home worker starts with the governor: its first claim says how long a worker takes to load.
    serving_ids = {d["id"] for d in pools if d["home_pool"] == "serving"}
    first_claims = [
        v["started_s"] for v in record["videos"] if v["device_id"] in serving_ids and v["started_s"] is not None
    ]
    worker_start_s = max(min(first_claims), 0.0) if first_claims else 0.0
    worker_start_s += warmup_extra_s
    scenario = parse_scenario(
        {
            "name": "demo-replay",
            "horizon_s": horizon_s * 3 + 60,  # room for a slower prediction to finish
            "sites": [
                {
                    "name": "this-machine",
                    "power_cap_mw": record["power_cap_w"] / 1e6,
                    "pue": 1.0,
                    "server_factor": 1.0,
                    "devices": [
                        {"chip": CPU_CHIP, "count": sum(1 for d in pools if d["home_pool"] == pool), "pool": pool}
                        for pool in ("serving", "training")
                        if any(d["home_pool"] == pool for d in pools)
                    ],
                }
            ],
            "demand": {"users": 0},
            "requests": [
                {"model": BUILTIN_MODEL, "seconds": first["seconds"], "size": f"{w}x{h}", "steps": first["steps"]}
            ],
            "training": [
                {"name": "demo-train", "devices": job["devices"], "duration_s": work_s, "start_s": job["submitted_s"]}
            ],
            "governor": {
                "control_period_s": record["control_period_s"],
                "grace_period_s": record["grace_period_s"],
                "slo_s": record["slo_s"],
            },
            "simulation": {"max_units_per_site": 4096, "worker_start_s": worker_start_s},
        }
    )
    profile = CostProfile(points=points, catalog=scenario.chips())
    arrivals = np.array(sorted(v["created_s"] for v in record["videos"]))
    sim = SiteSimulator(scenario, 0, arrivals, np.zeros(len(arrivals), dtype=np.int32), profile=profile)
    result = sim.run()
    started = np.isfinite(result.start_s)
    latency = (result.end_s - result.arrival_s)[started]
    levels = result.level[started]
    # The demo's joules are the meter's over each video's window, and its window follows the time the video holds its
    # device (longer under a power limit), so: joules per second of occupancy (calibrated) x predicted occupancy.
    joules_pred = power_w * (result.end_s - result.start_s)[started]
    sim_job = result.jobs[0]
    governed_pred = None
    if sim_job.finished_s is not None and sim_job.started_s is not None:
        governed_pred = job["train_steps"] / (sim_job.finished_s - sim_job.started_s)

    done = [v for v in record["videos"] if v["status"] == "completed" and v["completed_s"] is not None]
    measured = {
        "latency_mean_s": float(np.mean([v["completed_s"] - v["created_s"] for v in done])) if done else None,
        "joules_per_video": float(np.mean([v["joules"] for v in done if v["joules"] is not None])) if done else None,
        "training_steps_per_s_governed": record["training_steps_per_s_governed"],
    }
    predicted = {
        "latency_mean_s": float(latency.mean()) if len(latency) else None,
        "joules_per_video": float(joules_pred.mean()) if len(joules_pred) else None,
        "training_steps_per_s_governed": governed_pred,
    }
    errors = {
        k: (abs(predicted[k] - measured[k]) / measured[k])
        if predicted[k] is not None and measured[k] not in (None, 0)
        else None
        for k in measured
    }
    return {
        "predicted": predicted,
        "measured": measured,
        "relative_error": {k: None if e is None or not math.isfinite(e) else round(e, 4) for k, e in errors.items()},
        "calibration": {
            "on": calibrate_on,
            "videos": len(calib),
            "worker_start_s": round(worker_start_s, 3),
            "seconds_per_video_rung0": round(point.per_video_s + point.overhead_s, 4),
            "power_w": round(power_w, 3),
        },
        "videos": len(record["videos"]),
        "videos_served_predicted": int(started.sum()),
        "quality_levels_predicted": {str(q): int(c) for q, c in enumerate(np.bincount(levels, minlength=6))},
        "quality_levels_measured": {str(q): sum(1 for v in done if v["quality_level"] == q) for q in range(6)},
        "power_cap_w": record["power_cap_w"],
        "peak_power_w_predicted": float(result.power_w.max()),
        "mean_power_w_predicted": float(result.power_w[: max(1, int(horizon_s / result.period_s))].mean()),
        "power_mean_w_measured": record.get("power", {}).get("mean_w"),
    }

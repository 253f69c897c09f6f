"""The simulator against a measured `garrison demo` run: the same devices, cap, arrivals and training job, predicted.

A demo run (governor/demo.py) trains alone, then governs one training job and two bursts of videos on this
machine's CPU core slots under a power cap that binds. `demo_record(...)` is what the planner needs from it, as a
plain dict (benchmarks/planner_fidelity.py extracts it from the run's summary.json and garrison.db; a small one
ships in tests/planner/data/). `predict_demo(record)` replays it:

- devices: one `cpu-core` unit per core slot, in the same home pools; the cap in chip watts (no PUE);
- the built-in model's cost profile is calibrated on the first burst only (the videos submitted before the training
  job; or on all videos, in sample, with `calibrate_on="all"`): the seconds a video held its device (claimed to
  completed, de-rated by the power limit in force) against pixels x frames x steps rendered, as a fixed part
  (watermarking, encoding, signing, which no quality rung shortens) plus a part proportional to the work; and a
  worker's start-up time (model loading) from the serving worker's first claim;
- the arrivals are the measured request times; the training job is submitted when it was, with as much work as
  its measured steps at the training-alone rate;
- the governor's policies run every control period, as in the demo.

Joules per video are predicted as what the demo counts. The serving worker measures each video with the estimate
meter (energy/meters.py; this CPU has no RAPL) over the pipeline call only, not over the watermark, encoding and
signing that follow, though the video still holds its device then. What the meter covers is the record's
`meter_scope`:

- "core" (workers on core slots since 2026-11-26): the serving core alone, its idle watts plus the active span for
  each CPU-second that core was busy: the slot's work at its power limit (the cgroup quota), and whatever other
  programs the kernel ran on that core in the time the quota left free;
- "machine" (records without the field, made before): every core's idle watts plus every busy CPU-second on the
  machine: the training slot's core and other programs too, not the serving slot's share.

The prediction follows that: the metered window is the generation part of the predicted occupancy (generation seconds
fitted against work like occupancy, from `seconds_wall`), and the power in it is the estimate meter's model over the
metered cores of the simulated fleet (the serving slot busy at its quota; on the machine scope also the training
slots while the job runs, the rest idle) plus other programs, which fill a share of the CPU time the fleet leaves
free on those cores: that share is measured on the calibration videos (their joules over their windows against the
fleet's draw then). On a quiet machine it is near 0 and the meter reads the fleet; on a loaded one near 1 and it
reads the metered cores busy.

It returns predicted and measured mean latency, joules per video and governed training throughput, with relative
errors (the issue's target: within 10%). What the simulator leaves out: the process start of workers and training
(model loading), and the slowdown other work on the machine causes, which the measured run includes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from garrison.core.fleet import QUALITY_LADDER
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


CORE_POWER = ChipPower(BUILTIN_IDLE_W_PER_CORE, BUILTIN_ACTIVE_W_PER_CORE, 0.0, BUILTIN_ACTIVE_W_PER_CORE)


def slot_speed(record: dict[str, Any], video: dict[str, Any]) -> float:
    """The share of its core the video's slot could use: the cgroup quota of the power limit in force."""
    return speed_under_limit(CPU_CHIP, CORE_POWER, limit_at_w(record, video["device_id"], video["started_s"]), 1.0)


def full_speed_s(record: dict[str, Any], video: dict[str, Any]) -> float:
    """The video's occupancy had its device run at full power: a core slot's cgroup quota slows it in proportion."""
    return occupancy_s(video) * slot_speed(record, video)


def machine_cores(record: dict[str, Any]) -> int:
    """Logical CPUs the meter counts: the record's, or (older records) one per core slot, as the demo makes them."""
    return int(record.get("machine_cores") or len(record["devices"]))


def meter_scope(record: dict[str, Any]) -> str:
    """What a video's joules cover: "core" (its serving core) or "machine" (every core; records made before the
    serving worker metered its own core say nothing, and mean that)."""
    scope = record.get("meter_scope") or "machine"
    if scope not in ("core", "machine"):
        raise ValueError(f"demo record meter_scope {scope!r}; this planner reads 'core' or 'machine'")
    return scope


def metered_cores(record: dict[str, Any]) -> int:
    """Logical CPUs a video's meter counts: its serving core, or every core of the machine."""
    return 1 if meter_scope(record) == "core" else machine_cores(record)


def meter_w(cores: int, busy_cores: float) -> float:
    """The estimate meter's machine power with `busy_cores` CPUs busy (CpuPowerModel.joules per second)."""
    return cores * BUILTIN_IDLE_W_PER_CORE + (BUILTIN_ACTIVE_W_PER_CORE - BUILTIN_IDLE_W_PER_CORE) * busy_cores


def fleet_busy_cores(serving_speed: float, training_devices: int, scope: str = "machine") -> float:
    """Busy CPUs of the fleet, of those the meter counts, while a video generates: its slot at its quota, and on the
    machine scope each training slot fully (on the core scope the training slots are other cores)."""
    return serving_speed + (training_devices if scope == "machine" else 0)


def training_devices_at(started_s: float | None, finished_s: float | None, devices: int, t_s: float) -> int:
    """Training slots busy at `t_s`: the job's devices between its start and its end."""
    if started_s is None or t_s < started_s or (finished_s is not None and t_s >= finished_s):
        return 0
    return devices


def background_share(windows: list[tuple[float, float, float]], cores: int) -> float:
    """The share of the CPU time the fleet left free that other programs took, from (seconds, joules, fleet busy
    cores) of metered windows: what the meter counted beyond the fleet, over what the fleet left free (0 to 1)."""
    span_w = BUILTIN_ACTIVE_W_PER_CORE - BUILTIN_IDLE_W_PER_CORE
    extra = free = 0.0
    for seconds, joules, fleet in windows:
        busy = (joules / seconds - cores * BUILTIN_IDLE_W_PER_CORE) / span_w
        extra += seconds * (busy - fleet)
        free += seconds * max(cores - fleet, 0.0)
    return min(max(extra / free, 0.0), 1.0) if free > 0 else 0.0


def _seconds(point: Any, work: float) -> float:
    """Full-speed seconds of `work` (pixels x frames x steps) on a built-in point: fixed part + proportional part."""
    return point.overhead_s + point.per_video_s * work / (point.width * point.height * point.frames * point.steps)


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
    job = record["job"]
    scope = meter_scope(record)
    cores = metered_cores(record)
    # The training process starts some time after the governor starts the job; until then its slot reads idle
    # (benchmarks/planner_fidelity.py measures it from the run's power samples; 0 in records without it).
    training_start_s = float(record.get("training_start_s") or 0.0)
    # What the meter counted: its cores' joules over the generation (`seconds_wall`), not the whole occupancy.
    metered = [v for v in calib if v["joules"] is not None and v.get("seconds_wall")]
    windows = [
        (
            float(v["seconds_wall"]),
            float(v["joules"]),
            fleet_busy_cores(
                slot_speed(record, v),
                training_devices_at(
                    (job["started_s"] or 0.0) + training_start_s, job["finished_s"], job["devices"], v["started_s"]
                ),
                scope,
            ),
        )
        for v in metered
    ]
    share = background_share(windows, cores)
    # The device's own power while generating, for the profile (the planner's joules elsewhere): one busy core slot.
    power_w = BUILTIN_ACTIVE_W_PER_CORE
    point = calibrate_builtin(
        [(_work(v), full_speed_s(record, v)) for v in calib],
        power_w,
        f"demo run {record.get('source', '')}, {calibrate_on}",
    )
    # Generation seconds at full speed against work, the same way: the metered share of each predicted occupancy.
    gen_point = calibrate_builtin(
        [(_work(v), float(v["seconds_wall"]) * slot_speed(record, v)) for v in metered] or [(1.0, 0.0)],
        power_w,
        "generation",
    )
    points = tuple(p for p in default_points() if p.model != BUILTIN_MODEL) + (point,)
    first = record["videos"][0]
    w, h = (int(x) for x in str(first["size"]).split("x"))
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
            "simulation": {
                "max_units_per_site": 4096,
                "worker_start_s": worker_start_s,
                "training_start_s": training_start_s,
            },
        }
    )
    profile = CostProfile(points=points, catalog=scenario.chips())
    arrivals = np.array(sorted(v["created_s"] for v in record["videos"]))
    sim = SiteSimulator(scenario, 0, arrivals, np.zeros(len(arrivals), dtype=np.int32), profile=profile)
    result = sim.run()
    started = np.isfinite(result.start_s)
    latency = (result.end_s - result.arrival_s)[started]
    levels = result.level[started]
    sim_job = result.jobs[0]
    # The meter's joules (see the module docstring): its cores' power over the generation part of the occupancy.
    occ_pred = (result.end_s - result.start_s)[started]
    start_pred = result.start_s[started]
    work0 = float(w * h * int(first["seconds"]) * 8 * int(first["steps"]))
    joules_pred = np.zeros(len(occ_pred))
    for i, (occ, t, q) in enumerate(zip(occ_pred.tolist(), start_pred.tolist(), levels.tolist(), strict=True)):
        rung = QUALITY_LADDER[q]
        work = work0 * rung.steps_for(int(first["steps"])) / int(first["steps"]) * rung.native_scale**2
        occ_full = _seconds(point, work)
        speed = min(occ_full / occ, 1.0) if occ > 0 else 1.0  # the sim's slowdown under the limit it set
        window = _seconds(gen_point, work) / speed
        training_from = None if sim_job.started_s is None else sim_job.started_s + training_start_s
        training = training_devices_at(training_from, sim_job.finished_s, job["devices"], t)
        fleet = fleet_busy_cores(speed, training, scope)
        joules_pred[i] = meter_w(cores, fleet + share * max(cores - fleet, 0.0)) * window
    governed_pred = None
    if sim_job.finished_s is not None and sim_job.started_s is not None:
        # Steps per second while training, as the demo measures it (after its warm-up steps): start-up left out.
        governed_pred = job["train_steps"] / (sim_job.finished_s - sim_job.started_s - training_start_s)

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
            "training_start_s": round(training_start_s, 3),
            "seconds_per_video_rung0": round(point.per_video_s + point.overhead_s, 4),
            "fixed_s": round(point.overhead_s, 4),
            "generation_fixed_s": round(gen_point.overhead_s, 4),
            "metered_w": round(sum(j for _, j, _ in windows) / sum(s for s, _, _ in windows), 3) if windows else None,
            "background_share": round(share, 3),
            "meter_scope": scope,
            "metered_cores": cores,
            "machine_cores": machine_cores(record),
        },
        "predicted_occupancy_mean_s": float(occ_pred.mean()) if len(occ_pred) else None,
        "videos": len(record["videos"]),
        "videos_served_predicted": int(started.sum()),
        "quality_levels_predicted": {str(q): int(c) for q, c in enumerate(np.bincount(levels, minlength=6))},
        "quality_levels_measured": {str(q): sum(1 for v in done if v["quality_level"] == q) for q in range(6)},
        "power_cap_w": record["power_cap_w"],
        "peak_power_w_predicted": float(result.power_w.max()),
        "mean_power_w_predicted": float(result.power_w[: max(1, int(horizon_s / result.period_s))].mean()),
        "power_mean_w_measured": record.get("power", {}).get("mean_w"),
    }

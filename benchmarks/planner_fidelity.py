"""The planner's fidelity target: mean latency, energy per video and training throughput within 10% of a measured
`garrison demo` run on this machine.

Reads a demo run folder (summary.json + garrison.db, as `garrison demo --out DIR` writes them), extracts the record
the planner needs (garrison.planner.validate: devices, cap, control period, the videos' times, joules and rungs, the
training job and when its process started, and per sampled period other programs' CPU and what garrison's pinned
processes used), replays it through the simulator with the built-in model's profile calibrated on the first burst
only, and prints one JSON line with predicted, measured and relative errors (and `free_running`: the replay with the
governor choosing every video's rung itself). `--write-record FILE` also saves the
extracted record (the test fixture in tests/planner/data/ was made this way); a record file in place of DEMO_DIR
replays that record. Where the run trained alone both before and after the governed phase, `throughput_error_by_baseline`
gives the throughput error with each alone phase as the only baseline, next to the pooled one the replay uses.

Several runs of one configuration (`DEMO_DIR|RECORD.json ...`) print one line with each run's errors and the runs
taken together (`validate.fidelity_over_runs`: the pooled error, the runs' spread and the standard error of their
mean), beside how far each run's two alone phases trained apart (`validate.alone_phase_spread`): the host's speed
moving within a run, the floor under any one run's throughput error.

`--other-demand by_phase` replays with other programs' CPU while training taken from the calibration window's
training part (`validate.predict_demo`), instead of from before the job.

Usage: python benchmarks/planner_fidelity.py DEMO_DIR|RECORD.json [--write-record tests/planner/data/demo_record.json]
       python benchmarks/planner_fidelity.py RUN1 RUN2 ... (several runs of one configuration)
       [--other-demand before_job|by_phase]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from _machine import machine_facts
from garrison.planner.validate import (
    OTHER_DEMAND_MODES,
    RECORD_VERSION,
    alone_phase_spread,
    fidelity_over_runs,
    predict_demo,
)
from garrison.store import open_store


def power_limits(decisions: list, t0: float, config: dict) -> list[dict[str, Any]]:
    """The power limits the governor set, in time order. A decision's reason names the limit rounded to a watt; the
    exact value is the nearest rung of the governor's ladder (max - k x step, floored at min) for a CPU core slot
    (hardware/power_limit.py: max = active W per core, min = idle + 10% of the span)."""
    from garrison.hardware.cpu import CpuPowerModel

    p = CpuPowerModel.from_env()
    max_w, min_w = p.active_w_per_core, p.idle_w_per_core + 0.1 * (p.active_w_per_core - p.idle_w_per_core)
    step = max((max_w - min_w) * config["power_limit_step_fraction"], 1.0 if max_w - min_w > 1 else 0.0)
    rungs = sorted({max(max_w - k * step, min_w) for k in range(64)})
    out = []
    for d in decisions:
        if d.action not in ("set_power_limit", "throttle_training") or not d.target:
            continue
        found = re.search(r"limit (\d+(?:\.\d+)?) W", d.reason) or re.search(r"(\d+(?:\.\d+)?) W$", d.reason)
        if "full power limit" in d.reason:
            watts = max_w
        elif found:
            watts = min(rungs, key=lambda r: abs(r - float(found.group(1))))
        else:
            continue
        out.append({"t_s": round(d.ts - t0, 4), "device_id": d.target, "watts": round(watts, 4)})
    return out


def training_start_s(samples: list, started_ts: float | None, t0: float = 0.0, period_s: float = 0.0) -> float:
    """Seconds from the job's start until its process began drawing power on its slot, to a fraction of a period:
    the first sampled period in which a device in the training state read above idle (by 5% of the span) holds the
    start, and a process that ran flat out from its start within a period of L seconds that reads a fraction u of the
    span busy started (1 - u) x L into it. (Whole periods before 2026-11-26: the tick that starts training spawns the
    process a tenth to a few tenths of a second after the tick, and the first period's reading decides whether the
    governor's next tick finds the fleet over its high watermark.) Counted from the control period the job started
    in (`t0` + a whole number of `period_s`), where the simulator's tick starts it: a tick the loaded machine ran late
    (2026-11-26: 0.63 s) delays the process as much."""
    from garrison.hardware.cpu import CpuPowerModel

    if started_ts is None:
        return 0.0
    p = CpuPowerModel.from_env()
    span_w = p.active_w_per_core - p.idle_w_per_core
    previous_ts = started_ts
    if period_s > 0:
        started_ts = t0 + math.floor((started_ts - t0) / period_s + 1e-6) * period_s
    for s in sorted(samples, key=lambda s: s.ts):
        if s.ts <= started_ts:
            continue
        states = s.extra.get("devices", {})
        watts = s.extra.get("power_w_by_device", {})
        busy = [
            min((w - p.idle_w_per_core) / span_w, 1.0)
            for d, w in watts.items()
            if states.get(d) == "training" and w >= p.idle_w_per_core + 0.05 * span_w
        ]
        if busy:
            return round(max(previous_ts - started_ts + (1.0 - max(busy)) * (s.ts - previous_ts), 0.0), 4)
        previous_ts = s.ts
    return 0.0


def other_cpu(samples: list, t0: float) -> list[dict[str, Any]]:
    """Other programs' CPU in each sampled period: every slot's logical CPU busy (the whole core, as /proc/stat reads
    it) less what garrison's processes pinned there used (the sampler's reading of the slot), in cores, summed over
    the slots, with the period it covers (ending at the sample), and what the pinned processes used of each slot.
    Runs recorded before the sampler read whole cores have none."""
    from garrison.hardware.cpu import CpuPowerModel

    p = CpuPowerModel.from_env()
    span_w = p.active_w_per_core - p.idle_w_per_core
    out = []
    previous_ts = None
    for s in sorted(samples, key=lambda s: s.ts):
        whole = s.extra.get("cpu_utilisation_by_device") or {}
        watts = s.extra.get("power_w_by_device") or {}
        if whole and previous_ts is not None:
            pinned = {d: min(max((w - p.idle_w_per_core) / span_w, 0.0), 1.0) for d, w in watts.items()}
            busy = sum(max(u - pinned.get(d, 0.0), 0.0) for d, u in whole.items())
            out.append(
                {
                    "from_s": round(previous_ts - t0, 4),
                    "to_s": round(s.ts - t0, 4),
                    "cores": round(busy, 4),
                    "pinned": {d: round(u, 4) for d, u in pinned.items()},
                }
            )
        previous_ts = s.ts
    return out


def extract_record(demo_dir: Path) -> dict[str, Any]:
    """The planner's view of a demo run, times in seconds from the governed phase's first sample."""
    summary = json.loads((demo_dir / "summary.json").read_text())
    store = open_store(f"sqlite:///{demo_dir / 'garrison.db'}")
    try:
        samples = store.list_samples(since=0, limit=100_000)
        videos = store.recent_videos(since=0, limit=100_000)
        jobs = [j for j in store.list_jobs() if j.name == "demo-train"]
        decisions = store.list_decisions(since=0, limit=100_000)
    finally:
        store.close()
    if not samples or not videos or not jobs:
        raise SystemExit(f"{demo_dir}: no samples, videos or demo-train job in garrison.db: is it a demo run?")
    t0 = min(s.ts for s in samples)
    job = jobs[-1]
    device_ids = summary["devices"]
    n_training = max(1, len(device_ids) // 2)  # governor/demo.py home_pools_for: the first half trains

    def rel(ts: float | None) -> float | None:
        return None if ts is None else round(ts - t0, 4)

    config = summary["config"]
    # What the videos' joules cover: their serving core (workers on core slots say "cores N" since 2026-11-26) or
    # the whole machine (runs before that say nothing).
    scopes = {
        str(((v.provenance or {}).get("energy") or {}).get("meter_scope"))
        for v in videos
        if str(v.status) == "completed"
    }
    return {
        "meter_scope": "core" if scopes and all(x.startswith("cores ") for x in scopes) else "machine",
        "power_limits": power_limits(decisions, t0, config),
        # The clock each tick read (its samples' stamp): a settle window of one period holds the next tick or not by
        # a fraction of a millisecond (garrison.planner.validate.tick_clock_s).
        "ticks_s": [round(s.ts - t0, 6) for s in sorted(samples, key=lambda s: s.ts)],
        "training_start_s": training_start_s(samples, job.started_at, t0, config["control_period_s"]),
        "other_cpu": other_cpu(samples, t0),
        "machine_cores": os.cpu_count(),
        "version": RECORD_VERSION,
        "source": str(demo_dir),
        "power_source": summary.get("power_source"),
        "power_cap_w": summary["power_cap_w"],
        "control_period_s": config["control_period_s"],
        "grace_period_s": config["grace_period_s"],
        "slo_s": config["slo_s"],
        "devices": [
            {"id": d, "home_pool": "training" if i < n_training else "serving"} for i, d in enumerate(device_ids)
        ],
        "videos": [
            {
                "created_s": rel(v.created_at),
                "started_s": rel(v.started_at),
                "completed_s": rel(v.completed_at),
                "status": str(v.status),
                "seconds": v.seconds,
                "size": v.size,
                "steps": v.steps,
                "steps_used": v.steps_used,
                "native_size": v.native_size,
                "quality_level": v.quality_level,
                "seconds_wall": v.seconds_wall,
                "joules": v.joules,
                "device_id": v.device_id,
            }
            for v in videos
        ],
        "job": {
            "submitted_s": rel(job.created_at),
            "started_s": rel(job.started_at),
            "finished_s": rel(job.finished_at),
            "devices": job.devices_requested,
            "train_steps": job.steps_done,
        },
        "training_steps_per_s_alone": summary["training_steps_per_s_alone"],
        # the two alone phases around the governed one (demo runs since 2026-11-26); the figure above pools them
        "training_steps_per_s_alone_before": summary.get("training_steps_per_s_alone_before"),
        "training_steps_per_s_alone_after": summary.get("training_steps_per_s_alone_after"),
        "training_steps_per_s_governed": summary["training_steps_per_s_governed"],
        "power": {
            "mean_w": sum(s.power_w for s in samples) / len(samples),
            "max_w": max(s.power_w for s in samples),
            "samples": len(samples),
        },
        "summary": {k: summary.get(k) for k in ("latency_p50_s", "joules_per_video", "training_throughput_retention")},
    }


def over_runs(paths: list[Path], other_demand: str = "before_job") -> dict[str, Any]:
    """Several runs of one demo configuration: each run's errors and the runs taken together
    (`validate.fidelity_over_runs`), with how far each run's two alone phases trained apart (`alone_phase_spread`)."""
    records = [json.loads(p.read_text()) if p.is_file() else extract_record(p) for p in paths]
    results = [predict_demo(r, "first_burst", other_demand) for r in records]
    spread = [alone_phase_spread(r) for r in records]
    together = fidelity_over_runs(results)
    return {
        "benchmark": "planner_fidelity",
        "runs": [
            {
                "run": str(p),
                "relative_error": r["relative_error"],
                "alone_phase_spread": None if s is None else round(s, 4),
            }
            for p, r, s in zip(paths, results, spread, strict=True)
        ],
        "over_runs": together,
        "other_demand": other_demand,
        "runs_whose_alone_phases_differ_over_target": sum(
            1 for s in spread if s is not None and s > together["target_relative_error"]
        ),
        "machine": machine_facts(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("demo_dir", type=Path, nargs="+", help="a demo run folder or record; several: taken together")
    ap.add_argument("--write-record", type=Path, default=None)
    ap.add_argument(
        "--other-demand",
        choices=OTHER_DEMAND_MODES,
        default="before_job",
        help="other programs' CPU for videos run while training: from before the job, or from the calibration "
        "window's training part (by_phase)",
    )
    args = ap.parse_args()
    if len(args.demo_dir) > 1:
        if args.write_record:
            raise SystemExit("--write-record takes one run")
        print(json.dumps(over_runs(args.demo_dir, args.other_demand)))
        return
    demo_dir = args.demo_dir[0]
    record = json.loads(demo_dir.read_text()) if demo_dir.is_file() else extract_record(demo_dir)
    if args.write_record:
        args.write_record.parent.mkdir(parents=True, exist_ok=True)
        args.write_record.write_text(json.dumps(record, indent=1) + "\n")
    result = predict_demo(record, "first_burst", args.other_demand)
    in_sample = predict_demo(record, "all", args.other_demand)
    by_baseline = {"pooled": result["relative_error"]["training_steps_per_s_governed"]}
    for phase in ("before", "after"):
        if record.get(f"training_steps_per_s_alone_{phase}"):
            alone = {**record, "training_steps_per_s_alone": record[f"training_steps_per_s_alone_{phase}"]}
            by_baseline[phase] = predict_demo(alone, "first_burst", args.other_demand)["relative_error"][
                "training_steps_per_s_governed"
            ]
    print(
        json.dumps(
            {
                "benchmark": "planner_fidelity",
                **result,
                "calibrated_on_all_videos": {k: in_sample[k] for k in ("predicted", "relative_error", "calibration")},
                "throughput_error_by_baseline": by_baseline,
                "target_relative_error": 0.10,
                "machine": machine_facts(),
            }
        )
    )


if __name__ == "__main__":
    main()

"""How fast the demo's serving worker works under the CPU quota that stands for its core slot's power limit.

A core slot's power limit is a CFS bandwidth quota (hardware/power_limit.py CpuSlotLimiter): at most `quota` of each
100 ms period on its core. The planner's simulator takes a slot's speed under a limit to be the quota's share of the
core (planner/sim.py speed_under_limit). This script measures it on the demo's own machinery: the demo's executor
(governor/executors/local.py: the serving worker process pinned to its core and put in the slot's cgroup, the
training job on the other core, as the demo runs them while the cap binds) and the demo's request at the rung the cap
forces (`--rung`, 5: 4 steps at 0.5x). At each power limit of the ladder the demo walks (full, 3.6 W and 2.6 W at the
default CPU power model) it sets the slot's limit, queues `--videos` requests at once and reads each video's
occupancy (claimed to completed: generation, watermark, encoding, signing, previews, the store's writes) from the
store. The first video of each batch is left out (its claim waits on the worker's poll).

It prints one JSON line: per limit the quota, the mean occupancy, `speed` (the full limit's mean occupancy over this
limit's) and `quota_loss_cores` = quota - speed, what of the quota does no video work: the worker's own threads
(the lease heartbeat, the liveness report) and whatever a throttled process loses, per second of wall time, which
a slower video pays for longer. Needs a writable CPU cgroup (root) and two logical CPUs.

2026-11-26, 2-core AMD EPYC VM, no GPU, quiet (1-min load 0.0-1.0), four runs of 12 videos per limit, two with the
training job on the other core and two without (no difference beyond the spread): full power 0.196-0.230 s a video;
3.6 W (quota 0.487) speed 0.470, 0.401, 0.439, 0.422; 2.6 W (quota 0.231) 0.237, 0.197, 0.229, 0.185. On average a
throttled worker runs at 0.9 of its quota, and one run's batch anywhere from 0.80 to 1.03 of it, with no loss in
cores common to both limits (0.017-0.087 at 3.6 W, -0.006-0.046 at 2.6 W). The planner keeps a slot's speed at its
quota: a 0.9 efficiency taken from these would put the demo replays' throttled videos 10% slower, and made 7 of 12
recorded runs worse (tests/planner/data: 2 of the 4 quiet ones and 5 of the 8 before them, by 2-11 points of
latency error; the other 5 better).

Usage: python benchmarks/cpu_quota_speed.py [--videos 12] [--rung 5] [--no-train]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine_facts
from garrison.governor.demo import DemoConfig, submit_burst
from garrison.governor.executors.local import LocalExecutor, wait_for
from garrison.hardware.cpu import CpuPowerModel
from garrison.hardware.devices import fleet_devices
from garrison.hardware.power_limit import CpuSlotLimiter
from garrison.store import open_store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--rung", type=int, default=5)
    ap.add_argument("--no-train", action="store_true", help="leave the training core idle")
    args = ap.parse_args()
    cfg = DemoConfig()
    devices = fleet_devices().devices
    if len(devices) < 2 or devices[0].kind != "cpu-core":
        raise SystemExit("needs two CPU core slots")
    training, serving = devices[0], devices[1]  # the demo's home pools: the first half trains
    power = CpuPowerModel.from_env()
    limiter = CpuSlotLimiter(power, owner=f"quota-bench-{int(time.time())}")
    if not limiter.available:
        raise SystemExit(f"no CPU cgroup: {limiter.reason}")
    work = Path(tempfile.mkdtemp(prefix="quota-bench-"))
    store_url = f"sqlite:///{work / 'garrison.db'}"
    store = open_store(store_url)
    tenant, _ = store.create_tenant("bench")
    store.set_setting("serving.quality_level", args.rung)
    executor = LocalExecutor(devices, store, store_url, work / "content", work / "run", cpu_limiter=limiter)
    span = power.active_w_per_core - power.idle_w_per_core
    limits = [power.active_w_per_core, power.active_w_per_core - 2.0, power.active_w_per_core - 3.0]
    results = {}
    n = 0
    try:
        if not args.no_train:
            command = [sys.executable, "-m", "garrison.cli.main", "train", "--steps", "100000",
                       "--batch-tokens", str(cfg.train_batch_tokens), "--seed", "0", "--out", str(work / "train"),
                       "--eval-limit", "0", "--json"]  # fmt: skip
            executor.start_training("bench-train", command, [training.id])
        executor.start_serving(serving.id)
        time.sleep(10.0)  # the worker loads its model, the training process starts
        for watts in limits:
            limiter.set(serving, watts)
            ids = submit_burst(store, tenant.id, cfg, args.videos + 1, n)  # the demo's own requests
            n += args.videos + 1

            def done(ids: list[str] = ids) -> bool:
                return all(store.get_video(i).completed_at is not None for i in ids)

            if not wait_for(done, 600, poll_s=1.0):
                raise SystemExit(f"the worker did not finish its videos at {watts} W")
            videos = sorted((store.get_video(i) for i in ids), key=lambda v: v.started_at)[1:]
            occupancy = [v.completed_at - v.started_at for v in videos]
            quota = min((watts - power.idle_w_per_core) / span, 1.0)
            results[f"{watts:g}"] = {
                "quota": round(quota, 4),
                "videos": len(occupancy),
                "occupancy_s_mean": round(statistics.fmean(occupancy), 4),
                "occupancy_s_median": round(statistics.median(occupancy), 4),
                "generation_s_mean": round(statistics.fmean(v.seconds_wall for v in videos), 4),
            }
        full = results[f"{limits[0]:g}"]["occupancy_s_mean"]
        for r in results.values():
            r["speed"] = round(full / r["occupancy_s_mean"], 4)
            r["quota_loss_cores"] = round(r["quota"] - r["speed"], 4) if r["quota"] < 1 else 0.0
        print(
            json.dumps(
                {
                    "benchmark": "cpu_quota_speed",
                    "request": {"seconds": cfg.video_seconds, "size": cfg.video_size, "steps": cfg.video_steps},
                    "rung": args.rung,
                    "training_on_other_core": not args.no_train,
                    "by_limit_w": results,
                    "machine": machine_facts(),
                }
            )
        )
    finally:
        executor.shutdown()
        limiter.close()
        store.close()


if __name__ == "__main__":
    main()

"""Figure: attributed joules sum to the measured total (target: within 1%) on a shared device.

A real shared-CPU run on this machine: three processes work at once for a few seconds,
- serve-0: a batch of three requests (torch matmuls of three sizes, FLOPs counted per request),
- serve-1: one more request alone,
- train: a small MLP training job,
while the meter `get_meter()` picks measures back-to-back ticks (`lap`) and one outer window over the whole run.
Each tick is attributed with garrison.energy.attribution: utilisation share across the processes (CPU-seconds from
/proc/PID/stat), FLOP share within the batch, idle power proportionally; busy time of other processes on the machine
goes to "(other)". Two checks, each against 1%:
- attributed joules, summed over all ticks, against the ticks' measured total (the rule must lose nothing);
- the ticks' measured total against the outer window (ticks must neither drop nor double-count energy).
Prints one JSON line.

Run: nice -n 19 python benchmarks/energy_attribution_sum.py [--seconds S] [--tick-s T]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import time

from garrison.energy.attribution import Consumer, Ledger, attribute_measurement
from garrison.energy.meters import EstimateMeter, get_meter
from garrison.hardware.cpu import CpuPowerModel, cpu_core_count, cpu_model_name, process_cpu_s

BATCH_SIZES = {"req:0a": 96, "req:0b": 128, "req:0c": 192}  # matrix size n per request: 2 n^3 FLOPs per matmul
SOLO_SIZE = {"req:1a": 160}


def serve(sizes: dict[str, int], flops: mp.Array, ready: mp.Event, stop: mp.Event) -> None:
    import torch

    torch.set_num_threads(1)
    mats = {name: (torch.randn(n, n), torch.randn(n, n)) for name, n in sizes.items()}
    ready.set()
    while not stop.is_set():
        for i, (name, (a, b)) in enumerate(mats.items()):  # one "denoising step" of each request in the batch
            torch.mm(a, b)
            n = sizes[name]
            with flops.get_lock():
                flops[i] += 2.0 * n**3


def train(ready: mp.Event, stop: mp.Event) -> None:
    import torch

    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
    ready.set()
    while not stop.is_set():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--tick-s", type=float, default=0.25)
    args = parser.parse_args()
    machine = f"{cpu_model_name()}, {cpu_core_count()} CPUs, no GPU; load average {os.getloadavg()[0]:.1f} at start"

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    batch_flops = ctx.Array("d", len(BATCH_SIZES))
    solo_flops = ctx.Array("d", len(SOLO_SIZE))
    readies = [ctx.Event() for _ in range(3)]
    procs = {
        "proc:serve-0": ctx.Process(target=serve, args=(BATCH_SIZES, batch_flops, readies[0], stop)),
        "proc:serve-1": ctx.Process(target=serve, args=(SOLO_SIZE, solo_flops, readies[1], stop)),
        "job:train": ctx.Process(target=train, args=(readies[2], stop)),
    }
    for p in procs.values():
        p.start()
    try:
        for ready in readies:
            if not ready.wait(120):
                raise SystemExit("a worker did not start within 120 s")

        meter = get_meter()
        # Idle power for attribution: the estimate's own idle term; for RAPL the same per-core assumption.
        power = meter.power if isinstance(meter, EstimateMeter) else CpuPowerModel.from_env()
        idle_w = {device_id: power.idle_w / len(meter.device_ids) for device_id in meter.device_ids}
        device_id = meter.device_ids[0]
        ledger = Ledger()

        def snapshot() -> tuple[dict[str, float], list[float], list[float]]:
            return {name: process_cpu_s(p.pid) for name, p in procs.items()}, list(batch_flops), list(solo_flops)

        meter.begin_window("run")
        meter.begin_window("tick")
        last = snapshot()
        ticks_measured_j = []

        def attribute(measurement) -> None:
            nonlocal last
            now = snapshot()
            busy = {name: now[0][name] - last[0][name] for name in procs}
            batch = {name: now[1][i] - last[1][i] for i, name in enumerate(BATCH_SIZES)}
            solo = {name: now[2][i] - last[2][i] for i, name in enumerate(SOLO_SIZE)}
            consumers = [
                Consumer("proc:serve-0", busy["proc:serve-0"], flops_by_request=batch),
                Consumer("proc:serve-1", busy["proc:serve-1"], flops_by_request=solo),
                Consumer("job:train", busy["job:train"]),
            ]
            ledger.add(attribute_measurement(measurement, {device_id: consumers}, idle_w))
            ticks_measured_j.append(measurement.joules)
            last = now

        deadline = time.perf_counter() + args.seconds
        while time.perf_counter() < deadline:
            time.sleep(args.tick_s)
            attribute(meter.lap("tick"))
        attribute(meter.end_window("tick"))  # the sliver since the last lap, so the ticks cover the whole run
        outer = meter.end_window("run")
        meter.close()
    finally:
        stop.set()
        for p in procs.values():
            p.join(10)

    ticks_total_j = math.fsum(ticks_measured_j)
    attributed_rel_err = ledger.rel_error
    ticks_vs_outer_rel_err = abs(ticks_total_j - outer.joules) / outer.joules
    print(
        json.dumps(
            {
                "figure": "energy_attribution_sum",
                "machine": machine,
                "meter": outer.source,
                "ticks": ledger.ticks,
                "tick_s": args.tick_s,
                "requests": len(BATCH_SIZES) + len(SOLO_SIZE),
                "measured_total_j": ledger.measured_j,
                "attributed_total_j": ledger.attributed_j,
                "attributed_vs_measured_rel_error": attributed_rel_err,
                "outer_window_j": outer.joules,
                "ticks_vs_outer_rel_error": ticks_vs_outer_rel_err,
                "joules_by_owner": {k: round(v, 4) for k, v in sorted(ledger.joules_by_owner.items())},
                "target_rel_error": 0.01,
                "pass": attributed_rel_err <= 0.01 and ticks_vs_outer_rel_err <= 0.01,
            }
        )
    )


if __name__ == "__main__":
    main()

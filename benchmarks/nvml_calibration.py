"""Figures: NVML on a real GPU. Energy counter against integrated power, the counter's update period, the power
limit's range and round trip, and joules per video of the built-in model (issue 3's GPU calibration).

Phases (`--phases`, comma-separated; each prints one JSON line, and all of them go to --out):

- `limit`: the power limit now, its default and its allowed range, read through garrison.hardware.power_limit.
  With `--set-same`, a set round trip that writes back the limit the card already has (the workplace forbids
  changing a lent card's settings, so no other value is written) and reads it again.
- `period`: reads the total-energy counter and the power reading in a tight loop for a few seconds under load and
  reports the median interval between changes of each: how fresh a reading can be.
- `windows`: a varying load (bf16 matrix products in bursts whose duty cycle changes every second) while
  garrison's NvmlMeter measures windows of 10, 20 and 30 s twice over: once from the energy counter, once by
  polling power every 10 ms and integrating (the path of GPUs with no counter). Reports both and their relative
  difference per window.
- `builtin`: joules per video of the built-in model on the GPU at a few settings, each the mean of several
  generations, with `efficiency_vs_limit` from energy_fields (analytic FLOPs over the chip's peak FLOP per joule).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from garrison.energy.meters import NvmlMeter, PynvmlSource
from garrison.hardware.devices import nvml_gpus
from garrison.hardware.power_limit import power_limit_info


def phase_limit(set_same: bool) -> dict[str, Any]:
    gpus, _ = nvml_gpus()
    out: dict[str, Any] = {"phase": "limit", "devices": []}
    for gpu in gpus:
        info = power_limit_info(gpu)
        row: dict[str, Any] = {"device": gpu.id, "name": gpu.name, **info.__dict__}
        if set_same and info.settable and info.current_w is not None:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(gpu.index)
            t0 = time.perf_counter()
            try:
                pynvml.nvmlDeviceSetPowerManagementLimit(handle, int(info.current_w * 1000))
                row["set_same_ok"] = True
            except pynvml.NVMLError as exc:
                row["set_same_ok"] = False
                row["set_same_error"] = str(exc)
            read_back = pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000
            row["set_round_trip_ms"] = round((time.perf_counter() - t0) * 1000, 3)
            row["read_back_w"] = read_back
            pynvml.nvmlShutdown()
        out["devices"].append(row)
    return out


class Load:
    """bf16 matrix products in bursts; the duty cycle changes every second (0.2 .. 1.0), so power moves."""

    def __init__(self, n: int = 8192) -> None:
        self.a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        self.b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        duties = [0.2, 1.0, 0.5, 0.8, 0.3, 1.0, 0.0, 0.6]
        k = 0
        while not self.stop.is_set():
            duty = duties[k % len(duties)]
            end = time.perf_counter() + 1.0
            while time.perf_counter() < end and not self.stop.is_set():
                busy_until = time.perf_counter() + 0.05 * duty
                while time.perf_counter() < busy_until:
                    torch.mm(self.a, self.b)
                    torch.cuda.synchronize()
                time.sleep(0.05 * (1 - duty))
            k += 1

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def phase_period(seconds: float) -> dict[str, Any]:
    source = PynvmlSource()
    changes: dict[str, list[float]] = {"energy": [], "power": []}
    last: dict[str, int | None] = {"energy": None, "power": None}
    reads = 0
    with Load():
        time.sleep(1.0)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            for key, value in (("energy", source.total_energy_mj(0)), ("power", source.power_mw(0))):
                if value != last[key]:
                    if last[key] is not None:
                        changes[key].append(t)
                    last[key] = value
            reads += 1
    source.close()

    def median_ms(ts: list[float]) -> float | None:
        gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
        return round(statistics.median(gaps) * 1000, 2) if gaps else None

    return {
        "phase": "period",
        "seconds": seconds,
        "reads": reads,
        "read_us": round(seconds / reads * 1e6 / 2, 1),
        "energy_counter_update_ms": median_ms(changes["energy"]),
        "power_reading_update_ms": median_ms(changes["power"]),
    }


def phase_windows(lengths_s: list[float]) -> dict[str, Any]:
    gpus, _ = nvml_gpus()
    counter = NvmlMeter(PynvmlSource(), gpus)
    polled = NvmlMeter(PynvmlSource(), gpus, poll_interval_s=0.01, force_polling=True)
    rows = []
    with Load():
        time.sleep(1.0)
        for i, length in enumerate(lengths_s):
            name = f"w{i}"
            counter.begin_window(name)
            polled.begin_window(name)
            time.sleep(length)
            mc, mp = counter.end_window(name), polled.end_window(name)
            rows.append(
                {
                    "seconds": round(mc.seconds, 3),
                    "counter_j": round(mc.joules, 1),
                    "integrated_j": round(mp.joules, 1),
                    "mean_w": round(mc.joules / mc.seconds, 1),
                    "rel_diff": round((mp.joules - mc.joules) / mc.joules, 5),
                }
            )
    counter.close()
    polled.close()
    return {"phase": "windows", "poll_interval_s": 0.01, "windows": rows}


def phase_builtin(repeats: int) -> dict[str, Any]:
    from garrison.core.types import VideoSpec
    from garrison.energy.meters import get_meter
    from garrison.energy.report import energy_fields
    from garrison.video.pipelines.builtin import DEFAULT_GUIDANCE, DEFAULT_STEPS, BuiltinPipeline

    pipeline = BuiltinPipeline.load(device="cuda")
    meter = get_meter()
    gpus, _ = nvml_gpus()
    settings = [
        (2, 64, 64, DEFAULT_STEPS),
        (4, 112, 64, DEFAULT_STEPS),
        (12, 112, 64, DEFAULT_STEPS),
        (4, 112, 64, DEFAULT_STEPS // 2),
    ]
    rows = []
    for seconds, w, h, steps in settings:
        spec = VideoSpec(
            prompt="a red cube moving right on a white background",
            seconds=seconds,
            width=w,
            height=h,
            steps=steps,
            guidance=DEFAULT_GUIDANCE,
            seed=0,
        )
        gen = pipeline(spec)  # warm-up
        torch.cuda.synchronize()
        meter.begin_window("batch")
        for i in range(repeats):
            pipeline(replace(spec, seed=i))
        torch.cuda.synchronize()
        m = meter.end_window("batch")
        # The whole batch against the batch's FLOPs: the same ratio as one video's
        fields = energy_fields(m, gen.flops * repeats, gpus[0])
        rows.append(
            {
                "seconds": seconds,
                "size": f"{w}x{h}",
                "steps": steps,
                "wall_s_per_video": round(m.seconds / repeats, 4),
                "joules_per_video": round(m.joules / repeats, 2),
                "mean_w": round(m.joules / m.seconds, 1),
                "flops": gen.flops,
                "efficiency_vs_limit": fields["efficiency_vs_limit"],
                "energy_source": m.source,
            }
        )
    meter.close()
    return {"phase": "builtin", "repeats": repeats, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", default="limit,period,windows,builtin")
    parser.add_argument("--set-same", action="store_true", help="write back the current power limit and re-read it")
    parser.add_argument("--period-s", type=float, default=5.0)
    parser.add_argument("--windows", default="10,20,30", help="window lengths in seconds")
    parser.add_argument("--repeats", type=int, default=10, help="generations per built-in setting")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("nvml_calibration needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    results = []
    for phase in args.phases.split(","):
        if phase == "limit":
            r = phase_limit(args.set_same)
        elif phase == "period":
            r = phase_period(args.period_s)
        elif phase == "windows":
            r = phase_windows([float(x) for x in args.windows.split(",")])
        elif phase == "builtin":
            r = phase_builtin(args.repeats)
        else:
            raise SystemExit(f"unknown phase {phase!r}: use limit, period, windows, builtin")
        r["date"] = datetime.now(UTC).isoformat(timespec="seconds")
        r["gpu"] = torch.cuda.get_device_name(0)
        print(json.dumps(r), flush=True)
        results.append(r)
    if args.out is not None:
        args.out.write_text("\n".join(json.dumps(r) for r in results) + "\n")


if __name__ == "__main__":
    main()

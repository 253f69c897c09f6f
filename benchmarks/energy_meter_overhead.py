"""Figure: metering overhead, milliseconds per begin_window/end_window pair (target: at most 1 ms on this CPU).

Measures the meter `get_meter()` picks on this machine, and, for comparison, the RAPL code path against a powercap
tree written to a temporary folder (real file reads, not the kernel's sysfs). Prints one JSON line.

Run: nice -n 19 python benchmarks/energy_meter_overhead.py [--windows N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from garrison.energy.meters import Meter, RaplMeter, get_meter
from garrison.hardware.cpu import cpu_core_count, cpu_model_name


def machine() -> str:
    return f"{cpu_model_name()}, {cpu_core_count()} CPUs, no GPU; load average {os.getloadavg()[0]:.1f} at start"


def per_window_ms(meter: Meter, windows: int) -> list[float]:
    samples = []
    for i in range(windows):
        name = f"w{i}"
        t0 = time.perf_counter()
        meter.begin_window(name)
        meter.end_window(name)
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered),
        "p99_ms": ordered[int(0.99 * (len(ordered) - 1))],
        "mean_ms": statistics.fmean(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=2000)
    args = parser.parse_args()
    load_at_start = machine()

    meter = get_meter()
    per_window_ms(meter, 50)  # warm-up: first reads open files and fill caches
    active = summary(per_window_ms(meter, args.windows))
    meter.close()

    with tempfile.TemporaryDirectory() as root:
        zone = Path(root) / "intel-rapl:0"
        zone.mkdir()
        (zone / "name").write_text("package-0\n")
        (zone / "energy_uj").write_text("123456789\n")
        (zone / "max_energy_range_uj").write_text("262143328850\n")
        rapl = RaplMeter.from_sysfs(Path(root), poll_interval_s=None)
        per_window_ms(rapl, 50)
        rapl_tree = summary(per_window_ms(rapl, args.windows))

    print(
        json.dumps(
            {
                "figure": "energy_meter_overhead",
                "machine": load_at_start,
                "meter": meter.source,
                "windows": args.windows,
                "ms_per_window": active["median_ms"],
                "ms_per_window_p99": active["p99_ms"],
                "ms_per_window_mean": active["mean_ms"],
                "target_ms": 1.0,
                "pass": active["median_ms"] <= 1.0,
                "rapl_written_tree_ms_per_window": rapl_tree["median_ms"],
                "rapl_written_tree_ms_per_window_p99": rapl_tree["p99_ms"],
            }
        )
    )


if __name__ == "__main__":
    main()

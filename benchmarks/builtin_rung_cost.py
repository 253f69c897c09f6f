"""What a quality rung saves on the built-in model: generation CPU-seconds of one clip at each rung of the ladder.

The planner scales a generation's time by the rung (core/fleet.py QUALITY_LADDER: fewer denoising steps, a smaller
native size). A step's cost is not all proportional to the pixels it denoises: on a CPU a step of this small model
also pays a fixed part (Python, the text conditioning, small-tensor overheads), so a 0.5x rung costs more than a
quarter of a full-size one. This script measures it: one process pinned to one logical CPU with one thread (as a
serving worker on a core slot), the demo's request (2 s, 64x64, 24 steps) generated at every rung `--repeats` times,
the process CPU time of the pipeline call (text encoding, denoising, decoding, upscaling) taken, so other programs on
the machine do not count. It fits

    seconds = fixed + steps x (per_step_overhead + per_step_pixel x native_scale^2)

and prints one JSON line: the medians, the fit, each rung's predicted and measured ratio to rung 0, and
`step_overhead_fraction` = per_step_overhead / (per_step_overhead + per_step_pixel), the share of a full-size step
that does not shrink with the native size (planner/profiles.py BUILTIN_STEP_OVERHEAD_FRACTION quotes it).

Usage: python benchmarks/builtin_rung_cost.py [--repeats 5] [--cpu 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics

import numpy as np
import torch

from _machine import machine_facts
from garrison.core.fleet import QUALITY_LADDER
from garrison.core.types import VideoSpec
from garrison.video.pipelines.builtin import BuiltinPipeline

REQUEST = {"seconds": 2, "width": 64, "height": 64, "steps": 24}  # the demo's request (governor/demo.py)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cpu", type=int, default=min(1, (os.cpu_count() or 1) - 1))
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    torch.set_num_threads(1)
    pipe = BuiltinPipeline.load()
    seconds: dict[int, list[float]] = {rung.level: [] for rung in QUALITY_LADDER}
    for repeat in range(args.repeats + 1):  # the first round warms up (first-call allocations) and is dropped
        for rung in QUALITY_LADDER:
            spec = VideoSpec(
                "a red circle moving right on a black background",
                seconds=REQUEST["seconds"],
                width=REQUEST["width"],
                height=REQUEST["height"],
                steps=rung.steps_for(REQUEST["steps"]),
                seed=repeat,
                native_scale=rung.native_scale,
            )
            start = cpu_s()
            pipe(spec)
            if repeat:
                seconds[rung.level].append(cpu_s() - start)
    median = {q: statistics.median(s) for q, s in seconds.items()}
    steps = np.array([rung.steps_for(REQUEST["steps"]) for rung in QUALITY_LADDER], dtype=float)
    scale2 = np.array([rung.native_scale**2 for rung in QUALITY_LADDER])
    design = np.stack([np.ones_like(steps), steps, steps * scale2], axis=1)
    (fixed, overhead, pixel), *_ = np.linalg.lstsq(design, np.array([median[q] for q in range(len(steps))]), rcond=None)
    fitted = design @ np.array([fixed, overhead, pixel])
    print(
        json.dumps(
            {
                "benchmark": "builtin_rung_cost",
                "request": REQUEST,
                "cpu_s_median_by_rung": {str(q): round(s, 4) for q, s in median.items()},
                "fit": {
                    "fixed_s": round(fixed, 4),
                    "per_step_overhead_s": round(overhead, 5),
                    "per_step_pixel_s": round(pixel, 5),
                },
                "step_overhead_fraction": round(overhead / (overhead + pixel), 3),
                "ratio_to_rung0_measured": {str(q): round(median[q] / median[0], 4) for q in median},
                "ratio_to_rung0_fitted": {str(q): round(float(fitted[q] / fitted[0]), 4) for q in median},
                "ratio_to_rung0_steps_x_pixels": {
                    str(q): round(float(steps[q] * scale2[q] / steps[0]), 4) for q in median
                },
                "repeats": args.repeats,
                "machine": machine_facts(),
            }
        )
    )


if __name__ == "__main__":
    main()

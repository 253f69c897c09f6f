"""Wall time of one generation at default settings: a 2 s square clip and a 4 s 16:9 clip.

Measured in-process with the shipped model loaded and warmed up (text encoding, the denoising loop and the
conversion to frames are inside the timing; process start-up and MP4 encoding are not). Median of --repeats.
`--precision bf16|fp32` overrides the default (bf16 only where the device runs it at least as fast as fp32).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from garrison.core.types import VideoSpec
from garrison.video.pipelines.builtin import DEFAULT_GUIDANCE, DEFAULT_STEPS, BuiltinPipeline

CASES = {
    "2s_square_64x64": VideoSpec("a red circle moving right on a black background", seconds=2, width=64, height=64),
    "4s_landscape_112x64": VideoSpec("a blue square moving up on a gray background", seconds=4, width=112, height=64),
}
TARGETS_S = {"2s_square_64x64": 2.0, "4s_landscape_112x64": 6.0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--precision", choices=("auto", "bf16", "fp32"), default="auto", help="auto: bf16 where it is fast"
    )
    args = parser.parse_args()
    pipe = BuiltinPipeline.load(bf16=None if args.precision == "auto" else args.precision == "bf16")
    result: dict[str, object] = {
        "benchmark": "generate_speed",
        "precision": "bf16" if pipe.bf16 else "fp32",
        "steps": DEFAULT_STEPS,
        "guidance": DEFAULT_GUIDANCE,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    for name, spec in CASES.items():
        pipe(spec)  # warm-up: first-call allocations and kernel selection
        walls = []
        for seed in range(args.repeats):
            t0 = time.perf_counter()
            pipe(VideoSpec(spec.prompt, spec.seconds, spec.width, spec.height, seed=seed))
            walls.append(time.perf_counter() - t0)
        result[f"{name}_wall_s"] = round(statistics.median(walls), 3)
        result[f"{name}_target_s"] = TARGETS_S[name]
        result[f"{name}_gflop"] = round(pipe.estimate_flops(spec) / 1e9, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

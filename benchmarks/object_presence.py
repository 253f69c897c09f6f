"""How often the built-in model draws an object at all, by sampler setting (the figure behind the 24-step, guidance-3
defaults). Prints one JSON line.

    python benchmarks/object_presence.py [--seeds 6]

Four template prompts x `--seeds` seeds, 2 s 64x64 clips. A clip "has an object" when, on average over its frames,
more than 20 pixels differ from the clip's median colour by more than 60 levels in some channel (the background is
the median: the object covers well under half of the frame).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from garrison.core.types import VideoSpec
from garrison.hardware.cpu import cpu_model_name
from garrison.video.pipelines.builtin import BuiltinPipeline

PROMPTS = (
    "a white circle moving down on a navy background",
    "a red triangle moving up on a black background",
    "a green square moving left on a white background",
    "a purple circle moving right on a gray background",
)
SETTINGS = ((12, 4.0), (24, 4.0), (12, 7.0), (24, 3.0))


def has_object(frames: np.ndarray) -> bool:
    f = frames.astype(np.float32)
    background = np.median(f.reshape(-1, 3), axis=0)
    far = np.abs(f - background).max(axis=-1) > 60
    return bool(far.sum(axis=(1, 2)).mean() > 20)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=6)
    args = ap.parse_args()
    pipeline = BuiltinPipeline.load()
    out: dict[str, object] = {"benchmark": "object_presence", "clips_per_setting": len(PROMPTS) * args.seeds}
    for steps, guidance in SETTINGS:
        present = [
            has_object(np.asarray(pipeline(VideoSpec(p, 2, 64, 64, steps, guidance, seed)).clip.frames))
            for p in PROMPTS
            for seed in range(args.seeds)
        ]
        out[f"steps{steps}_guidance{guidance:g}"] = round(float(np.mean(present)), 3)
    out["machine"] = f"{cpu_model_name()}, {os.cpu_count()} logical CPUs"
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Does the prompt decide shape and motion, or the noise? One seed, every shape x motion word, judged.

A model that ignores a word gives the same judged value for every prompt (the noise decides); one that follows it
gives the asked value. Prints one JSON line: shape and motion accuracy over the 12 prompts, and how many distinct
motions the judge saw.
"""

from __future__ import annotations

import argparse
import json

from garrison.core.types import VideoSpec
from garrison.video.evaluate.judge import judge_clip
from garrison.video.pipelines.builtin import DEFAULT_GUIDANCE, DEFAULT_STEPS, BuiltinPipeline


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped model)")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    pipeline = BuiltinPipeline.load(args.checkpoint)
    rows = []
    for shape in ("circle", "square", "triangle"):
        for motion in ("left", "right", "up", "down"):
            prompt = f"a red {shape} moving {motion} on a black background"
            spec = VideoSpec(prompt, 2, 64, 64, DEFAULT_STEPS, DEFAULT_GUIDANCE, args.seed)
            judged = judge_clip(pipeline(spec).clip.frames)
            rows.append((shape, motion, judged.shape, judged.motion))
    print(
        json.dumps(
            {
                "benchmark": "conditioning_probe",
                "checkpoint": args.checkpoint or "shipped",
                "seed": args.seed,
                "shape_follows_prompt": round(sum(s == js for s, _, js, _ in rows) / len(rows), 3),
                "motion_follows_prompt": round(sum(m == jm for _, m, _, jm in rows) / len(rows), 3),
                "distinct_motions_seen": len({jm for *_, jm in rows}),
                "judged": [f"{s} {m} -> {js} {jm}" for s, m, js, jm in rows],
            }
        )
    )


if __name__ == "__main__":
    main()

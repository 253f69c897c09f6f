"""Faithfulness of the shipped model on the public prompt sets (template, synonyms, paraphrases).

Every prompt is generated at default settings, cycling through every duration and aspect ratio, and judged by
the analytic detector. Prints one JSON line: all-four and per-attribute accuracy per set.
"""

from __future__ import annotations

import argparse
import json
import time

from garrison.video.pipelines.builtin import DEFAULT_GUIDANCE, DEFAULT_STEPS, BuiltinPipeline
from garrison.video.training.model_card import run_faithfulness


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None, help="prompts per set (default: all)")
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    t0 = time.perf_counter()
    report = run_faithfulness(BuiltinPipeline.load(args.checkpoint), args.limit, DEFAULT_STEPS, DEFAULT_GUIDANCE, 0)
    sets = {
        name: {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items() if not isinstance(v, dict)}
        for name, s in report["sets"].items()
    }
    print(
        json.dumps(
            {
                "benchmark": "faithfulness",
                "limit_per_set": args.limit,
                "sets": sets,
                "targets_all_four": {"template": 0.90, "paraphrases": 0.80},
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        )
    )


if __name__ == "__main__":
    main()

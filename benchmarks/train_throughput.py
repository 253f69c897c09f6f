"""Training throughput of the shipped recipe on this machine: seconds per step and the projected wall time.

Runs --steps optimizer steps of the default TrainConfig in a temporary folder (the first --warmup steps are
not timed) and projects the recipe's full step count. The shipped run's own measured wall time is in the model
card (src/garrison/video/weights/builtin/model_card.md). `--precision bf16|fp32` overrides the default (bf16
autocast only where the device runs it at least as fast as fp32). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from garrison.video.training.train import TrainConfig, machine_description, pick_device, train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precision", choices=("auto", "bf16", "fp32"), default="auto", help="auto: bf16 where it is fast"
    )
    args = parser.parse_args()
    bf16 = None if args.precision == "auto" else args.precision == "bf16"
    recipe = TrainConfig()
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(out_dir=tmp, steps=args.steps, device=args.device, checkpoint_every=10**9, bf16=bf16)
        summary = train(cfg, resume=False, on_step=lambda step, loss: stamps.append(time.perf_counter()))
    timed = stamps[args.warmup :]
    s_per_step = (timed[-1] - timed[0]) / (len(timed) - 1)
    device = pick_device(args.device)
    print(
        json.dumps(
            {
                "benchmark": "train_throughput",
                "machine": machine_description(device),
                "threads": torch.get_num_threads(),
                "bf16": summary["bf16"],
                "s_per_step": round(s_per_step, 3),
                "recipe_steps": recipe.steps,
                "projected_recipe_min": round(s_per_step * recipe.steps / 60, 1),
                "target_cpu_min": 150,
            }
        )
    )


if __name__ == "__main__":
    main()

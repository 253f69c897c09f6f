"""Training alone, naively co-located with serving, and governed, side by side in one run (issue 4's targets).

Runs `garrison demo`'s scenario (training alone, then governed: lend, reclaim, a power cap that binds) and then the
naive co-location (the same job and requests started together on the same devices, no governor). Prints one JSON
line: training throughput retention governed and naive, the lent device-time serving used, the share of control
periods over the cap, the worst overshoot, and the reclaim times. Usage: python benchmarks/governor_colocation.py
[--train-steps 40] [--first-burst 48] [--lend-wait-s 20] [--power-cap-w W] [--no-naive] [--out DIR]

Under the demo's cap, two busy cores are over the cap whoever runs on them, so a lent core can only be as busy as
the cap allows (`lent_capacity_used_fraction_of_allowed`); `--power-cap-w` above the fleet's full draw measures
lending alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from garrison.governor.demo import DemoConfig, run_demo, run_naive
from garrison.hardware.cpu import cpu_model_name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-steps", type=int, default=40)
    # The first burst outlasts the lend: training is submitted while serving still works on the borrowed device,
    # so the reclaim drains real work (a burst that ends early hands the device back after lend_idle_return_s).
    ap.add_argument("--first-burst", type=int, default=48)
    ap.add_argument("--lend-wait-s", type=float, default=20.0, help="how long serving runs on lent capacity")
    ap.add_argument("--second-burst", type=int, default=12)
    ap.add_argument("--power-cap-w", type=float, default=None, help="default: the demo's cap, which binds")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive co-location run")
    ap.add_argument("--out", type=Path, default=Path("bench-out/colocation"))
    args = ap.parse_args()
    cfg = DemoConfig(
        out_dir=args.out,
        first_burst=args.first_burst,
        second_burst=args.second_burst,
        train_steps=args.train_steps,
        lend_wait_s=args.lend_wait_s,
        # training is submitted after --lend-wait-s, not once a few videos are done (the demo's default): the
        # burst outlasts the lend, so the reclaim drains real work
        train_after_videos=args.first_burst,
        power_cap_w=args.power_cap_w,
    )
    governed = run_demo(cfg).summary
    naive = {"training_steps_per_s_naive": None} if args.no_naive else run_naive(cfg)
    alone = governed["training_steps_per_s_alone"]
    print(
        json.dumps(
            {
                "benchmark": "governor_colocation",
                "training_throughput_retention_governed": governed["training_throughput_retention"],
                "training_throughput_retention_naive": round(naive["training_steps_per_s_naive"] / alone, 4)
                if alone and naive["training_steps_per_s_naive"]
                else None,
                "lent_capacity_used_fraction": governed["lent_capacity_used_fraction"],
                "lent_capacity_used_fraction_of_allowed": governed["lent_capacity_used_fraction_of_allowed"],
                "power_over_cap_fraction": governed["power_over_cap_fraction"],
                "max_overshoot_fraction": governed["max_overshoot_fraction"],
                "reclaim_s": governed["reclaim_s"],
                "grace_period_s": governed["config"]["grace_period_s"],
                "control_period_s": governed["config"]["control_period_s"],
                "lost_requests": governed["lost_requests"],
                "joules_per_video": governed["joules_per_video"],
                "power_source": governed["power_source"],
                "governed": governed,
                "naive": naive,
                "machine": f"{cpu_model_name()}, {os.cpu_count()} logical CPUs, {platform.machine()}",
            }
        )
    )


if __name__ == "__main__":
    main()

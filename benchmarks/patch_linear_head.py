"""Can a linear head of rank `width` draw the shipped model's spacetime patches? PCA says.

Renders clips of the world, patchifies them at the shipped model's patch, fits PCA with as many components as the
model's width on two thirds of the patches, reconstructs the clips of the rest from their components and judges
them. Prints one JSON line: reconstruction PSNR and the judge's all-four accuracy on the reconstructed clips.
"""

from __future__ import annotations

import argparse
import json
import random

import numpy as np
import torch

from garrison.video.data.world import render, sample_params
from garrison.video.evaluate.judge import judge_clip, matches
from garrison.video.training.checkpoint import load_config, shipped_checkpoint_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=300)
    args = parser.parse_args()
    model = load_config(shipped_checkpoint_dir())["model"]
    pt, ph, rank = model["patch_t"], model["patch_hw"], model["width"]
    rng = random.Random(0)
    params = [sample_params(rng, 2, 64, 64) for _ in range(args.clips)]
    x = np.stack([render(p) for p in params]).astype(np.float32) / 127.5 - 1  # (B, T, H, W, 3)
    b, t, h, w, c = x.shape
    grid = (b, t // pt, pt, h // ph, ph, w // ph, ph, c)
    patches = x.reshape(grid).transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, pt * ph * ph * c)
    n_fit = (args.clips * 2 // 3) * (len(patches) // args.clips)
    fit = torch.from_numpy(patches[:n_fit])
    mean = fit.mean(0)
    _, _, v = torch.pca_lowrank(fit - mean, q=rank, center=False, niter=3)
    test = torch.from_numpy(patches[n_fit:])
    rec = ((test - mean) @ v @ v.T + mean).numpy()
    n_test = args.clips - args.clips * 2 // 3
    shape = (n_test, t // pt, h // ph, w // ph, pt, ph, ph, c)
    clips = rec.reshape(shape).transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(n_test, t, h, w, c)
    truth = x[args.clips * 2 // 3 :]
    psnr = 10 * np.log10(4 / np.mean((clips - truth) ** 2))
    right = 0
    for frames, p in zip(clips, params[args.clips * 2 // 3 :], strict=True):
        judged = judge_clip(((np.clip(frames, -1, 1) + 1) * 127.5).round().astype(np.uint8))
        right += matches(judged, {"color": p.color, "shape": p.shape, "motion": p.motion, "background": p.background})[
            "all"
        ]
    print(
        json.dumps(
            {
                "benchmark": "patch_linear_head",
                "patch": [pt, ph, ph],
                "patch_dim": pt * ph * ph * c,
                "rank": rank,
                "psnr_db": round(float(psnr), 1),
                "judge_all_four": round(right / n_test, 3),
                "clips_judged": n_test,
            }
        )
    )


if __name__ == "__main__":
    main()

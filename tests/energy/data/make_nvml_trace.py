"""Regenerate nvml_h100_wan13b.csv: a synthesized NVML trace shaped on an ML.ENERGY measurement.

Not a recording from a GPU (this repository's first sessions had none). The anchor is real: the ML.ENERGY Leaderboard
v3 row for Wan 2.1 1.3B, 480x832, 81 frames, 50 steps, batch 1, one H100 (shared/data/mlenergy_text_to_video.csv):
average power 678.2 W, 95.36 s per video, so 1.907 s per denoising step. Around it, this script builds a ground-truth
power curve on a 10 ms grid (idle 72 W, a 0.3 s ramp, per-step dips to 420 W for 0.15 s, Gaussian noise of 15 W,
the active phase rescaled so its mean is exactly 678.2 W) and samples it the way the meter reads NVML:

- every 100 ms a row per GPU: `power_mw` = mean power over the preceding 100 ms, `energy_mj` = floor of the energy
  integrated since a counter offset, as nvmlDeviceGetTotalEnergyConsumption reports it;
- GPU 0 has the energy counter; GPU 1 runs the same job 1 s later and has no counter (`energy_mj` empty), as a GPU
  whose driver answers NOT_SUPPORTED, so the meter must integrate its power.

Run: python tests/energy/data/make_nvml_trace.py (deterministic; seed 0).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

AVG_ACTIVE_W = 678.2  # ML.ENERGY v3, Wan 2.1 1.3B on one H100, batch 1
STEP_S = 95.357 / 50
IDLE_W = 72.0
GRID_S = 0.01
SAMPLE_S = 0.1
DURATION_S = 30.0
ACTIVE_START_S, ACTIVE_END_S = 3.0, 27.0
COUNTER_OFFSET_MJ = 1_234_567_890


def ground_truth(shift_s: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(0, DURATION_S, GRID_S)
    p = np.full_like(t, IDLE_W)
    start, end = ACTIVE_START_S + shift_s, ACTIVE_END_S + shift_s
    active = (t >= start - 1e-9) & (t < end - 1e-9)
    phase = (t - start) % STEP_S
    p[active] = np.where(phase[active] < 0.15, 420.0, 700.0)
    ramp = active & (t < start + 0.3)
    p[ramp] = IDLE_W + (700.0 - IDLE_W) * (t[ramp] - start) / 0.3
    p[active] += rng.normal(0.0, 15.0, active.sum())
    p[active] *= AVG_ACTIVE_W / p[active].mean()
    p[~active] += rng.normal(0.0, 1.0, (~active).sum())
    return p


def main() -> None:
    rng = np.random.default_rng(0)
    per_sample = round(SAMPLE_S / GRID_S)
    rows = []
    for gpu, shift_s, has_counter in ((0, 0.0, True), (1, 1.0, False)):
        p = ground_truth(shift_s, rng)
        cum_j = np.concatenate([[0.0], np.cumsum(p * GRID_S)])
        for k in range(1, round(DURATION_S / SAMPLE_S) + 1):
            i = k * per_sample
            power_mw = round(p[i - per_sample : i].mean() * 1000)
            energy_mj = str(COUNTER_OFFSET_MJ + int(cum_j[i] * 1000)) if has_counter else ""
            rows.append((round(k * SAMPLE_S, 3), gpu, power_mw, energy_mj))
    rows.sort()
    out = Path(__file__).with_name("nvml_h100_wan13b.csv")
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["time_s", "gpu", "power_mw", "energy_mj"])
        writer.writerows(rows)


if __name__ == "__main__":
    main()

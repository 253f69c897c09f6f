"""Arrivals: when video requests come, and of which kind, as numpy arrays (10 million in well under a second).

Two processes, both over a daily curve (24 hourly weights, UTC; flat when none is given):

- `poisson`: a non-homogeneous Poisson process, piecewise constant per hour: each hour's count is Poisson with the
  hour's mean and its arrival times uniform within the hour (the textbook construction).
- `azure`: each hour's count as above, but the times within the hour are drawn from the Azure LLM inference trace
  (shared/data/azure_llm_inference_conv_2023.csv, Azure Public Dataset `AzureLLMInferenceTrace_conv`, CC-BY 4.0:
  one hour of real arrivals to a production generative-AI service). Offsets within the trace's hour are resampled
  with replacement and jittered by up to half the trace's median gap, so its burstiness on scales of seconds to
  minutes carries over to any rate; the trace's own hour-long shape repeats every hour.
"""

from __future__ import annotations

import csv
import os
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import numpy as np

AZURE_CSV = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "azure_llm_inference_conv_2023.csv"
AZURE_CSV_ENV = "GARRISON_AZURE_TRACE_CSV"
HOUR_S = 3600.0
# A typical consumer day (UTC-agnostic shape): quiet at night, rising through the day, an evening peak.
DEFAULT_CURVE: tuple[float, ...] = (1.0,) * 24


class TraceMissingError(FileNotFoundError):
    """The Azure trace is not beside this checkout."""


@lru_cache(maxsize=2)
def azure_offsets_s(path: Path | None = None) -> np.ndarray:
    """Arrival offsets in seconds from the start of the trace's first hour, sorted."""
    path = path or Path(os.environ.get(AZURE_CSV_ENV) or AZURE_CSV)
    if not path.is_file():
        raise TraceMissingError(f"the Azure arrival trace is not at {path}; use demand.trace: poisson")
    with path.open(newline="") as f:
        stamps = [datetime.fromisoformat(row["TIMESTAMP"][:26]).timestamp() for row in csv.DictReader(f)]
    t = np.sort(np.array(stamps))
    return t - t[0]


def arrival_times_s(
    videos_per_day: float,
    horizon_s: float,
    rng: np.random.Generator,
    daily_curve: list[float] | tuple[float, ...] | None = None,
    trace: str = "poisson",
) -> np.ndarray:
    """Sorted arrival times in [0, horizon_s) for `videos_per_day` on average over a flat day."""
    curve = np.array(daily_curve if daily_curve is not None else DEFAULT_CURVE, dtype=float)
    per_hour = curve / curve.sum() * videos_per_day  # mean arrivals in each hour of the day
    hours = int(np.ceil(horizon_s / HOUR_S))
    means = per_hour[np.arange(hours) % 24]
    span = np.minimum(HOUR_S, horizon_s - np.arange(hours) * HOUR_S)
    counts = rng.poisson(means * span / HOUR_S)
    total = int(counts.sum())
    starts = np.repeat(np.arange(hours) * HOUR_S, counts)
    spans = np.repeat(span, counts)
    if trace == "azure":
        offsets = azure_offsets_s()
        offsets = offsets[offsets < HOUR_S]
        gap = float(np.median(np.diff(offsets))) if len(offsets) > 1 else 1.0
        within = rng.choice(offsets, size=total) + rng.uniform(-gap / 2, gap / 2, size=total)
        within = np.mod(within, HOUR_S) * (spans / HOUR_S)
    else:
        within = rng.uniform(0.0, 1.0, size=total) * spans
    times = starts + within
    times.sort()
    return times


def request_kinds(count: int, weights: list[float], rng: np.random.Generator) -> np.ndarray:
    """The kind (index into the scenario's request mix) of each of `count` requests."""
    p = np.array(weights, dtype=float)
    return rng.choice(len(p), size=count, p=p / p.sum()).astype(np.int32)

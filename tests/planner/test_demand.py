"""Arrivals: the daily curve's counts, and the Azure trace's burstiness carried over."""

from __future__ import annotations

import numpy as np
import pytest

from garrison.planner.demand import AZURE_CSV, arrival_times_s, request_kinds


def test_poisson_follows_the_daily_curve():
    rng = np.random.default_rng(0)
    curve = [1.0] * 12 + [3.0] * 12
    t = arrival_times_s(240_000, 86400, rng, curve)
    assert np.all(np.diff(t) >= 0) and t.min() >= 0 and t.max() < 86400
    first, second = np.sum(t < 43200), np.sum(t >= 43200)
    assert len(t) == pytest.approx(240_000, rel=0.01)
    assert second / first == pytest.approx(3.0, rel=0.03)
    # Within an hour, Poisson: the coefficient of variation of the gaps is about 1.
    gaps = np.diff(t[t < 3600])
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.1)


def test_azure_trace_is_burstier_than_poisson(skip_without_shared):
    if not AZURE_CSV.is_file():
        skip_without_shared(AZURE_CSV, "the Azure arrival trace")
    rng = np.random.default_rng(1)
    t = arrival_times_s(24 * 10_000, 6 * 3600, rng, trace="azure")
    assert len(t) == pytest.approx(60_000, rel=0.02)
    counts = np.bincount((t // 10).astype(int))  # arrivals per 10 s
    dispersion = counts.var() / counts.mean()  # 1 for Poisson
    print(f"Azure-shaped arrivals: index of dispersion per 10 s = {dispersion:.2f} (Poisson: 1)")
    assert dispersion > 1.5


def test_request_kinds_follow_weights():
    kinds = request_kinds(100_000, [3, 1], np.random.default_rng(2))
    assert np.mean(kinds == 0) == pytest.approx(0.75, abs=0.01)

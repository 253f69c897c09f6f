"""governor.cost: a request's device-seconds and joules from its FLOPs and a calibrated device profile."""

from __future__ import annotations

import math

import numpy as np
import pytest

from garrison.core.fleet import Cost
from garrison.governor.cost import DeviceProfile, Sample, calibrate_profile, estimate_cost


def test_estimate_is_overhead_plus_flops_over_rate_at_busy_power():
    profile = DeviceProfile(effective_flops_per_s=2e11, busy_power_w=150.0, overhead_s=0.3)
    cost = estimate_cost(8.36e10, profile)
    assert isinstance(cost, Cost)
    assert cost.device_s == pytest.approx(0.3 + 8.36e10 / 2e11)
    assert cost.joules == pytest.approx(cost.device_s * 150.0)
    assert cost.flops == 8.36e10


@pytest.mark.parametrize("flops", [-1.0, math.nan, math.inf])
def test_bad_flops_are_refused(flops):
    with pytest.raises(ValueError, match="flops must be a finite number >= 0"):
        estimate_cost(flops, DeviceProfile(1e12, 100.0))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"effective_flops_per_s": 0.0, "busy_power_w": 100.0}, "effective_flops_per_s"),
        ({"effective_flops_per_s": 1e12, "busy_power_w": -5.0}, "busy_power_w"),
        ({"effective_flops_per_s": 1e12, "busy_power_w": 5.0, "overhead_s": math.nan}, "overhead_s"),
    ],
)
def test_bad_profiles_are_refused(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DeviceProfile(**kwargs)


def test_calibration_recovers_rate_overhead_and_power_from_noisy_measurements():
    rng = np.random.default_rng(0)
    rate, overhead_s, power_w = 3e11, 0.4, 120.0
    samples = []
    for flops in rng.uniform(5e10, 1e12, size=40):
        seconds = (overhead_s + flops / rate) * rng.normal(1.0, 0.02)
        samples.append(Sample(float(flops), float(seconds), float(seconds * power_w * rng.normal(1.0, 0.02))))
    profile = calibrate_profile(samples)
    assert profile.effective_flops_per_s == pytest.approx(rate, rel=0.05)
    assert profile.overhead_s == pytest.approx(overhead_s, abs=0.1)
    assert profile.busy_power_w == pytest.approx(power_w, rel=0.02)


def test_calibration_from_one_size_fits_the_rate_alone():
    profile = calibrate_profile([Sample(1e11, 2.0, 200.0), Sample(1e11, 2.2, 220.0)])
    assert profile.overhead_s == 0.0
    assert profile.effective_flops_per_s == pytest.approx(2e11 / 4.2)
    assert profile.busy_power_w == pytest.approx(100.0)


def test_calibration_needs_valid_samples():
    with pytest.raises(ValueError, match="at least one"):
        calibrate_profile([])
    with pytest.raises(ValueError, match="sample seconds"):
        calibrate_profile([Sample(1e11, 0.0, 1.0)])

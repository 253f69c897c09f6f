"""What a request will cost before it runs: device-seconds and joules from its analytic FLOPs and a calibrated
device profile.

The pipeline computes a request's FLOPs (video/pipelines; the governor only receives the number). A `DeviceProfile`
says how fast and how hungry one device is on this workload: effective FLOP/s (not the datasheet peak: what the
pipeline achieves), a fixed per-request overhead (text encoding, decode, MP4 encode) and busy power. `calibrate_profile`
fits one from measured generations by least squares (numpy), so the estimate tracks the machine it runs on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from garrison.core.fleet import Cost


def _positive(name: str, value: float, allow_zero: bool = False) -> float:
    ok = isinstance(value, int | float) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class DeviceProfile:
    """One device's measured behaviour on the serving workload.

    Attributes:
        effective_flops_per_s: FLOP/s the pipeline achieves on this device.
        busy_power_w: the device's power while it generates.
        overhead_s: fixed seconds per request beyond the FLOPs (encoding, I/O).
    """

    effective_flops_per_s: float
    busy_power_w: float
    overhead_s: float = 0.0

    def __post_init__(self) -> None:
        _positive("effective_flops_per_s", self.effective_flops_per_s)
        _positive("busy_power_w", self.busy_power_w, allow_zero=True)
        _positive("overhead_s", self.overhead_s, allow_zero=True)


@dataclass(frozen=True)
class Sample:
    """One measured generation: its analytic FLOPs, wall seconds on one device, and measured joules."""

    flops: float
    seconds: float
    joules: float


def estimate_cost(flops: float, profile: DeviceProfile) -> Cost:
    """Predict one request's cost on one device of `profile`.

    Args:
        flops: the request's analytic FLOPs at the quality rung it will run at.
        profile: the device's calibrated profile.

    Returns:
        Cost(device_s, joules, flops).

    Raises:
        ValueError: FLOPs negative, NaN or infinite.
    """
    flops = _positive("flops", flops, allow_zero=True)
    device_s = profile.overhead_s + flops / profile.effective_flops_per_s
    return Cost(device_s=device_s, joules=device_s * profile.busy_power_w, flops=flops)


def calibrate_profile(samples: Sequence[Sample]) -> DeviceProfile:
    """Fit a DeviceProfile to measured generations.

    seconds = overhead_s + flops / effective_flops_per_s by least squares (with overhead clipped at 0; one sample or
    samples of one size fit the rate alone), and busy power = total joules / total seconds.

    Raises:
        ValueError: no samples, or samples that are not finite and positive.
    """
    if not samples:
        raise ValueError("calibrate_profile needs at least one measured generation")
    flops = np.array([_positive("sample flops", s.flops) for s in samples])
    seconds = np.array([_positive("sample seconds", s.seconds) for s in samples])
    joules = np.array([_positive("sample joules", s.joules, allow_zero=True) for s in samples])
    overhead_s, slope = 0.0, float(seconds.sum() / flops.sum())
    if len(samples) >= 2 and np.ptp(flops) > 0:
        design = np.stack([np.ones_like(flops), flops], axis=1)
        (intercept, fitted_slope), *_ = np.linalg.lstsq(design, seconds, rcond=None)
        if intercept >= 0 and fitted_slope > 0:
            overhead_s, slope = float(intercept), float(fitted_slope)
    return DeviceProfile(
        effective_flops_per_s=1.0 / slope, busy_power_w=float(joules.sum() / seconds.sum()), overhead_s=overhead_s
    )

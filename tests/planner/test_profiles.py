"""Cost profiles: the ML.ENERGY fits reproduce their own measurements, scale as stated, and say their errors."""

from __future__ import annotations

import csv
import math

import pytest

from garrison.planner.profiles import (
    MODEL_KEYS,
    CostProfile,
    ProfileError,
    builtin_from_docs,
    calibrate_builtin,
    fit_errors,
    load_mlenergy,
    mlenergy_csv_path,
)


@pytest.fixture
def measured(skip_without_shared):
    if not mlenergy_csv_path().is_file():
        skip_without_shared(mlenergy_csv_path(), "the ML.ENERGY text-to-video table")
    return load_mlenergy()


def test_single_gpu_rows_are_predicted_within_a_few_percent(measured):
    profile = CostProfile()
    rows = [
        r
        for r in csv.DictReader(mlenergy_csv_path().open())
        if r["num_gpus"] == "1" and r["gpu_model"] in ("H100", "B200")
    ]
    assert len(rows) > 30
    errors = []
    for r in rows:
        chip = "h100-sxm" if r["gpu_model"] == "H100" else "b200"
        p = profile.predict(MODEL_KEYS[r["nickname"]], chip, int(r["batch_size"]))
        errors.append(abs(p.seconds - float(r["batch_latency_s"])) / float(r["batch_latency_s"]))
    print(
        f"batch latency, {len(errors)} single-GPU runs: mean error {sum(errors) / len(errors):.2%}, max {max(errors):.2%}"
    )
    assert max(errors) < 0.1


def test_scaling_in_steps_size_and_chip(measured):
    profile = CostProfile()
    base = profile.predict("wan2.1-1.3b", "h100-sxm")
    half_steps = profile.predict("wan2.1-1.3b", "h100-sxm", steps=25)
    assert half_steps.seconds == pytest.approx(base.seconds / 2, rel=0.05)
    assert half_steps.joules == pytest.approx(base.joules / 2)
    # A chip without measurements of this model: scaled from H100 by the catalog's FLOP/s and FLOP/J.
    h200 = profile.predict("wan2.1-1.3b", "h200-sxm")
    assert "scaled from h100-sxm" in h200.basis
    errors = fit_errors()
    print(f"stated errors: {errors}")
    assert errors["batch_fit_loo_mean_rel_error"] < 0.05
    assert math.isfinite(errors["cross_chip_time_mean_rel_error"])


def test_unknown_model_and_chip_and_bad_sizes():
    profile = CostProfile()
    with pytest.raises(ProfileError, match="no measurements for model 'sora'"):
        profile.predict("sora", "h100-sxm")
    with pytest.raises(ProfileError, match="unknown chip 'h999'"):
        profile.predict("builtin", "h999")
    with pytest.raises(ProfileError, match="steps must be > 0"):
        profile.predict("builtin", "cpu-core", steps=-1)


def test_builtin_from_docs_and_recalibration():
    docs = builtin_from_docs()
    profile = CostProfile(points=(docs,))
    from garrison.planner import profiles as profiles_module

    slot_s = profiles_module._BUILTIN_POINTS[0][1]  # the measured 2 s 64x64 clip, on one core slot
    assert profile.predict("builtin", "cpu-core", 1, 64, 64, 16, 12).seconds == pytest.approx(slot_s)
    fitted = calibrate_builtin([(64 * 64 * 16 * 12, 2.0), (64 * 64 * 16 * 6, 1.2)], 5.6, "test")
    again = CostProfile(points=(fitted,))
    assert again.predict("builtin", "cpu-core", 1, 64, 64, 16, 12).seconds == pytest.approx(2.0)
    assert again.predict("builtin", "cpu-core", 1, 64, 64, 16, 6).seconds == pytest.approx(1.2)
    with pytest.raises(ProfileError):
        calibrate_builtin([], 5.6, "none")


def test_the_fixed_part_of_a_prediction_is_the_points_overhead():
    # 2.0 s at 12 steps, 1.2 s at 6 steps: 0.4 s fixed per request, 0.8 s per 6 steps.
    fitted = calibrate_builtin([(64 * 64 * 16 * 12, 2.0), (64 * 64 * 16 * 6, 1.2)], 5.6, "test")
    profile = CostProfile(points=(fitted,))
    at_12 = profile.predict("builtin", "cpu-core", 1, 64, 64, 16, 12)
    at_3 = profile.predict("builtin", "cpu-core", 1, 64, 64, 16, 3)
    assert at_12.fixed_s == pytest.approx(0.4)
    assert at_3.fixed_s == pytest.approx(0.4)  # fewer steps do not shorten it
    assert at_3.seconds == pytest.approx(0.4 + 0.4)


def test_a_step_of_the_builtin_model_keeps_a_fixed_share_at_a_smaller_native_size():
    """benchmarks/builtin_rung_cost.py: a 64x64 step is 43% fixed cost, so the 0.5x rung keeps far more than a
    quarter of a step; with it the docs' two clips agree (the 4 s 112x64 clip predicted from the 2 s 64x64 one)."""
    from garrison.core.fleet import QUALITY_LADDER
    from garrison.planner.profiles import BUILTIN_STEP_OVERHEAD_FRACTION

    profile = CostProfile(points=(builtin_from_docs(),))
    f = BUILTIN_STEP_OVERHEAD_FRACTION
    assert 0.3 < f < 0.6
    top = profile.rung_factor("builtin", "cpu-core", 64, 64, 16, 24, 5)
    assert top == pytest.approx(4 / 24 * (f + (1 - f) * 0.25))
    steps_only = profile.rung_factor("builtin", "cpu-core", 64, 64, 16, 24, 3)  # 4 steps at full size
    assert steps_only == pytest.approx(4 / 24)
    assert top > QUALITY_LADDER[5].steps_for(24) / 24 * QUALITY_LADDER[5].native_scale ** 2
    # docs/measurements.md: 4 s 112x64 in 0.68 s on two threads, 1.36 s on one core slot
    longer = profile.predict("builtin", "cpu-core", 1, 112, 64, 32, 12).seconds
    assert abs(longer - 1.36) / 1.36 < 0.10
    # points without the share (the ML.ENERGY GPU fits, a calibration that gives none) scale with pixels x steps
    plain = CostProfile(points=(calibrate_builtin([(64 * 64 * 16 * 12, 2.0)], 5.6, "test"),))
    assert plain.rung_factor("builtin", "cpu-core", 64, 64, 16, 24, 5) == pytest.approx(4 / 24 * 0.25)


def test_builtin_on_an_h100_is_its_measured_runs_and_does_not_scale_with_clip_size():
    from garrison.planner.profiles import BUILTIN_H100_RUNS

    profile = CostProfile()
    for (seconds, width, height, steps), (measured_s, measured_j) in BUILTIN_H100_RUNS.items():
        frames = profile.frames_for("builtin", seconds)
        p = profile.predict("builtin", "h100-sxm", 1, width, height, frames, steps)
        assert p.basis == "measured on h100-sxm"
        assert p.seconds == pytest.approx(measured_s, rel=0.07)  # the worst of the four is 6.5% over
        assert p.joules == pytest.approx(measured_j, rel=0.07)
    small = profile.predict("builtin", "h100-sxm", 1, 64, 64, 16, 24)
    large = profile.predict("builtin", "h100-sxm", 1, 112, 64, 96, 24)
    assert small.seconds == pytest.approx(large.seconds)  # launch-bound: a step costs the same at any size


def test_wan_as_garrison_serves_it_on_an_h100_is_its_own_measurement_beside_ml_energy():
    from garrison.planner.profiles import GARRISON_WAN_H100, GARRISON_WAN_MODEL

    profile = CostProfile()
    ours = profile.predict(GARRISON_WAN_MODEL, "h100-sxm", 1, 832, 480, 81, 50)
    assert ours.basis == "measured on h100-sxm"
    assert ours.seconds == pytest.approx(GARRISON_WAN_H100["seconds"])
    assert ours.joules == pytest.approx(GARRISON_WAN_H100["joules"])
    assert profile.frames_for(GARRISON_WAN_MODEL, 5.0) == 80  # Wan's 16 fps
    half_steps = profile.predict(GARRISON_WAN_MODEL, "h100-sxm", 1, 832, 480, 81, 25)
    assert half_steps.seconds == pytest.approx(ours.seconds / 2)

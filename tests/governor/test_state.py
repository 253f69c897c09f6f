"""governor.state: configuration checks, the ladder's service times, memory that survives a restart, actions."""

from __future__ import annotations

import json
import math

import pytest

from garrison.governor.state import (
    ControlMemory,
    DeviceState,
    GovernorConfig,
    GovernorConfigError,
    InFlight,
    Reclaim,
    ServingState,
    SetQuality,
    relative_cost,
    reporting,
    serving_demand_device_s_per_s,
)


def fleet(n_training: int = 2, n_serving: int = 2, idle_w: float = 50.0) -> list[DeviceState]:
    devices = [DeviceState(f"t{i}", "training", idle_power_w=idle_w, busy_power_w=300.0) for i in range(n_training)]
    devices += [DeviceState(f"s{i}", "serving", idle_power_w=idle_w, busy_power_w=300.0) for i in range(n_serving)]
    return devices


def test_a_sound_config_passes():
    GovernorConfig(power_cap_w=1000.0, training_guarantee=2, serving_floor=2, lending_limit=1).validate(fleet())


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (GovernorConfig(power_cap_w=-1.0), "power_cap_w must be a positive number"),
        (GovernorConfig(power_cap_w=math.nan), "power_cap_w must be a positive number"),
        (GovernorConfig(power_cap_w=1000.0, training_guarantee=-1), "training_guarantee must be a whole number >= 0"),
        (GovernorConfig(power_cap_w=1000.0, lending_limit=-2), "lending_limit must be a whole number >= 0"),
        (GovernorConfig(power_cap_w=1000.0, high_watermark=0.8, low_watermark=0.9), "0 < low < high <= 1"),
        (GovernorConfig(power_cap_w=1000.0, grace_period_s=-1.0), "grace_period_s must be >= 0"),
        (GovernorConfig(power_cap_w=1000.0, control_period_s=0.0), "control_period_s must be a positive number"),
        (GovernorConfig(power_cap_w=1000.0, max_concurrency=0), "max_concurrency must be a whole number >= 1"),
        (GovernorConfig(power_cap_w=1000.0, training_guarantee=3, serving_floor=2), "more than the fleet's 4"),
        (GovernorConfig(power_cap_w=1000.0, training_guarantee=3), "only 2 devices have home_pool='training'"),
        (GovernorConfig(power_cap_w=1000.0, serving_floor=3), "only 2 devices have home_pool='serving'"),
        (GovernorConfig(power_cap_w=200.0), "the fleet draws 200 W idle"),
    ],
)
def test_bad_configs_say_what_to_change(config, message):
    with pytest.raises(GovernorConfigError, match="invalid governor configuration") as caught:
        config.validate(fleet())
    assert message in str(caught.value)


def test_cap_below_idle_draw_names_the_cap_that_would_work():
    with pytest.raises(GovernorConfigError) as caught:
        GovernorConfig(power_cap_w=220.0).validate(fleet())
    assert "raise the cap above 235 W" in str(caught.value)  # 200 W idle / 0.85 low watermark


def test_duplicate_device_ids_are_refused():
    devices = fleet() + [DeviceState("t0", "training")]
    with pytest.raises(GovernorConfigError, match="device ids must be unique"):
        GovernorConfig(power_cap_w=5000.0).validate(devices)


def test_every_problem_is_reported_at_once():
    with pytest.raises(GovernorConfigError) as caught:
        GovernorConfig(power_cap_w=-5.0, serving_floor=-1, slo_s=0.0).validate()
    text = str(caught.value)
    assert "power_cap_w" in text and "serving_floor" in text and "slo_s" in text


def test_service_time_scales_an_unmeasured_rung_from_the_nearest_measured_one():
    serving = ServingState(service_device_s_by_level=(6.0, 0.0, math.nan))
    assert serving.service_device_s(0) == 6.0
    # Rung 1 keeps 8 of 12 steps: two thirds of rung 0's time.
    assert serving.service_device_s(1) == pytest.approx(4.0)
    # Rung 5 keeps 4 of 12 steps at half the side: a twelfth.
    assert serving.service_device_s(5) == pytest.approx(6.0 * (4 / 12) * 0.25)
    assert relative_cost(5) == pytest.approx(1 / 12)
    assert ServingState().service_device_s(0) is None


def test_demand_counts_arrivals_and_the_queue_drained_within_the_slo():
    serving = ServingState(arrival_rate_per_s=0.5, queued_device_s=30.0, service_device_s_by_level=(4.0,))
    assert serving_demand_device_s_per_s(serving, slo_s=60.0) == pytest.approx(0.5 * 4.0 + 30.0 / 60.0)
    # At rung 3 (4 of 12 steps) both the arrivals and the queue cost a third.
    assert serving_demand_device_s_per_s(serving, slo_s=60.0, level=3) == pytest.approx((2.0 + 0.5) / 3)
    nonsense = ServingState(arrival_rate_per_s=math.nan, queued_device_s=-3.0, service_device_s_by_level=(4.0,))
    assert serving_demand_device_s_per_s(nonsense, slo_s=60.0) == 0.0


def test_memory_round_trips_through_json():
    memory = ControlMemory(
        periods_below_low=2,
        periods_above_cap=1,
        periods=40,
        last_reading_w=812.5,
        settle_until_s=math.inf * -1,
        expected_power_w=790.0,
        rungs=("down:quality", "up:quality"),
        alerted=("cap_exhausted",),
    )
    restored = ControlMemory.from_dict(json.loads(json.dumps(memory.to_dict())))
    assert restored == memory
    later = ControlMemory(settle_until_s=105.0)
    assert ControlMemory.from_dict(json.loads(json.dumps(later.to_dict()))) == later
    assert ControlMemory.from_dict(None) == ControlMemory()
    assert ControlMemory.from_dict({"periods": 3, "unknown_key": 1}).periods == 3


def test_in_flight_work_and_device_helpers():
    device = DeviceState(
        "t0",
        "training",
        assignment="serving",
        in_flight=(InFlight("a", 0.5, 10.0), InFlight("b", 2.0, 4.0), InFlight("c", math.nan, 3.0)),
        power_limit_settable=True,
        min_power_limit_w=100.0,
        max_power_limit_w=300.0,
    )
    assert device.lent
    assert device.lost_work_s == pytest.approx(5.0 + 4.0 + 0.0)  # progress clipped to 1, NaN counts as none
    assert device.can_limit and device.current_limit_w == 300.0
    assert not DeviceState("x", "serving", power_limit_settable=True).can_limit  # no range known


def test_reporting_needs_a_recent_report_from_a_healthy_device():
    assert reporting(DeviceState("a", "serving", last_report_s=95.0), 100.0, 10.0)
    assert not reporting(DeviceState("a", "serving", last_report_s=80.0), 100.0, 10.0)
    assert not reporting(DeviceState("a", "serving", last_report_s=None), 100.0, 10.0)
    assert not reporting(DeviceState("a", "serving", last_report_s=99.0, healthy=False), 100.0, 10.0)


def test_actions_serialize_with_their_kind():
    action = Reclaim("t0", "job-1", 12.5, reason="training needs it", reading={"now_s": 7.5})
    assert action.to_dict() == {
        "kind": "reclaim",
        "device_id": "t0",
        "job_id": "job-1",
        "deadline_s": 12.5,
        "reason": "training needs it",
        "reading": {"now_s": 7.5},
    }
    assert SetQuality(2).kind == "set_quality"
    json.dumps(SetQuality(2, reading={"fleet_power_w": 900.0}).to_dict())

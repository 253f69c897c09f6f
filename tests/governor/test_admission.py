"""governor.admission: admit, or refuse with a reason and a retry-after."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from garrison.core.fleet import Cost
from garrison.governor.admission import TenantBudget, admit, predicted_wait_s, seconds_to_next_utc_day
from garrison.governor.state import ServingState

NOON_S = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()
COST = Cost(device_s=4.0, joules=600.0, flops=8e10)


def decide(serving=None, devices=2, tenant=None, cost=COST, slo_s=60.0, now_s=NOON_S):
    return admit(
        cost,
        serving=serving or ServingState(service_device_s_by_level=(4.0,)),
        serving_devices=devices,
        tenant=tenant or TenantBudget(),
        slo_s=slo_s,
        now_s=now_s,
    )


def test_an_idle_fleet_admits():
    decision = decide()
    assert decision.admitted and decision.code == "admitted"
    assert decision.predicted_wait_s == 0.0 and decision.retry_after_s is None


def test_shed_refuses_with_a_retry_after():
    decision = decide(ServingState(admission="shed"))
    assert not decision.admitted and decision.code == "shed"
    assert decision.retry_after_s == 30.0 and "power cap" in decision.reason


def test_queue_mode_admits_to_wait_for_power():
    decision = decide(ServingState(admission="queue", queued_device_s=600.0))
    assert decision.admitted and decision.code == "queued"
    assert decision.predicted_wait_s == 300.0


def test_daily_video_quota_retries_at_utc_midnight():
    decision = decide(tenant=TenantBudget(videos_today=10, videos_per_day=10))
    assert not decision.admitted and decision.code == "quota_videos"
    assert decision.retry_after_s == 12 * 3600
    assert "10 of its 10 videos" in decision.reason
    assert decide(tenant=TenantBudget(videos_today=9, videos_per_day=10)).admitted


def test_daily_joule_quota_counts_this_request():
    decision = decide(tenant=TenantBudget(joules_today=9_500.0, joules_per_day=10_000.0))
    assert not decision.admitted and decision.code == "quota_joules"
    assert "about 600 J" in decision.reason and decision.retry_after_s == 12 * 3600
    assert decide(tenant=TenantBudget(joules_today=9_400.0, joules_per_day=10_000.0)).admitted


@pytest.mark.parametrize(
    "kwargs",
    [{"videos_per_day": -1}, {"joules_per_day": -0.5}, {"videos_today": -3}, {"joules_per_day": math.nan}],
)
def test_negative_quotas_are_a_value_error(kwargs):
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        TenantBudget(**kwargs)


def test_a_request_larger_than_the_slo_is_refused_for_good():
    decision = decide(cost=Cost(device_s=90.0, joules=1.0))
    assert not decision.admitted and decision.code == "too_large"
    assert decision.retry_after_s is None and "fewer seconds" in decision.reason


def test_a_long_queue_refuses_with_the_time_it_takes_to_drain():
    # 200 device-seconds wait on 2 devices: 100 s, + 4 s service > 60 s SLO. The queue may hold (60 - 4) * 2 = 112
    # device-seconds; it drains at 2 - 0.1 * 4 = 1.6 device-seconds per second: (200 - 112) / 1.6 = 55 s.
    serving = ServingState(queued_device_s=200.0, arrival_rate_per_s=0.1, service_device_s_by_level=(4.0,))
    decision = decide(serving)
    assert not decision.admitted and decision.code == "slo"
    assert decision.predicted_wait_s == 100.0
    assert decision.retry_after_s == 55.0
    # Retrying when told: the queue has drained to what the SLO allows, and the request is admitted.
    drained = ServingState(queued_device_s=200.0 - 55.0 * 1.6, arrival_rate_per_s=0.1, service_device_s_by_level=(4.0,))
    assert decide(drained).admitted


def test_no_serving_device_refuses():
    decision = decide(devices=0)
    assert not decision.admitted and decision.code == "no_capacity" and decision.retry_after_s == 30.0
    assert decision.predicted_wait_s == -1.0
    assert predicted_wait_s(ServingState(), 0) == math.inf


def test_bad_cost_or_slo_is_a_value_error():
    with pytest.raises(ValueError, match="request cost"):
        decide(cost=Cost(device_s=math.nan, joules=1.0))
    with pytest.raises(ValueError, match="slo_s"):
        decide(slo_s=0.0)


def test_seconds_to_next_utc_day():
    assert seconds_to_next_utc_day(NOON_S) == 43_200.0
    assert seconds_to_next_utc_day(86_400 * 3) == 86_400.0

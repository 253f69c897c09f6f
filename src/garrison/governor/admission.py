"""Admission: admit a video request, or refuse it with a reason and a time to retry.

A request is refused when the power controller sheds new work, when its tenant's daily quota (videos or joules)
would be exceeded (retry at the next UTC day), when it could not meet the SLO even on an empty queue, or when the
queue's predicted wait plus its own service time exceeds the SLO (retry when the queue has drained enough).
In "queue" mode (the fleet is at its power cap) a request within quota is accepted to wait for power.

Hand-written: the rule is a handful of comparisons on garrison's own numbers; the queue-wait prediction is the
work ahead divided by the serving devices (a fluid approximation, which is what the SLO check needs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from garrison.core.fleet import Cost
from garrison.governor.state import ServingState, finite_nonneg

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class TenantBudget:
    """A tenant's use today and its daily quotas (None: no quota)."""

    videos_today: int = 0
    joules_today: float = 0.0
    videos_per_day: int | None = None
    joules_per_day: float | None = None

    def __post_init__(self) -> None:
        for name in ("videos_today", "joules_today", "videos_per_day", "joules_per_day"):
            value = getattr(self, name)
            if value is None and name.endswith("per_day"):
                continue
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"tenant {name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class AdmissionDecision:
    """The answer to one request. `code` is "admitted", "queued" (admitted to wait for power), "shed",
    "quota_videos", "quota_joules", "no_capacity", "too_large" or "slo"; `retry_after_s` is set on refusals where
    retrying later can succeed (whole seconds, as HTTP Retry-After)."""

    admitted: bool
    code: str
    reason: str
    retry_after_s: float | None
    predicted_wait_s: float


def seconds_to_next_utc_day(now_s: float) -> float:
    """Seconds from unix time `now_s` to the next UTC midnight (when daily quotas reset)."""
    return float(SECONDS_PER_DAY - (int(now_s) % SECONDS_PER_DAY))


def predicted_wait_s(serving: ServingState, serving_devices: int) -> float:
    """Seconds a request submitted now waits before it starts: queued device-seconds over serving devices."""
    if serving_devices <= 0:
        return math.inf
    queued = serving.queued_device_s if finite_nonneg(serving.queued_device_s) else 0.0
    return queued / serving_devices


def admit(
    cost: Cost,
    *,
    serving: ServingState,
    serving_devices: int,
    tenant: TenantBudget,
    slo_s: float,
    now_s: float,
    shed_retry_after_s: float = 30.0,
) -> AdmissionDecision:
    """Admit or refuse one request.

    Args:
        cost: the request's predicted cost (governor.cost.estimate_cost) at the rung it will run at.
        serving: the serving state now (admission mode, queue, arrival rate).
        serving_devices: healthy devices serving now.
        tenant: the tenant's use today and quotas.
        slo_s: target seconds from submission to completion.
        now_s: unix seconds now (for the daily quota's reset).
        shed_retry_after_s: retry-after while the power controller sheds (it restores no sooner than a few
            control periods).

    Raises:
        ValueError: a cost or SLO that is negative or not a number (a bug upstream, not a refusal).
    """
    if not (finite_nonneg(cost.device_s) and finite_nonneg(cost.joules)):
        raise ValueError(f"request cost must be finite and >= 0, got {cost!r}")
    if not (math.isfinite(slo_s) and slo_s > 0):
        raise ValueError(f"slo_s must be a positive number of seconds, got {slo_s!r}")
    wait_s = predicted_wait_s(serving, serving_devices)
    wait_out = wait_s if math.isfinite(wait_s) else -1.0  # -1: no serving device to predict a wait from
    if serving.admission == "shed":
        return AdmissionDecision(
            False,
            "shed",
            "the fleet is at its power cap and is refusing new video requests; retry later",
            float(math.ceil(shed_retry_after_s)),
            wait_out,
        )
    to_midnight_s = seconds_to_next_utc_day(now_s)
    if tenant.videos_per_day is not None and tenant.videos_today + 1 > tenant.videos_per_day:
        return AdmissionDecision(
            False,
            "quota_videos",
            f"this tenant has made {tenant.videos_today} of its {tenant.videos_per_day} videos today; the quota"
            " resets at 00:00 UTC",
            to_midnight_s,
            wait_out,
        )
    if tenant.joules_per_day is not None and tenant.joules_today + cost.joules > tenant.joules_per_day:
        return AdmissionDecision(
            False,
            "quota_joules",
            f"this request needs about {cost.joules:.0f} J and the tenant has used {tenant.joules_today:.0f} of its"
            f" {tenant.joules_per_day:.0f} J today; ask for a shorter or smaller video, or wait for 00:00 UTC",
            to_midnight_s,
            wait_out,
        )
    if serving_devices <= 0:
        return AdmissionDecision(
            False,
            "no_capacity",
            "no serving device is up right now; retry later",
            float(math.ceil(shed_retry_after_s)),
            wait_out,
        )
    if cost.device_s > slo_s:
        return AdmissionDecision(
            False,
            "too_large",
            f"this request needs about {cost.device_s:.1f} s of device time, more than the {slo_s:.0f} s SLO even on"
            " an empty queue; ask for fewer seconds, fewer steps or a smaller size",
            None,
            wait_out,
        )
    if serving.admission == "queue":
        return AdmissionDecision(
            True,
            "queued",
            "admitted; the fleet is at its power cap, so it waits in the queue until power allows",
            None,
            wait_out,
        )
    if wait_s + cost.device_s > slo_s:
        allowed_queue_s = (slo_s - cost.device_s) * serving_devices
        queued = serving.queued_device_s if finite_nonneg(serving.queued_device_s) else 0.0
        per_request = serving.service_device_s(serving.quality_level) or cost.device_s
        rate = serving.arrival_rate_per_s if finite_nonneg(serving.arrival_rate_per_s) else 0.0
        # The queue drains at what the devices do minus what keeps arriving (at least a tenth of their capacity).
        drain_per_s = max(serving_devices - rate * per_request, 0.1 * serving_devices)
        retry_s = float(math.ceil(max(queued - allowed_queue_s, 0.0) / drain_per_s)) or 1.0
        return AdmissionDecision(
            False,
            "slo",
            f"the queue's predicted wait is {wait_s:.1f} s and this request takes about {cost.device_s:.1f} s, over"
            f" the {slo_s:.0f} s SLO; retry in {retry_s:.0f} s",
            retry_s,
            wait_out,
        )
    return AdmissionDecision(True, "admitted", "admitted", None, wait_out)

"""The power-cap controller: hold the fleet under `power_cap_w` by stepping serving down a fixed ladder of rungs.

Above `power_cap_w * high_watermark` the controller acts in this order, one family at a time, going to the next
family only when the previous one is exhausted:

1. quality: walk down core.fleet.QUALITY_LADDER (fewer steps, then a smaller native size; never a shorter clip);
2. concurrency: fewer requests at once on each serving device, down to 1;
3. power limits: lower the limit of every serving device that allows it (NVML), a fixed fraction of its range at a
   time, never below its minimum;
4. admission: "queue" (new requests wait; workers start nothing new), then "shed" (new requests are refused);
5. training, last and always with a critical Alert: lower its devices' power limits.

Below `power_cap_w * low_watermark` for `restore_hold_periods` periods in a row it restores one rung, in exactly the
reverse order, and only when the predicted reading after the step stays under the high watermark.

The controller is reactive (the meters' reading) and predictive, from a per-device power model (idle power plus
busy minus idle power times utilization, clipped at the power limit; utilization from the measured demand and the
ladder's cost per request). It predicts three numbers for any point on the ladder: the next period (requests
already running keep running, waiting ones fill free slots at once, power limits act at once), the steady-state
mean, and the steady-state peak (the 99.5th percentile of the number of requests running at once, Poisson for random
arrivals). It steps down when the reading or the feed-forward (the model seeing a burst in the queue, or a training
start, before the meters do) is above the high watermark, or when the next period or the peak would break the cap;
it walks as many rungs in one tick as it takes to bring all three under; and it refuses a restore that would bring
any of them over the high watermark. After a step whose effect arrives with the next requests (quality,
concurrency, admission), it waits for that (up to the grace period) before escalating again, unless the cap itself
is broken.

Hand-written: the ladder, its order and the fleet power model are garrison's; a PID library would not know that the
actuators are ordered discrete rungs with delayed effect.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from garrison.core.fleet import QUALITY_LADDER
from garrison.governor.state import (
    Action,
    Alert,
    ControlMemory,
    DeviceState,
    FleetState,
    GovernorConfig,
    SetAdmission,
    SetConcurrency,
    SetPowerLimit,
    SetQuality,
    ThrottleTraining,
    finite_nonneg,
    serving_demand_device_s_per_s,
)

FAMILIES: tuple[str, ...] = ("quality", "concurrency", "power_limit", "admission", "training")
ADMISSION_ORDER: tuple[str, ...] = ("open", "queue", "shed")
MAX_RUNG_HISTORY = 32
# The cap may be broken in at most 1% of periods; the controller aims at half that, so that the noise in a measured
# arrival rate does not carry it over the target.
PEAK_QUANTILE = 0.995
# A settle window ends a little early: the tick it was sized for (a power limit's: the next one, one period on) reads
# the clock after its timer wakes, a fraction of a millisecond before or after the window's end, and whether that
# tick was held must not turn on the jitter (2026-11-26: it held the step after the cap binds in two of four
# demo runs and not in the other two).
SETTLE_TOLERANCE_FRACTION = 0.05


@dataclass(frozen=True)
class Knobs:
    """The settings the controller moves: one point on the ladder."""

    quality_level: int
    concurrency: int
    admission: str
    serving_limits_w: tuple[tuple[str, float], ...]  # (device_id, watts), settable serving devices only
    training_limits_w: tuple[tuple[str, str, float], ...]  # (job_id, device_id, watts), settable training devices


def current_knobs(
    state: FleetState, config: GovernorConfig, serving: Sequence[DeviceState], training: Sequence[DeviceState]
) -> Knobs:
    """Where the fleet stands now on every rung."""
    level = min(max(state.serving.quality_level, 0), len(QUALITY_LADDER) - 1)
    concurrency = min(max(state.serving.concurrency, 1), config.max_concurrency)
    admission = state.serving.admission if state.serving.admission in ADMISSION_ORDER else "open"
    return Knobs(
        quality_level=level,
        concurrency=concurrency,
        admission=admission,
        serving_limits_w=tuple((d.id, d.current_limit_w) for d in serving if d.can_limit),
        training_limits_w=tuple((d.job_id or "", d.id, d.current_limit_w) for d in training if d.can_limit),
    )


def _limit_step_w(device: DeviceState, config: GovernorConfig) -> float:
    return max((device.max_power_limit_w - device.min_power_limit_w) * config.power_limit_step_fraction, 1.0)  # type: ignore[operator]


def step_down(knobs: Knobs, devices: dict[str, DeviceState], config: GovernorConfig) -> tuple[str, Knobs] | None:
    """The next rung down (family, knobs), or None when every family is exhausted."""
    if knobs.quality_level < len(QUALITY_LADDER) - 1:
        return "quality", replace(knobs, quality_level=knobs.quality_level + 1)
    if knobs.concurrency > 1:
        return "concurrency", replace(knobs, concurrency=knobs.concurrency - 1)
    if any(w > devices[i].min_power_limit_w + 1e-6 for i, w in knobs.serving_limits_w):  # type: ignore[operator]
        lowered = tuple(
            (i, max(devices[i].min_power_limit_w, w - _limit_step_w(devices[i], config)))  # type: ignore[type-var]
            for i, w in knobs.serving_limits_w
        )
        return "power_limit", replace(knobs, serving_limits_w=lowered)
    if knobs.admission != "shed":
        return "admission", replace(knobs, admission=ADMISSION_ORDER[ADMISSION_ORDER.index(knobs.admission) + 1])
    if any(w > devices[i].min_power_limit_w + 1e-6 for _, i, w in knobs.training_limits_w):  # type: ignore[operator]
        lowered_t = tuple(
            (j, i, max(devices[i].min_power_limit_w, w - _limit_step_w(devices[i], config)))  # type: ignore[type-var]
            for j, i, w in knobs.training_limits_w
        )
        return "training", replace(knobs, training_limits_w=lowered_t)
    return None


def step_up(knobs: Knobs, devices: dict[str, DeviceState], config: GovernorConfig) -> tuple[str, Knobs] | None:
    """The next rung up, in exactly the reverse order of `step_down`; None when nothing is lowered."""
    if any(w < devices[i].max_power_limit_w - 1e-6 for _, i, w in knobs.training_limits_w):  # type: ignore[operator]
        raised_t = tuple(
            (j, i, min(devices[i].max_power_limit_w, w + _limit_step_w(devices[i], config)))  # type: ignore[type-var]
            for j, i, w in knobs.training_limits_w
        )
        return "training", replace(knobs, training_limits_w=raised_t)
    if knobs.admission != "open":
        return "admission", replace(knobs, admission=ADMISSION_ORDER[ADMISSION_ORDER.index(knobs.admission) - 1])
    if any(w < devices[i].max_power_limit_w - 1e-6 for i, w in knobs.serving_limits_w):  # type: ignore[operator]
        raised = tuple(
            (i, min(devices[i].max_power_limit_w, w + _limit_step_w(devices[i], config)))  # type: ignore[type-var]
            for i, w in knobs.serving_limits_w
        )
        return "power_limit", replace(knobs, serving_limits_w=raised)
    if knobs.concurrency < config.max_concurrency:
        return "concurrency", replace(knobs, concurrency=knobs.concurrency + 1)
    if knobs.quality_level > 0:
        return "quality", replace(knobs, quality_level=knobs.quality_level - 1)
    return None


def poisson_quantile(mean: float, quantile: float) -> int:
    """Smallest n with P(N <= n) >= quantile for N ~ Poisson(mean). Summed here rather than scipy.stats so the
    policies need nothing beyond the standard library (the planner runs them in bulk)."""
    if not mean > 0:
        return 0
    if mean > 500:  # far into the normal regime; the sum below would underflow exp(-mean)
        return math.ceil(mean + statistics.NormalDist().inv_cdf(quantile) * math.sqrt(mean))
    term = cumulative = math.exp(-mean)
    n = 0
    while cumulative < quantile:
        n += 1
        term *= mean / n
        cumulative += term
    return n


def device_power_w(device: DeviceState, utilization: float, limit_w: float | None = None) -> float:
    """The power model of one device: idle + (busy - idle) * utilization, clipped at its power limit."""
    raw = device.idle_power_w + max(device.busy_power_w - device.idle_power_w, 0.0) * min(max(utilization, 0.0), 1.0)
    limit = limit_w if limit_w is not None else (device.current_limit_w if device.can_limit else None)
    return min(raw, limit) if limit is not None and finite_nonneg(limit) else raw


def measured_utilization(device: DeviceState) -> float:
    """A device's utilization as its power reading says (0 when it has no valid reading)."""
    span = device.busy_power_w - device.idle_power_w
    if not finite_nonneg(device.power_w) or span <= 0:
        return 0.0
    return min(max((device.power_w - device.idle_power_w) / span, 0.0), 1.0)


def serving_utilization(
    knobs: Knobs,
    state: FleetState,
    config: GovernorConfig,
    serving: Sequence[DeviceState],
    peak_quantile: float | None = None,
) -> float | None:
    """Utilization of each serving device at `knobs` for the measured demand; None when the service time was never
    measured (the model then falls back on the devices' own readings).

    Without `peak_quantile` this is the mean. Requests arrive at random, so the number running at once varies: as an
    M/G/infinity queue it is Poisson with mean demand * max_concurrency (each request holds 1/max_concurrency of a
    device). Its `peak_quantile` is the load the cap must hold through to be broken in at most 1 - quantile of the
    time.
    """
    if knobs.admission != "open" or not serving:
        return 0.0
    demand = serving_demand_device_s_per_s(state.serving, config.slo_s, knobs.quality_level)
    if demand is None:
        return None
    busy = demand
    if peak_quantile is not None:
        busy = poisson_quantile(demand * config.max_concurrency, peak_quantile) / config.max_concurrency
    ceiling = knobs.concurrency / config.max_concurrency
    return min(ceiling, busy / len(serving))


def model_power_w(
    knobs: Knobs,
    state: FleetState,
    config: GovernorConfig,
    serving: Sequence[DeviceState],
    training: Sequence[DeviceState],
    peak_quantile: float | None = None,
) -> float:
    """Modelled steady-state power of the serving and training devices at `knobs` (other devices do not move);
    with `peak_quantile` the power at that quantile of serving load (see serving_utilization)."""
    utilization = serving_utilization(knobs, state, config, serving, peak_quantile)
    base = current_knobs(state, config, serving, training)
    serving_limits = dict(knobs.serving_limits_w)
    total = 0.0
    for d in serving:
        if utilization is None:  # no demand model: scale the measured utilization by what the knobs change
            u = measured_utilization(d) * (knobs.concurrency / max(base.concurrency, 1))
            u = 0.0 if knobs.admission != "open" else u
        else:
            u = utilization
        total += device_power_w(d, u, serving_limits.get(d.id))
    training_limits = {i: w for _, i, w in knobs.training_limits_w}
    for d in training:
        total += device_power_w(d, 1.0, training_limits.get(d.id))
    return total


def next_period_power_w(
    knobs: Knobs,
    state: FleetState,
    config: GovernorConfig,
    serving: Sequence[DeviceState],
    training: Sequence[DeviceState],
) -> float:
    """Power of the serving and training devices over the next period at `knobs`, before slow rungs act.

    Requests already running keep running, so a lower quality or concurrency changes nothing yet; power limits act
    at once. Waiting requests fill the free slots of open serving devices at once (up to `knobs.concurrency`).
    Training runs flat out, including on devices it starts on now.
    """
    serving_limits = dict(knobs.serving_limits_w)
    training_limits = {i: w for _, i, w in knobs.training_limits_w}
    queued = max(state.serving.queue_depth, 0) if knobs.admission == "open" else 0
    fill_per_device = queued / config.max_concurrency / len(serving) if serving else 0.0
    ceiling = knobs.concurrency / config.max_concurrency
    total = 0.0
    for d in serving:
        limit = serving_limits.get(d.id)
        if finite_nonneg(d.power_w):
            pinned = d.can_limit and d.power_w >= d.current_limit_w - 1.0
            u = 1.0 if pinned else measured_utilization(d)  # at its limit: its demand may be higher than it shows
        else:
            u = 1.0
        u = max(u, min(ceiling, u + fill_per_device))
        total += device_power_w(d, u, limit)
    for d in training:
        total += device_power_w(d, 1.0, training_limits.get(d.id))
    return total


def peak_power_w(
    state: FleetState,
    config: GovernorConfig,
    serving: Sequence[DeviceState],
    training: Sequence[DeviceState],
    others: Sequence[DeviceState],
) -> float:
    """The fleet's power at the PEAK_QUANTILE of serving load, at the current rungs, if `serving` served and
    `training` trained (`others` as they read now, or idle): what lending one more device would risk."""
    knobs = current_knobs(state, config, serving, training)
    rest_w = math.fsum(d.power_w if finite_nonneg(d.power_w) else d.idle_power_w for d in others)
    return rest_w + model_power_w(knobs, state, config, serving, training, PEAK_QUANTILE)


def _actions_between(
    old: Knobs, new: Knobs, family: str, reason: str, reading: dict[str, float | int | str | None]
) -> list[Action]:
    actions: list[Action] = []
    if new.quality_level != old.quality_level:
        rung = QUALITY_LADDER[new.quality_level]
        actions.append(SetQuality(new.quality_level, reason=f"{reason}: quality rung {rung.name}", reading=reading))
    if new.concurrency != old.concurrency:
        actions.append(
            SetConcurrency(
                new.concurrency, reason=f"{reason}: {new.concurrency} request(s) per device", reading=reading
            )
        )
    old_limits = dict(old.serving_limits_w)
    for device_id, watts in new.serving_limits_w:
        if abs(old_limits.get(device_id, watts) - watts) > 1e-6:
            actions.append(
                SetPowerLimit(device_id, watts, reason=f"{reason}: serving device limit {watts:.0f} W", reading=reading)
            )
    if new.admission != old.admission:
        actions.append(SetAdmission(new.admission, reason=f"{reason}: admission {new.admission}", reading=reading))  # type: ignore[arg-type]
    old_training = {i: w for _, i, w in old.training_limits_w}
    throttled = False
    for job_id, device_id, watts in new.training_limits_w:
        if abs(old_training.get(device_id, watts) - watts) > 1e-6:
            actions.append(
                ThrottleTraining(
                    job_id, device_id, watts, reason=f"{reason}: training device limit {watts:.0f} W", reading=reading
                )
            )
            throttled = watts < old_training[device_id]
    if family == "training":
        if throttled:
            message = (
                f"{reason}: every serving rung is exhausted, so training is throttled to hold the cap; raise the"
                " cap, add power-efficient devices, or cut serving demand"
            )
            actions.append(Alert(severity="critical", message=message, reason=message, reading=reading))
        else:
            message = f"{reason}: training throttle eased"
            actions.append(Alert(severity="info", message=message, reason=message, reading=reading))
    return actions


def _settle_s(state: FleetState, config: GovernorConfig, families: set[str], knobs: Knobs) -> float:
    """How long a step takes to show in the meters: one control period for power limits (immediate), one request's
    duration for rungs that act on new requests, bounded by the grace period."""
    if families <= {"power_limit", "training"}:
        return config.control_period_s
    per_request = state.serving.service_device_s(knobs.quality_level) or config.control_period_s
    per_request *= config.max_concurrency / max(knobs.concurrency, 1)
    return min(max(per_request, config.control_period_s), max(config.grace_period_s, config.control_period_s))


def _settling(state: FleetState, config: GovernorConfig, memory: ControlMemory) -> bool:
    """Whether a step taken earlier is still taking effect at this tick (its window, less a twentieth of a period)."""
    return state.now_s < memory.settle_until_s - SETTLE_TOLERANCE_FRACTION * config.control_period_s


def _why_down(reading_w: float, predicted_w: float, next_w: float, peak_w: float, config: GovernorConfig) -> str:
    """The trigger of a step down, in words."""
    cap = f"the {config.power_cap_w:.0f} W cap"
    if reading_w > config.power_cap_w:
        return f"fleet power {reading_w:.0f} W is over {cap}"
    if predicted_w > config.high_w:
        return (
            f"fleet power {reading_w:.0f} W (predicted {predicted_w:.0f} W at the measured demand) is above the"
            f" {config.high_w:.0f} W high watermark of {cap}"
        )
    if next_w > config.power_cap_w:
        return f"fleet power {reading_w:.0f} W is predicted to reach {next_w:.0f} W next period, over {cap}"
    return (
        f"fleet power {reading_w:.0f} W, but at the measured demand the busiest 0.5% of periods would draw"
        f" {peak_w:.0f} W, over {cap}"
    )


def control_power(
    state: FleetState,
    config: GovernorConfig,
    memory: ControlMemory,
    serving: Sequence[DeviceState],
    training: Sequence[DeviceState],
    reading_w: float,
    reading_trusted: bool = True,
) -> tuple[list[Action], ControlMemory]:
    """One tick of the cap controller.

    Args:
        state: the fleet now.
        config: cap, watermarks, hold periods.
        memory: what the previous tick left.
        serving: the devices that serve after this tick's pool actions.
        training: the devices that train after this tick's pool actions.
        reading_w: the fleet's power now (measured, or estimated when the meters failed).
        reading_trusted: False for an estimate: the controller then steps down if needed but never restores.

    Returns:
        The actions (in order) and the memory for the next tick.
    """
    devices = {d.id: d for d in (*serving, *training)}
    knobs = current_knobs(state, config, serving, training)
    model_now = model_power_w(knobs, state, config, serving, training)
    measured = [d.power_w for d in (*serving, *training)]
    measured_ok = bool(measured) and all(finite_nonneg(w) for w in measured)
    measured_w = math.fsum(measured) if measured_ok else model_now
    # Feed-forward: a burst the model sees in the queue, or a training start, before the meters do.
    ahead_w = max(0.0, model_now - measured_w) if measured_ok else 0.0
    predicted_w = reading_w + ahead_w
    cap_w, high_w, low_w = config.power_cap_w, config.high_w, config.low_w

    # Predictions are absolute: the devices the model covers, plus what the rest of the fleet reads now. (Anchoring
    # on the reading would carry a transient, such as slow requests still running, into the steady state.)
    rest_w = max(reading_w - measured_w, 0.0)

    def steady_after(k: Knobs) -> float:
        return rest_w + model_power_w(k, state, config, serving, training)

    def peak_after(k: Knobs) -> float:
        return rest_w + model_power_w(k, state, config, serving, training, PEAK_QUANTILE)

    def next_after(k: Knobs) -> float:
        return rest_w + next_period_power_w(k, state, config, serving, training)

    reading: dict[str, float | int | str | None] = {
        "fleet_power_w": round(reading_w, 3),
        "predicted_w": round(predicted_w, 3),
        "next_period_w": round(next_after(knobs), 3),
        "peak_w": round(peak_after(knobs), 3),
        "power_cap_w": cap_w,
        "high_watermark_w": round(high_w, 3),
        "low_watermark_w": round(low_w, 3),
        "now_s": state.now_s,
    }
    memory = replace(
        memory,
        periods=memory.periods + 1,
        periods_above_cap=memory.periods_above_cap + (1 if reading_w > cap_w else 0),
        last_reading_w=reading_w if reading_trusted else memory.last_reading_w,
    )
    actions: list[Action] = []

    if predicted_w > high_w or next_after(knobs) > cap_w or peak_after(knobs) > cap_w:
        memory = replace(memory, periods_below_low=0)
        settling = (
            _settling(state, config, memory)
            and reading_w <= cap_w
            and next_after(knobs) <= cap_w
            and peak_after(knobs) <= cap_w
            and memory.expected_power_w is not None
            and memory.expected_power_w <= high_w
            and ahead_w == 0.0
        )
        if settling:
            return actions, memory
        # Walk down in order until the steady state is under the high watermark and the next period under the cap.
        target = knobs
        families: list[str] = []
        after_w, after_next_w, after_peak_w = predicted_w, next_after(knobs), peak_after(knobs)
        while True:
            nxt = step_down(target, devices, config)
            if nxt is None:
                break
            family, target = nxt
            families.append(family)
            after_w, after_next_w, after_peak_w = steady_after(target), next_after(target), peak_after(target)
            if after_w <= high_w and after_next_w <= cap_w and after_peak_w <= cap_w:
                break
        why = _why_down(reading_w, predicted_w, next_after(knobs), peak_after(knobs), config)
        reading["predicted_after_w"] = round(after_w, 3)
        reading["next_period_after_w"] = round(after_next_w, 3)
        reading["peak_after_w"] = round(after_peak_w, 3)
        actions.extend(_actions_between(knobs, target, families[-1] if families else "", why, reading))
        exhausted = after_w > high_w or after_next_w > cap_w or after_peak_w > cap_w
        if exhausted and "cap_exhausted" not in memory.alerted:
            message = (
                f"{why}, and every rung is taken (lowest quality, concurrency 1, minimum power limits, admission"
                f" shed, training throttled): predicted {after_w:.0f} W. Raise the cap or stop devices"
            )
            actions.append(Alert(severity="critical", message=message, reason=message, reading=reading))
            memory = replace(memory, alerted=(*memory.alerted, "cap_exhausted"))
        if families:
            rungs = (*memory.rungs, *(f"down:{f}" for f in families))[-MAX_RUNG_HISTORY:]
            settle_s = _settle_s(state, config, set(families), target)
            memory = replace(memory, rungs=rungs, settle_until_s=state.now_s + settle_s, expected_power_w=after_w)
        return actions, memory

    alerted = tuple(a for a in memory.alerted if a != "cap_exhausted")
    memory = replace(memory, alerted=alerted)
    if predicted_w >= low_w:
        return actions, replace(memory, periods_below_low=0)

    memory = replace(memory, periods_below_low=memory.periods_below_low + 1)
    if memory.periods_below_low < config.restore_hold_periods or not reading_trusted:
        return actions, memory
    if _settling(state, config, memory):
        return actions, memory
    nxt = step_up(knobs, devices, config)
    if nxt is None:
        return actions, memory
    family, target = nxt
    after_w = steady_after(target)
    reading["predicted_after_w"] = round(after_w, 3)
    reading["next_period_after_w"] = round(next_after(target), 3)
    reading["peak_after_w"] = round(peak_after(target), 3)
    if after_w > high_w or next_after(target) > high_w or peak_after(target) > high_w:
        # The step would cross the high watermark: hold here; the next period tries again.
        return actions, memory
    why = (
        f"fleet power {reading_w:.0f} W has been under the low watermark ({low_w:.0f} W of the {cap_w:.0f} W cap) for"
        f" {memory.periods_below_low} periods; restoring one {family} rung is predicted to reach {after_w:.0f} W"
    )
    actions.extend(_actions_between(knobs, target, family, why, reading))
    rungs = (*memory.rungs, f"up:{family}")[-MAX_RUNG_HISTORY:]
    settle_s = _settle_s(state, config, {family}, target)
    return actions, replace(
        memory, periods_below_low=0, rungs=rungs, settle_until_s=state.now_s + settle_s, expected_power_w=after_w
    )

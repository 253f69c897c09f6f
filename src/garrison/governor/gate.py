"""The deployment gate: may the public service be online, only degraded, or must it stay offline, and why.

From measured demand (requests per second), the measured service time per request at each ladder rung, the devices
serving can have without touching training's share, and the watts the cap leaves once training runs at full power,
the gate finds the best rung at which serving meets demand. `offline` when no rung does (or no device can serve, or
the cap is below the fleet's idle draw): the service stays offline until it can run without hindering training or
breaking the cap. `degraded` when only a lower rung fits, when admission is not open, or when SLO attainment is under
target. Each reason is one sentence with the numbers and what to change.
"""

from __future__ import annotations

import math

from garrison.core.fleet import QUALITY_LADDER, JobStatus
from garrison.governor.power import device_power_w
from garrison.governor.state import (
    DeviceState,
    FleetState,
    GateVerdict,
    GovernorConfig,
    finite_nonneg,
    reporting,
)


def _training_devices_needed(state: FleetState, n_training_home: int) -> int:
    held = sum(len(j.devices_held) for j in state.jobs if j.status == JobStatus.RUNNING)
    waiting = sum(
        j.devices_requested
        for j in state.jobs
        if j.status == JobStatus.WAITING
        and isinstance(j.devices_requested, int)
        and 0 < j.devices_requested
        and j.devices_requested <= n_training_home
    )
    return held + waiting


def deployment_gate(state: FleetState, config: GovernorConfig, demand_rate_per_s: float) -> GateVerdict:
    """Say whether serving can be online for `demand_rate_per_s` requests per second, and why.

    Never raises: odd numbers (NaN demand, no devices) give `offline` or `degraded` with the reason.
    """
    usable = [d for d in state.devices if reporting(d, state.now_s, config.worker_timeout_s)]
    idle_all_w = math.fsum(d.idle_power_w for d in state.devices if finite_nonneg(d.idle_power_w))
    if idle_all_w >= config.power_cap_w:
        return GateVerdict(
            "offline",
            (
                f"the {config.power_cap_w:.0f} W cap is below the fleet's idle draw of {idle_all_w:.0f} W: raise the"
                " cap or remove devices",
            ),
        )
    if not finite_nonneg(demand_rate_per_s):
        return GateVerdict(
            "degraded", (f"measured demand is {demand_rate_per_s!r}, not a rate: check the request counters",)
        )
    serving_home = [d for d in usable if d.home_pool == "serving"]
    training_home = [d for d in usable if d.home_pool == "training"]
    training_need = _training_devices_needed(state, sum(1 for d in state.devices if d.home_pool == "training"))
    lendable_n = max(0, len(training_home) - training_need)
    if config.lending_limit is not None:
        lendable_n = min(lendable_n, config.lending_limit)
    # Devices training keeps: those it holds first, then idle ones up to what it needs.
    training_devices = [d for d in training_home if d.assignment == "training"]
    others = sorted((d for d in training_home if d.assignment != "training"), key=lambda d: (d.assignment, d.id))
    training_devices += others[: max(0, training_need - len(training_devices))]
    kept = {d.id for d in training_devices}
    lendable = [d for d in training_home if d.id not in kept][:lendable_n]
    candidates: list[DeviceState] = serving_home + lendable
    n_devices = len(candidates)
    if n_devices == 0:
        return GateVerdict(
            "offline",
            (
                f"no device can serve: {len(serving_home)} serving device(s) report and training needs all"
                f" {len(training_home)} of its own; add serving devices or bring lost ones back",
            ),
        )

    # The watts left for serving: the cap's high watermark minus training at full power and other devices idle.
    training_w = math.fsum(device_power_w(d, 1.0) for d in training_devices)
    rest_ids = kept | {d.id for d in candidates}
    rest_idle_w = math.fsum(d.idle_power_w for d in state.devices if d.id not in rest_ids)
    serving_budget_w = config.high_w - training_w - rest_idle_w
    serving_idle_w = math.fsum(d.idle_power_w for d in candidates)
    dynamic_w = math.fsum(max(d.busy_power_w - d.idle_power_w, 0.0) for d in candidates) / n_devices
    busy_w = math.fsum(device_power_w(d, 1.0) for d in candidates) / n_devices
    devices_by_power = (serving_budget_w - serving_idle_w) / dynamic_w if dynamic_w > 0 else math.inf
    full_load_devices = max(serving_budget_w, 0.0) / busy_w if busy_w > 0 else math.inf

    serving = state.serving
    if serving.service_device_s(0) is None:
        if demand_rate_per_s == 0:
            return GateVerdict(
                "online",
                (
                    f"no demand yet; {n_devices} device(s) can serve and the cap leaves {serving_budget_w:.0f} W for them",
                ),
            )
        return GateVerdict(
            "degraded",
            (
                "no request has been measured yet, so capacity is unknown; serve a few requests to calibrate the"
                " service time",
            ),
        )

    def needed(level: int) -> tuple[float, float]:
        busy = demand_rate_per_s * (serving.service_device_s(level) or 0.0)  # busy device-equivalents
        return busy / config.target_utilization, busy

    best: int | None = None
    for level in range(len(QUALITY_LADDER)):
        devices_needed, busy = needed(level)
        if devices_needed <= n_devices + 1e-9 and busy <= devices_by_power + 1e-9:
            best = level
            break
    need0, _ = needed(0)
    top = len(QUALITY_LADDER) - 1
    need_top, _ = needed(top)
    budget_sentence = (
        f"the cap leaves {max(serving_budget_w, 0.0):.0f} W for serving after training, which is"
        f" {full_load_devices:.1f} devices at full load"
    )
    if best is None:
        if need_top > n_devices:
            fix = "add serving devices or free training devices"
        else:
            fix = "raise the cap or add more power-efficient devices"
        return GateVerdict(
            "offline",
            (
                f"serving needs {need0:.1f} devices at full quality and {need_top:.1f} at the lowest rung"
                f" ({QUALITY_LADDER[top].name}) for {demand_rate_per_s:.2f} req/s but has {n_devices}; {budget_sentence}:"
                f" {fix}",
            ),
        )
    reasons: list[str] = []
    if best > 0:
        reasons.append(
            f"serving needs {need0:.1f} devices at full quality for {demand_rate_per_s:.2f} req/s but has {n_devices};"
            f" {budget_sentence}: it runs at rung {best} ({QUALITY_LADDER[best].name}); raise the cap or add devices"
            " for full quality"
        )
    if serving.admission != "open":
        reasons.append(
            f"admission is '{serving.admission}' because the fleet is at its power cap: new requests wait or are"
            " refused until power falls"
        )
    if serving.quality_level > 0 and best == 0:
        reasons.append(
            f"the power controller holds quality at rung {serving.quality_level}"
            f" ({QUALITY_LADDER[min(serving.quality_level, top)].name}); it restores it when the fleet's power falls"
        )
    if serving.slo_attainment is not None and serving.slo_attainment < config.slo_target:
        reasons.append(
            f"only {serving.slo_attainment:.0%} of recent requests met the {config.slo_s:.0f} s SLO (target"
            f" {config.slo_target:.0%}): add serving devices or lower the quality ladder's first rung"
        )
    if reasons:
        return GateVerdict("degraded", tuple(reasons))
    return GateVerdict(
        "online",
        (
            f"serving needs {need0:.1f} devices at full quality for {demand_rate_per_s:.2f} req/s and can have"
            f" {n_devices} without touching training's; {budget_sentence}",
        ),
    )

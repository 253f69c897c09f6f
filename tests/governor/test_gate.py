"""governor.gate: online, degraded or offline, from measured demand and capacity, in words an operator can act on."""

from __future__ import annotations

import math
from dataclasses import replace

from garrison.core.fleet import JobStatus
from garrison.governor.gate import deployment_gate
from garrison.governor.state import DeviceState, FleetState, GovernorConfig, ServingState, TrainingJobState

SERVING = ServingState(service_device_s_by_level=(4.0,))  # 4 device-seconds a request at full quality
CONFIG = GovernorConfig(power_cap_w=2000.0, training_guarantee=2, serving_floor=2)


def device(device_id: str, pool: str, assignment: str = "idle", **kw) -> DeviceState:
    base = dict(home_pool=pool, assignment=assignment, power_w=50.0, idle_power_w=50.0, busy_power_w=300.0,
                last_report_s=100.0)  # fmt: skip
    base.update(kw)
    return DeviceState(device_id, **base)


def fleet(training_running: bool = True, serving=SERVING, **kw) -> FleetState:
    devices = [
        device("t0", "training", "training" if training_running else "idle", job_id="j" if training_running else None),
        device("t1", "training", "training" if training_running else "idle", job_id="j" if training_running else None),
        device("s0", "serving", "serving"),
        device("s1", "serving", "serving"),
    ]
    jobs = (TrainingJobState("j", 2, ("t0", "t1"), JobStatus.RUNNING),) if training_running else ()
    return FleetState(now_s=100.0, devices=tuple(devices), serving=serving, jobs=jobs, **kw)


def test_online_when_demand_fits_at_full_quality():
    verdict = deployment_gate(fleet(), CONFIG, demand_rate_per_s=0.2)  # 0.8 busy devices: 1 device at 0.8
    assert verdict.state == "online"
    assert verdict.reasons[0].startswith("serving needs 1.0 devices at full quality for 0.20 req/s and can have 2")


def test_idle_training_devices_count_as_serving_capacity():
    # 0.6 req/s needs 3 devices at full quality: with training idle, its 2 devices can be lent.
    assert deployment_gate(fleet(training_running=True), CONFIG, 0.6).state == "degraded"
    assert deployment_gate(fleet(training_running=False), CONFIG, 0.6).state == "online"
    # A lending limit of 0 keeps them out.
    assert deployment_gate(fleet(training_running=False), replace(CONFIG, lending_limit=0), 0.6).state == "degraded"


def test_degraded_when_only_a_lower_rung_fits_with_what_to_change():
    # 0.6 req/s at full quality needs 3 devices; at rung 1 (8 of 12 steps) 2 will do.
    verdict = deployment_gate(fleet(), CONFIG, demand_rate_per_s=0.6)
    assert verdict.state == "degraded"
    assert "serving needs 3.0 devices at full quality for 0.60 req/s but has 2" in verdict.reasons[0]
    assert "it runs at rung 1 (8-steps)" in verdict.reasons[0]


def test_degraded_when_the_cap_not_the_devices_binds():
    # Cap 1,000 W: high watermark 970 W; training takes 600 W, leaving 370 W for serving, of which its idle draw
    # takes 100 W: 270 W of work, 1.08 busy devices. 0.4 req/s at full quality is 1.6 busy devices; at rung 1, 1.07.
    verdict = deployment_gate(fleet(), replace(CONFIG, power_cap_w=1000.0), demand_rate_per_s=0.4)
    assert verdict.state == "degraded"
    assert "the cap leaves 370 W for serving after training, which is 1.2 devices at full load" in verdict.reasons[0]


def test_offline_when_no_rung_can_serve_the_demand():
    verdict = deployment_gate(fleet(), CONFIG, demand_rate_per_s=20.0)
    assert verdict.state == "offline"
    text = verdict.reasons[0]
    assert "serving needs 100.0 devices at full quality and 8.3 at the lowest rung (4-steps-0.5x)" in text
    assert "add serving devices or free training devices" in text


def test_offline_when_the_cap_leaves_too_little_for_serving():
    verdict = deployment_gate(fleet(), replace(CONFIG, power_cap_w=750.0), demand_rate_per_s=1.0)
    assert verdict.state == "offline"
    assert "raise the cap or add more power-efficient devices" in verdict.reasons[0]


def test_offline_when_the_cap_is_below_the_idle_draw():
    verdict = deployment_gate(fleet(), replace(CONFIG, power_cap_w=150.0), demand_rate_per_s=0.0)
    assert verdict.state == "offline" and "below the fleet's idle draw of 200 W" in verdict.reasons[0]


def test_offline_without_a_device_that_can_serve():
    state = fleet()
    lost = tuple(replace(d, last_report_s=0.0) if d.home_pool == "serving" else d for d in state.devices)
    verdict = deployment_gate(replace(state, devices=lost), CONFIG, demand_rate_per_s=0.1)
    assert verdict.state == "offline" and "no device can serve" in verdict.reasons[0]


def test_degraded_for_closed_admission_a_held_rung_or_missed_slos():
    held = replace(SERVING, quality_level=2, admission="queue", slo_attainment=0.8)
    verdict = deployment_gate(fleet(serving=held), CONFIG, demand_rate_per_s=0.1)
    assert verdict.state == "degraded"
    text = " ".join(verdict.reasons)
    assert "admission is 'queue'" in text
    assert "holds quality at rung 2 (6-steps)" in text
    assert "only 80% of recent requests met the 60 s SLO (target 95%)" in text


def test_unmeasured_service_time_and_odd_demand():
    unmeasured = fleet(serving=ServingState())
    assert deployment_gate(unmeasured, CONFIG, 0.0).state == "online"
    assert "no request has been measured" in deployment_gate(unmeasured, CONFIG, 0.5).reasons[0]
    assert deployment_gate(fleet(), CONFIG, math.nan).state == "degraded"
    assert deployment_gate(fleet(), CONFIG, -1.0).state == "degraded"

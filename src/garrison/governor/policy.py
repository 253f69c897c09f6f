"""One control tick: `decide(state, config) -> Decision`, a pure function of the fleet's state.

The order follows vLLM's schedule step: first the devices that stopped reporting (requeue their work), then pools
(training's guarantee comes first: reclaim, start, lend), then the power cap, then the gate. Admission's mode is a
rung of the power controller. The live loop and the planner call the same function; neither the clock nor any I/O
is read here, and `decide` does not raise: odd state becomes an Alert and a bounded reaction.
"""

from __future__ import annotations

import math
from dataclasses import replace

from garrison.governor.gate import deployment_gate
from garrison.governor.pools import plan_pools
from garrison.governor.power import control_power, device_power_w, measured_utilization
from garrison.governor.state import (
    Action,
    Alert,
    ControlMemory,
    Decision,
    DeviceState,
    FleetState,
    GateVerdict,
    GovernorConfig,
    Lend,
    MarkLost,
    SetPowerLimit,
    StartTraining,
    finite_nonneg,
    reporting,
)


def _lost_devices(state: FleetState, config: GovernorConfig) -> list[Action]:
    actions: list[Action] = []
    for d in state.devices:
        if reporting(d, state.now_s, config.worker_timeout_s):
            continue
        if not d.healthy and not d.in_flight:
            continue  # already marked; nothing left to requeue
        requeue = tuple(f.video_id for f in d.in_flight)
        if not d.healthy:
            why = f"{d.id} is unhealthy: its {len(requeue)} request(s) go back to the queue"
        elif d.last_report_s is None:
            why = f"{d.id} has never reported: it is not used until its worker reports"
        else:
            silent = state.now_s - d.last_report_s
            why = (
                f"{d.id} has not reported for {silent:.1f} s (timeout {config.worker_timeout_s:.1f} s): it is marked"
                f" lost and its {len(requeue)} request(s) go back to the queue; check its worker"
            )
        reading = {"last_report_s": d.last_report_s, "now_s": state.now_s, "in_flight": len(requeue)}
        actions.append(MarkLost(d.id, requeue, reason=why, reading=reading))
        if d.assignment == "training" and d.job_id is not None:
            message = f"training job {d.job_id} lost device {d.id}: restart it from its last checkpoint"
            actions.append(Alert(severity="warning", message=message, reason=message, reading=reading))
    return actions


def _estimated_power_w(devices: list[DeviceState]) -> float:
    """The fleet's power from per-device readings, the power model filling in devices without one."""
    total = 0.0
    for d in devices:
        if finite_nonneg(d.power_w):
            total += d.power_w
        elif d.assignment in ("training", "serving", "draining"):
            total += device_power_w(d, 1.0)  # assume busy: an unknown reading must not hide an overshoot
        else:
            total += device_power_w(d, 0.0)
    return total


def _reading(
    state: FleetState, memory: ControlMemory, usable: list[DeviceState]
) -> tuple[float, bool, list[Action], ControlMemory]:
    """The fleet power to act on, whether it was measured, and alerts for readings that were ignored."""
    actions: list[Action] = []
    alerted = set(memory.alerted)
    for d in usable:
        key = f"bad_reading:{d.id}"
        if finite_nonneg(d.power_w):
            alerted.discard(key)
        elif key not in alerted:
            message = f"{d.id} reported power {d.power_w!r} W, which is ignored: check its meter"
            actions.append(Alert(severity="warning", message=message, reason=message, reading={"device": d.id}))
            alerted.add(key)
    trusted = finite_nonneg(state.fleet_power_w)
    if trusted:
        alerted.discard("bad_fleet_reading")
        reading_w = float(state.fleet_power_w)
    else:
        reading_w = _estimated_power_w(list(state.devices))
        if "bad_fleet_reading" not in alerted:
            message = (
                f"fleet power reading {state.fleet_power_w!r} W from {state.power_source!r} is ignored; acting on an"
                f" estimate of {reading_w:.0f} W (no restores until the meters read again): check the meters"
            )
            actions.append(
                Alert(severity="warning", message=message, reason=message, reading={"estimate_w": reading_w})
            )
            alerted.add("bad_fleet_reading")
    return reading_w, trusted, actions, replace(memory, alerted=tuple(sorted(alerted)))


def _after_pools(by_id: dict[str, DeviceState], actions: list[Action]) -> dict[str, DeviceState]:
    """The devices as the pool actions leave them, so the power stage sees a device training starts on as training
    (at the limit the pool stage set), and a device just lent as serving."""
    out = dict(by_id)
    for action in actions:
        if isinstance(action, Lend) and action.device_id in out:
            out[action.device_id] = replace(out[action.device_id], assignment="serving")
        elif isinstance(action, StartTraining):
            for device_id in action.device_ids:
                if device_id in out:
                    out[device_id] = replace(out[device_id], assignment="training", job_id=action.job_id)
        elif isinstance(action, SetPowerLimit) and action.device_id in out:
            out[action.device_id] = replace(out[action.device_id], power_limit_w=action.watts)
    return out


def decide(state: FleetState, config: GovernorConfig) -> Decision:
    """One tick: the actions to apply, in order, the memory for the next tick, and the deployment gate.

    Never raises: if a stage fails on state it cannot read, the tick returns what the other stages decided plus a
    critical Alert naming the failure (the governor keeps running; the previous settings stay in force).
    """
    actions: list[Action] = []
    memory = state.memory
    reading_info: dict[str, float | int | str | None] = {"now_s": state.now_s, "tick": state.tick}

    def failed(stage: str, error: Exception) -> None:
        message = (
            f"governor stage '{stage}' failed on this tick's state and was skipped: {type(error).__name__}: {error}"
        )
        actions.append(Alert(severity="critical", message=message, reason=message, reading=dict(reading_info)))

    try:
        actions.extend(_lost_devices(state, config))
    except Exception as error:  # noqa: BLE001 - the governor must outlive odd state
        failed("lost devices", error)
    usable = [d for d in state.devices if reporting(d, state.now_s, config.worker_timeout_s)]

    reading_w, trusted = math.nan, False
    try:
        reading_w, trusted, alerts, memory = _reading(state, memory, usable)
        actions.extend(alerts)
        reading_info.update(fleet_power_w=reading_w, reading_trusted=int(trusted), power_source=state.power_source)
    except Exception as error:  # noqa: BLE001
        failed("reading", error)

    by_id = {d.id: d for d in usable}
    serving_ids: tuple[str, ...] = tuple(d.id for d in usable if d.assignment == "serving")
    training_ids: tuple[str, ...] = tuple(d.id for d in usable if d.assignment == "training")
    try:
        plan = plan_pools(state, config, usable)
        actions.extend(plan.actions)
        serving_ids, training_ids = plan.serving_ids, plan.training_ids
    except Exception as error:  # noqa: BLE001
        failed("pools", error)

    if math.isfinite(reading_w):
        try:
            by_id = _after_pools(by_id, actions)
            serving = [by_id[i] for i in serving_ids if i in by_id]
            training = [by_id[i] for i in training_ids if i in by_id]
            power_actions, memory = control_power(state, config, memory, serving, training, reading_w, trusted)
            actions.extend(power_actions)
        except Exception as error:  # noqa: BLE001
            failed("power", error)

    try:
        rate = state.serving.arrival_rate_per_s
        gate = deployment_gate(state, config, rate)
    except Exception as error:  # noqa: BLE001
        failed("gate", error)
        gate = GateVerdict("degraded", (f"the deployment gate could not be computed: {error}",))
    try:
        utilizations = [measured_utilization(by_id[i]) for i in serving_ids if i in by_id]
        reading_info["serving_utilization"] = round(sum(utilizations) / len(utilizations), 4) if utilizations else None
    except Exception as error:  # noqa: BLE001
        failed("summary", error)
    return Decision(actions=shed_before_adding(actions), memory=memory, gate=gate, reading=reading_info)


def shed_before_adding(actions: list[Action]) -> tuple[Action, ...]:
    """The actions in the order to apply them: every one that adds load (starting training, lending a device) after
    all the others, each group in its own order.

    The power stage plans on the devices as the pool stage leaves them, so in one tick a training start and the
    serving limit that makes room for it arrive together. Applied in the order they were planned, the new process
    runs at full power while the old limit still stands, and the period in between reads over the cap.
    """
    adding = [a for a in actions if isinstance(a, StartTraining | Lend)]
    return tuple([a for a in actions if not isinstance(a, StartTraining | Lend)] + adding)

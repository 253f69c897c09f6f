"""Pools and quotas, Kueue-style: who holds which device this tick.

Training owns the training-home devices and is guaranteed `training_guarantee` of them: whatever serving borrowed is
reclaimed when a waiting job needs it. Serving owns the serving-home devices (never given away, so the
`serving_floor` holds). Idle training devices are lent to serving while serving has demand for them, up to
`lending_limit`, and handed back when that demand is gone.

Reclaim is a drain, not a kill: the device takes no new serving work, what runs there gets `grace_period_s` to
finish, and at the deadline what is still in flight goes back to the queue (FinishReclaim), never lost. Preemption
takes the lent devices whose in-flight work loses least (sum of progress * expected seconds), and only as many as
the job needs: serving is trimmed, not emptied. Jobs are gang-scheduled in submission order (StrictFIFO): a job
starts only when all its devices are free, and the idle devices it waits for are not lent meanwhile.

Hand-written: Kueue is a Kubernetes controller and there is no Python library for quota-and-lending between two
pools of one machine's devices; the rules above are a few dozen lines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from garrison.core.fleet import JobStatus
from garrison.governor.power import current_knobs, device_power_w, next_period_power_w, peak_power_w
from garrison.governor.state import (
    Action,
    DeviceState,
    FinishReclaim,
    FleetState,
    GovernorConfig,
    Lend,
    Reclaim,
    RejectJob,
    SetPowerLimit,
    StartTraining,
    finite_nonneg,
    serving_demand_device_s_per_s,
)

DEADLINE_SLACK_FRACTION = 0.01


@dataclass(frozen=True)
class PoolPlan:
    """The pool stage's actions, and which devices serve and train once they are applied."""

    actions: tuple[Action, ...]
    serving_ids: tuple[str, ...]
    training_ids: tuple[str, ...]


def serving_devices_wanted(state: FleetState, config: GovernorConfig, level: int | None = None) -> int | None:
    """Serving devices needed for the measured demand at ladder rung `level` (default: the current one), at
    `target_utilization`; None when the service time was never measured."""
    demand = serving_demand_device_s_per_s(state.serving, config.slo_s, level=level)
    if demand is None:
        return None
    per_device = config.target_utilization
    return math.ceil(demand / per_device - 1e-9) if demand > 0 else 0


def preemption_order(devices: Sequence[DeviceState]) -> list[DeviceState]:
    """Lent devices in the order to reclaim them: least in-flight work lost first, then fewest requests, then id."""
    return sorted(devices, key=lambda d: (d.lost_work_s, len(d.in_flight), d.id))


def plan_pools(state: FleetState, config: GovernorConfig, usable: Sequence[DeviceState]) -> PoolPlan:
    """Decide reclaims, job starts, rejections and lending for one tick.

    Args:
        state: the fleet now.
        config: the governor's configuration.
        usable: the healthy devices that report (lost ones are left out by the caller).

    A device is lent only while the fleet's power at the 99.5th percentile of serving load, with that device
    serving at the current rungs, stays under the high watermark: where the cap binds rather than the device count,
    a lent device would only make the power controller lower quality.
    """
    now_s = state.now_s
    actions: list[Action] = []
    fleet_size = len(state.devices)
    training_home_all = [d for d in state.devices if d.home_pool == "training"]
    by_id = {d.id: d for d in usable}
    reading = {"now_s": now_s}

    # 1. Drains that are done (nothing left in flight) or due (deadline passed) finish now.
    freed_for: dict[str | None, list[str]] = {}
    draining_for: dict[str | None, list[str]] = {}
    for d in usable:
        if d.assignment != "draining":
            continue
        deadline = d.draining_deadline_s if d.draining_deadline_s is not None else now_s
        # Ticks jitter by milliseconds; a tick that lands just before the deadline ends the drain rather than the
        # next one, a whole period later.
        if not d.in_flight or now_s >= deadline - DEADLINE_SLACK_FRACTION * config.control_period_s:
            requeue = tuple(f.video_id for f in d.in_flight)
            why = (
                f"drain of {d.id} finished: nothing left in flight"
                if not requeue
                else f"grace period for {d.id} ended with {len(requeue)} request(s) unfinished: back to the queue"
            )
            actions.append(
                FinishReclaim(
                    d.id,
                    d.job_id,
                    requeue,
                    reason=why,
                    reading={**reading, "deadline_s": deadline, "in_flight": len(requeue)},
                )
            )
            freed_for.setdefault(d.job_id, []).append(d.id)
        else:
            draining_for.setdefault(d.job_id, []).append(d.id)

    idle_training = sorted(
        [d.id for d in usable if d.home_pool == "training" and d.assignment == "idle"] + freed_for.pop(None, [])
    )
    committed = sum(1 for d in usable if d.assignment == "training" and d.home_pool == "training")
    lent = [d for d in usable if d.lent]
    reclaimed: set[str] = set()
    started: set[str] = set()
    reserved: set[str] = set()

    # 2. Waiting jobs, in submission order.
    waiting = sorted((j for j in state.jobs if j.status == JobStatus.WAITING), key=lambda j: (j.submitted_s, j.id))
    for job in waiting:
        need = job.devices_requested
        job_reading = {**reading, "devices_requested": need, "fleet_devices": fleet_size}
        if not isinstance(need, int) or need < 1:
            actions.append(
                RejectJob(
                    job.id,
                    reason=f"job {job.id} asks for {need!r} devices; a job needs at least 1",
                    reading=job_reading,
                )
            )
            continue
        if need > fleet_size:
            actions.append(
                RejectJob(
                    job.id,
                    reason=f"job {job.id} asks for {need} devices but the fleet has {fleet_size}: ask for at most"
                    f" {len(training_home_all)} (the training pool)",
                    reading=job_reading,
                )
            )
            continue
        if need > len(training_home_all):
            actions.append(
                RejectJob(
                    job.id,
                    reason=f"job {job.id} asks for {need} devices but the training pool has {len(training_home_all)}"
                    f" of the fleet's {fleet_size} (the rest serve): ask for at most {len(training_home_all)} or"
                    " move devices to the training pool",
                    reading=job_reading,
                )
            )
            continue
        mine_free = freed_for.pop(job.id, [])
        mine_draining = draining_for.pop(job.id, [])
        free = mine_free + [i for i in idle_training if i not in reserved and i not in started]
        if len(free) >= need:
            chosen = tuple(free[:need])
            actions.append(
                StartTraining(
                    job.id,
                    chosen,
                    reason=f"job {job.id} gets the {need} device(s) it asked for",
                    reading={**job_reading, "free_devices": len(free)},
                )
            )
            for device_id in chosen:
                d = by_id.get(device_id)
                if d is not None and d.can_limit and d.current_limit_w < d.max_power_limit_w:  # type: ignore[operator]
                    actions.append(
                        SetPowerLimit(
                            device_id,
                            float(d.max_power_limit_w),  # type: ignore[arg-type]
                            reason=f"{device_id} starts training at its full power limit (serving had lowered it)",
                            reading={"power_limit_w": d.current_limit_w},
                        )
                    )
            started.update(chosen)
            committed += need
            # A freed device this job did not need goes back to the idle pool.
            idle_training.extend(i for i in mine_free if i not in chosen)
            continue
        # Not enough free: reclaim lent devices, within the guarantee, if that makes the job whole.
        have = len(free) + len(mine_draining)
        missing = need - have
        # The guarantee counts what training runs on, what earlier waiting jobs hold, and this job's own devices.
        budget = max(0, config.training_guarantee - committed - have)
        candidates = preemption_order([d for d in lent if d.id not in reclaimed])
        if missing > 0 and missing <= min(budget, len(candidates)):
            deadline_s = now_s + config.grace_period_s
            for d in candidates[:missing]:
                actions.append(
                    Reclaim(
                        d.id,
                        job.id,
                        deadline_s,
                        reason=f"training job {job.id} needs {need} device(s) and {have} are free or draining:"
                        f" reclaiming lent {d.id} (it loses {d.lost_work_s:.1f} s of work at most) by"
                        f" {deadline_s:.1f} s",
                        reading={**job_reading, "lost_work_s": d.lost_work_s, "in_flight": len(d.in_flight)},
                    )
                )
                reclaimed.add(d.id)
            committed += missing
        committed += min(have, need)
        # The job keeps its free devices (StrictFIFO), so they are not lent while it waits.
        reserved.update(free[:need])
        idle_training.extend(i for i in mine_free if i not in idle_training)

    # Drains whose job is no longer waiting (cancelled, rejected) hand their devices to the idle pool.
    for ids in freed_for.values():
        idle_training.extend(ids)

    # 3. Lend idle training devices to serving while it has demand; hand back what it no longer needs.
    # A serving-home device without a worker gets one at the end of this tick (the serving floor), so it counts as
    # serving here: otherwise a lend decided beside it would be judged against the fleet's power without it.
    serving_now = [
        d
        for d in usable
        if (d.assignment == "serving" or (d.home_pool == "serving" and d.assignment == "idle"))
        and d.id not in reclaimed
    ]
    # Lend for the demand at the rung in force: when the power cap has lowered quality, the cap (not the device
    # count) binds, and a lent device would stand idle.
    sized = serving_devices_wanted(state, config)
    if sized is None:  # never measured: lend while requests wait
        sized = len(serving_now) + (1 if state.serving.queue_depth > 0 else 0)
    # Work-conserving borrowing (as Kueue borrows for pending workloads): requests that wait while every serving
    # slot is taken put idle training devices to work, even where the SLO-sized demand would leave them waiting.
    free_slots = sum(max(0, state.serving.concurrency - len(d.in_flight)) for d in serving_now)
    waiting = max(0, state.serving.queue_depth - free_slots)
    wanted = max(sized, len(serving_now) + math.ceil(waiting / max(state.serving.concurrency, 1)))
    limit = len(training_home_all) if config.lending_limit is None else config.lending_limit
    lent_now = sum(1 for d in serving_now if d.home_pool == "training")
    lendable = [i for i in sorted(set(idle_training)) if i not in reserved and i not in started]
    n_serving = len(serving_now)
    demand_reading = {
        **reading,
        "serving_devices": n_serving,
        "serving_devices_wanted": wanted,
        "queue_depth": state.serving.queue_depth,
        "arrival_rate_per_s": state.serving.arrival_rate_per_s,
    }
    serving_set = list(serving_now)
    training_set = [d for d in usable if d.assignment == "training" or d.id in started]
    for device_id in lendable:
        if n_serving >= wanted or lent_now >= limit or state.serving.admission != "open":
            break
        d = by_id[device_id]
        trial = [*serving_set, d]
        trial_ids = {x.id for x in (*trial, *training_set)}
        rest = [x for x in usable if x.id not in trial_ids]
        peak_w = peak_power_w(state, config, trial, training_set, rest)
        # And with what already waits: queued requests fill every serving slot at once, the lent one included, so
        # where that is over the watermark the controller would only hold the lent device down (no gain in work).
        rest_w = math.fsum(x.power_w if finite_nonneg(x.power_w) else x.idle_power_w for x in rest)
        backlog_w = rest_w + next_period_power_w(
            current_knobs(state, config, trial, training_set), state, config, trial, training_set
        )
        # And over the next seconds: a device that gets a worker now (the lent one; a serving-home device the
        # serving floor starts at the end of this tick) loads its model flat out before the demand model sees any
        # load. On 2026-11-27 a demo's first tick saw one request of a burst still arriving, lent the training core
        # beside the serving floor's new worker, and the two loading workers put the next period 7.6% over the cap.
        starting_w = rest_w + math.fsum(
            device_power_w(x, 1.0)
            if x.assignment == "idle" or x.id == device_id
            else (x.power_w if finite_nonneg(x.power_w) else device_power_w(x, 1.0))
            for x in (*trial, *training_set)
        )
        if max(peak_w, backlog_w, starting_w) > config.high_w:
            break
        actions.append(
            Lend(
                device_id,
                reason=f"serving needs {wanted} device(s) and has {n_serving}; {device_id} is idle in the training"
                " pool",
                reading={**demand_reading, "peak_power_w": round(peak_w, 3), "power_cap_w": config.power_cap_w},
            )
        )
        serving_set.append(d)
        n_serving += 1
        lent_now += 1
    # Hand back only devices with nothing running, and only while nothing waits. Hysteresis: either two fewer would
    # still meet the demand, or one fewer would and the device has stood idle for `lend_idle_return_s`.
    spare = [d for d in serving_now if d.lent and not d.in_flight]
    by_id_desc = sorted(spare, key=lambda d: d.id, reverse=True)
    for d in sorted(by_id_desc, key=lambda d: d.idle_since_s if d.idle_since_s is not None else math.inf):
        if state.serving.queue_depth > 0 or n_serving - 1 < sized:
            break
        idle_s = now_s - d.idle_since_s if d.idle_since_s is not None else 0.0
        if n_serving - 1 > sized:
            why = f"serving needs {sized} device(s) and has {n_serving}: {d.id} goes back to the training pool"
        elif idle_s >= config.lend_idle_return_s:
            why = f"lent {d.id} stood idle {idle_s:.1f} s with no request waiting: back to the training pool"
        else:
            continue
        actions.append(Reclaim(d.id, None, now_s, reason=why, reading={**demand_reading, "idle_s": round(idle_s, 3)}))
        reclaimed.add(d.id)
        n_serving -= 1

    lent_ids = {a.device_id for a in actions if isinstance(a, Lend)}
    serving_ids = tuple(sorted({d.id for d in serving_now if d.id not in reclaimed} | lent_ids))
    training_ids = tuple(sorted({d.id for d in usable if d.assignment == "training"} | started))
    return PoolPlan(tuple(actions), serving_ids, training_ids)

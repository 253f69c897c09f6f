"""The governor's control loop, live: read -> decide -> apply -> record, once per control period.

As vLLM's engine core: the policy decides (`policy.decide`, a pure function of `FleetState`), the executor carries
the decision out on real processes, and the loop in between is short. Everything the loop knows that is not in the
processes themselves lives in the store (quality level, admission mode, control memory, reclaims in progress,
training jobs), so a governor killed at any point restarts where it stood: `GovernorRuntime.recover()` stops what the
dead governor left running, requeues what those workers held, and puts interrupted training jobs back in the queue
(they resume from their last checkpoint).

Per-device power comes from `energy.power.DevicePowerSampler` (NVML watts on GPUs; the stated estimate model on CPU
core slots), power limits from `hardware.power_limit` (NVML on GPUs, cgroup CPU bandwidth on core slots).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from garrison.core.fleet import QUALITY_LADDER, JobStatus, VideoStatus
from garrison.core.types import Device
from garrison.energy.power import DevicePowerSampler, PowerSample
from garrison.governor import policy
from garrison.governor.executors.base import Executor, ExecutorView
from garrison.governor.state import (
    Action,
    Alert,
    ControlMemory,
    Decision,
    DeviceState,
    FinishReclaim,
    FleetState,
    GovernorConfig,
    InFlight,
    Lend,
    MarkLost,
    Pool,
    Reclaim,
    RejectJob,
    ServingState,
    SetAdmission,
    SetConcurrency,
    SetPowerLimit,
    SetQuality,
    StartTraining,
    ThrottleTraining,
    TrainingJobState,
)
from garrison.hardware.power_limit import CpuSlotLimiter, PowerLimitError, PowerLimitInfo, power_limit_info
from garrison.hardware.power_limit import set_power_limit as nvml_set_power_limit
from garrison.store import Store

log = logging.getLogger(__name__)

ARRIVAL_WINDOW_S = 60.0
SERVICE_SAMPLES = 50
SLO_WINDOW_S = 300.0


@dataclass
class DevicePowerModel:
    """Idle and fully-busy watts of one device, for the controller's predictions."""

    idle_w: float
    busy_w: float


@dataclass
class RuntimeStats:
    """What the loop did, for the demo's report and the benchmarks."""

    ticks: int = 0
    actions: int = 0
    errors: int = 0
    reclaim_seconds: list[float] = field(default_factory=list)


class GovernorRuntime:
    """One governor over one executor's devices. `tick()` runs one control period; `run()` loops until stopped."""

    def __init__(
        self,
        store: Store,
        executor: Executor,
        config: GovernorConfig,
        home_pools: dict[str, Pool],
        sampler: DevicePowerSampler,
        power_models: dict[str, DevicePowerModel],
        *,
        cpu_limiter: CpuSlotLimiter | None = None,
        clock: Callable[[], float] = time.time,
    ):
        devices = executor.devices
        missing = [d.id for d in devices if d.id not in home_pools or d.id not in power_models]
        if missing:
            raise ValueError(f"devices {missing} have no home pool or power model")
        self.store = store
        self.executor = executor
        self.config = config
        self.home_pools = home_pools
        self.sampler = sampler
        self.power_models = power_models
        self.cpu_limiter = cpu_limiter
        self.clock = clock
        self.devices: dict[str, Device] = {d.id: d for d in devices}
        self.stats = RuntimeStats()
        self.last_sample: PowerSample | None = None
        self.last_decision: Decision | None = None
        self._lost: dict[str, float] = {}  # device id -> until when it is left alone after being marked lost
        self._last_busy_s: dict[str, float] = {}  # serving device id -> last tick it had work in flight (or began)
        config.validate(list(self._device_states({}, {})))

    # --- restart --------------------------------------------------------------------------------------------------

    def recover(self) -> dict[str, Any]:
        """Take over from a governor that died: stop its orphans, requeue their work, requeue its running jobs."""
        killed = []
        for key, pid in (self.store.get_setting("executor.pids", {}) or {}).items():
            try:
                os.killpg(pid, signal.SIGTERM)
                killed.append(key)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.5 if killed else 0)
        for pid in (self.store.get_setting("executor.pids", {}) or {}).values():
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        requeued = []
        for video in self.store.videos_in_progress():
            if self.store.requeue_video(video.id, "the governor restarted"):
                requeued.append(video.id)
        jobs = []
        for job in self.store.list_jobs(status=JobStatus.RUNNING):
            self.store.update_job(job.id, status=JobStatus.WAITING, devices_held=[], pid=None)
            jobs.append(job.id)
        self.store.set_setting("governor.reclaims", {})
        self.store.set_setting("executor.pids", {})
        report = {"killed": killed, "requeued_videos": requeued, "requeued_jobs": jobs}
        if killed or requeued or jobs:
            self.store.record_event("governor_recovered", None, report)
            log.warning("governor recovered: %s", report)
        return report

    # --- read -----------------------------------------------------------------------------------------------------

    def _limit_info(self, device: Device) -> PowerLimitInfo:
        if device.kind == "cpu-core" and self.cpu_limiter is not None:
            return self.cpu_limiter.info(device)
        return power_limit_info(device)

    def _device_states(
        self, in_flight: dict[str, list[InFlight]], power_w: dict[str, float]
    ) -> tuple[DeviceState, ...]:
        """Every device's state, from one look at the executor and the store's pending reclaims."""
        view = self.executor.view()
        reclaims = self.store.get_setting("governor.reclaims", {}) or {}
        return tuple(
            self._device_state(d, in_flight, power_w.get(d.id, math.nan), view, reclaims) for d in self.devices.values()
        )

    def _device_state(
        self,
        device: Device,
        in_flight: dict[str, list[InFlight]],
        power_w: float,
        view: ExecutorView,
        reclaims: dict[str, Any],
    ) -> DeviceState:
        assignment, job_id, deadline = "idle", None, None
        for jid, held in view.training.items():
            if device.id in held:
                assignment, job_id = "training", jid
        if device.id in view.serving:
            assignment = "serving"
        if device.id in view.draining or device.id in reclaims:
            assignment = "draining"
            pending = reclaims.get(device.id, {})
            job_id, deadline = pending.get("job_id"), pending.get("deadline_s")
        info = self._limit_info(device)
        model = self.power_models[device.id]
        idle_since_s = None
        if assignment == "serving":
            now_s = self.clock()
            if in_flight.get(device.id):
                self._last_busy_s[device.id] = now_s
            else:
                idle_since_s = self._last_busy_s.setdefault(device.id, now_s)
        else:
            self._last_busy_s.pop(device.id, None)
        return DeviceState(
            id=device.id,
            home_pool=self.home_pools[device.id],
            assignment=assignment,  # type: ignore[arg-type]
            job_id=job_id,
            power_w=power_w,
            idle_power_w=model.idle_w,
            busy_power_w=model.busy_w,
            power_limit_w=info.current_w,
            min_power_limit_w=info.min_w,
            max_power_limit_w=info.max_w,
            power_limit_settable=info.settable,
            in_flight=tuple(in_flight.get(device.id, [])),
            draining_deadline_s=deadline,
            last_report_s=self._last_report_s(device.id),
            healthy=device.id not in self._lost,
            idle_since_s=idle_since_s,
        )

    def _last_report_s(self, device_id: str) -> float:
        """When the device's worker last showed it is alive: its `worker.<id>.seen` beat, or its start (a worker
        loading its model has not beaten yet). A device with no worker has nothing to report: now."""
        now_s = self.clock()
        worker = self.executor.worker_on(device_id)
        if worker is None:
            return now_s
        worker_id, started_s = worker
        seen = self.store.get_setting(f"worker.{worker_id}.seen")
        return max(float(seen) if isinstance(seen, int | float) else 0.0, started_s)

    def _serving_state(self, now_s: float) -> ServingState:
        stats = self.store.queue_stats()
        recent = self.store.recent_videos(since=now_s - max(ARRIVAL_WINDOW_S, SLO_WINDOW_S))
        arrivals = sum(1 for v in recent if v.created_at >= now_s - ARRIVAL_WINDOW_S)
        by_level: dict[int, list[float]] = {}
        met = done = 0
        for v in recent:
            if v.status == VideoStatus.COMPLETED and v.seconds_wall and v.quality_level is not None:
                by_level.setdefault(v.quality_level, []).append(v.seconds_wall)
                if v.completed_at is not None and v.completed_at >= now_s - SLO_WINDOW_S:
                    done += 1
                    met += (v.completed_at - v.created_at) <= self.config.slo_s
        service = tuple(
            sum(by_level[i][-SERVICE_SAMPLES:]) / len(by_level[i][-SERVICE_SAMPLES:]) if i in by_level else 0.0
            for i in range(len(QUALITY_LADDER))
        )
        level = int(self.store.get_setting("serving.quality_level", 0) or 0)
        serving = ServingState(
            quality_level=level,
            concurrency=int(self.store.get_setting("serving.concurrency", self.config.max_concurrency)),
            admission=self.store.get_setting("admission.mode", "open"),
            queue_depth=stats.queued,
            arrival_rate_per_s=arrivals / ARRIVAL_WINDOW_S,
            service_device_s_by_level=service,
            slo_attainment=(met / done) if done else None,
        )
        per_request = serving.service_device_s(level)
        queued_device_s = stats.queued * per_request if per_request else 0.0
        return ServingState(**{**serving.__dict__, "queued_device_s": queued_device_s})

    def read(self) -> FleetState:
        """The fleet now, as `policy.decide` sees it."""
        now_s = self.clock()
        sample = self.sampler.sample()
        self.last_sample = sample
        in_flight: dict[str, list[InFlight]] = {}
        for v in self.store.videos_in_progress():
            if v.device_id:
                expected = v.estimated_device_s or 0.0
                in_flight.setdefault(v.device_id, []).append(InFlight(v.id, (v.progress or 0) / 100, expected))
        devices = self._device_states(in_flight, sample.power_w_by_device)
        jobs = tuple(
            TrainingJobState(
                id=j.id,
                devices_requested=j.devices_requested,
                devices_held=tuple(j.devices_held or ()),
                status=JobStatus(j.status),
                submitted_s=j.created_at,
            )
            for j in self.store.list_jobs()
            if j.status in (JobStatus.WAITING, JobStatus.RUNNING)
        )
        memory = ControlMemory.from_dict(self.store.get_setting("governor.memory"))
        tick = int(self.store.get_setting("governor.tick", 0) or 0) + 1
        return FleetState(
            now_s=now_s,
            devices=devices,
            serving=self._serving_state(now_s),
            jobs=jobs,
            fleet_power_w=sample.total_w if sample.interval_s > 0 else math.nan,
            power_source=sample.source,
            tick=tick,
            memory=memory,
        )

    # --- apply ----------------------------------------------------------------------------------------------------

    def _set_limit(self, device_id: str, watts: float) -> float:
        device = self.devices[device_id]
        if device.kind == "cpu-core":
            if self.cpu_limiter is None:
                raise PowerLimitError(f"{device_id}: no CPU limiter configured")
            return self.cpu_limiter.set(device, watts)
        return nvml_set_power_limit(device, watts)

    def apply(self, action: Action, state: FleetState) -> None:
        """Carry out one action. Raises on failure; `tick` records the failure and goes on."""
        store, ex, now_s = self.store, self.executor, state.now_s
        if isinstance(action, StartTraining):
            job = store.get_job(action.job_id)
            ex.start_training(job.id, list(job.command), list(action.device_ids))
            store.update_job(job.id, status=JobStatus.RUNNING, started_at=now_s, devices_held=list(action.device_ids))
        elif isinstance(action, RejectJob):
            store.update_job(action.job_id, status=JobStatus.FAILED, finished_at=now_s, error=action.reason)
        elif isinstance(action, Lend):
            ex.start_serving(action.device_id)
        elif isinstance(action, Reclaim):
            ex.drain_serving(action.device_id)
            reclaims = dict(store.get_setting("governor.reclaims", {}) or {})
            reclaims[action.device_id] = {"job_id": action.job_id, "deadline_s": action.deadline_s, "since_s": now_s}
            store.set_setting("governor.reclaims", reclaims)
        elif isinstance(action, FinishReclaim):
            ex.stop_serving(action.device_id)
            for video_id in action.requeue_video_ids:  # the executor requeued what the worker held; belt and braces
                store.requeue_video(video_id, f"{action.device_id} reclaimed for training")
            reclaims = dict(store.get_setting("governor.reclaims", {}) or {})
            pending = reclaims.pop(action.device_id, None)
            store.set_setting("governor.reclaims", reclaims)
            if pending:
                self.stats.reclaim_seconds.append(now_s - pending["since_s"])
        elif isinstance(action, SetQuality):
            store.set_setting("serving.quality_level", action.level)
        elif isinstance(action, SetConcurrency):
            store.set_setting("serving.concurrency", action.per_device)
        elif isinstance(action, SetAdmission):
            store.set_setting("admission.mode", action.mode)
        elif isinstance(action, SetPowerLimit):
            self._set_limit(action.device_id, action.watts)
        elif isinstance(action, ThrottleTraining):
            self._set_limit(action.device_id, action.watts)
            store.record_event(
                "training_throttled", action.job_id, {"device_id": action.device_id, "watts": action.watts}
            )
        elif isinstance(action, MarkLost):
            # Stop it and leave it alone for one timeout; then the floor (or a Lend) starts a fresh worker there.
            self._lost[action.device_id] = now_s + self.config.worker_timeout_s
            ex.stop_serving(action.device_id)
            for video_id in action.requeue_video_ids:
                store.requeue_video(video_id, f"{action.device_id} stopped reporting")
        elif isinstance(action, Alert):
            level = {"info": logging.INFO, "warning": logging.WARNING}.get(action.severity, logging.ERROR)
            log.log(level, "ALERT %s", action.message)
            store.record_event("alert", None, {"severity": action.severity, "message": action.message})
        else:
            raise TypeError(f"unknown action {type(action).__name__}")

    def _ensure_serving_floor(self, state: FleetState) -> None:
        """Serving-home devices always run a worker (restarting one that died)."""
        view = self.executor.view()
        for d in state.devices:
            if d.home_pool == "serving" and d.healthy and d.id not in view.serving and d.id not in view.draining:
                if not any(d.id in held for held in view.training.values()):
                    self.executor.start_serving(d.id)

    def _reap(self, now_s: float) -> None:
        for event in self.executor.poll():
            if event.kind == "job_exited":
                progress = self.executor.training_progress(event.key)
                status = JobStatus.SUCCEEDED if event.returncode == 0 else JobStatus.FAILED
                job = self.store.get_job(event.key)
                if job.status == JobStatus.RUNNING:
                    self.store.update_job(
                        event.key,
                        status=status,
                        finished_at=now_s,
                        devices_held=[],
                        steps_done=progress.steps,
                        error=None if status == JobStatus.SUCCEEDED else f"exit {event.returncode}: see {event.detail}",
                    )
            self.store.record_event(event.kind, event.key, {"returncode": event.returncode, "detail": event.detail})

    def _record(self, state: FleetState, decision: Decision) -> None:
        store = self.store
        for action in decision.actions:
            target = getattr(action, "device_id", None) or getattr(action, "job_id", None)
            store.record_decision(state.tick, action.kind, target, action.reason, dict(action.reading))
        view = self.executor.view()
        allocation = {"training": 0, "serving": 0, "lent": 0, "draining": 0, "idle": 0}
        for d in state.devices:
            if d.id in view.draining:
                allocation["draining"] += 1
            elif d.id in view.serving:
                allocation["lent" if d.home_pool == "training" else "serving"] += 1
            elif any(d.id in held for held in view.training.values()):
                allocation["training"] += 1
            else:
                allocation["idle"] += 1
        power_w = state.fleet_power_w if math.isfinite(state.fleet_power_w) else 0.0
        extra = {
            "power_w_by_device": self.last_sample.power_w_by_device if self.last_sample else {},
            # each core slot's logical CPU as a whole, other programs included (empty for GPUs)
            "cpu_utilisation_by_device": self.last_sample.cpu_utilisation_by_device if self.last_sample else {},
            "power_limit_w_by_device": {d.id: d.power_limit_w for d in state.devices},
            "power_source": state.power_source,
            "quality_level": int(store.get_setting("serving.quality_level", 0) or 0),
            "admission": store.get_setting("admission.mode", "open"),
            "slo_attainment": state.serving.slo_attainment,
            "devices": {d.id: d.assignment for d in state.devices},
            "in_progress": sum(len(d.in_flight) for d in state.devices),
            "jobs": {j.id: self.executor.training_progress(j.id).steps for j in state.jobs},
        }
        store.record_sample(
            state.now_s,
            power_w,
            self.config.power_cap_w,
            allocation,
            state.serving.queue_depth,
            decision.gate.state,
            extra,
        )
        store.set_setting("gate.state", decision.gate.state)
        store.set_setting("gate.reason", " ".join(decision.gate.reasons))
        store.set_setting("governor.memory", decision.memory.to_dict())
        store.set_setting("governor.tick", state.tick)
        store.set_setting("fleet.devices", [
            {"id": d.id, "home_pool": d.home_pool, "assignment": d.assignment, "job_id": d.job_id,
             "power_w": d.power_w if math.isfinite(d.power_w) else None, "power_limit_w": d.power_limit_w,
             "in_flight": [f.video_id for f in d.in_flight], "healthy": d.healthy}
            for d in state.devices
        ])  # fmt: skip
        store.set_setting("fleet.power", {"power_w": power_w, "power_cap_w": self.config.power_cap_w,
                                          "source": state.power_source, "ts": state.now_s})  # fmt: skip
        pids = self.executor.pids() if hasattr(self.executor, "pids") else {}
        store.set_setting("executor.pids", pids)

    def tick(self) -> Decision:
        """One control period: reap, read, decide, apply, record."""
        now_s = self.clock()
        self._lost = {d: until for d, until in self._lost.items() if until > now_s}
        self._reap(now_s)
        state = self.read()
        decision = policy.decide(state, self.config)
        for action in decision.actions:
            try:
                self.apply(action, state)
                self.stats.actions += 1
            except Exception as exc:  # one failed action must not stop the loop; it is logged and recorded
                self.stats.errors += 1
                log.exception("action %s failed", action.kind)
                self.store.record_event("action_failed", None, {"action": action.to_dict(), "error": str(exc)})
        try:
            self._ensure_serving_floor(state)
        except Exception as exc:
            log.exception("could not start a serving worker")
            self.store.record_event("action_failed", None, {"action": "start_serving", "error": str(exc)})
        self.store.recover_expired(now_s)
        self._record(state, decision)
        self.last_decision = decision
        self.stats.ticks += 1
        return decision

    def run(self, stop: threading.Event, on_tick: Callable[[Decision], None] | None = None) -> None:
        """Tick every control period until `stop` is set; the executor is shut down on the way out."""
        period = self.config.control_period_s
        next_s = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    decision = self.tick()
                    if on_tick is not None:
                        on_tick(decision)
                except Exception:  # the governor itself never dies of one bad tick
                    self.stats.errors += 1
                    log.exception("control tick failed")
                next_s += period
                stop.wait(max(0.0, next_s - time.monotonic()))
        finally:
            self.executor.shutdown()
            self.store.set_setting("executor.pids", {})

"""What the governor's policies read and return: the fleet's state, its configuration, the actions, the decision.

Everything here is a frozen dataclass built from plain numbers, so the live control loop (meters + store) and the
planner (simulated devices in simulated time) construct the same `FleetState`, and `policy.decide` is a pure function
of it. Time comes in as `now_s` (unix seconds live, simulated seconds in the planner); nothing here reads a clock.

Units are in the names: `_w` watts, `_s` seconds, `_j` joules. Device counts are plain ints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from garrison.core.fleet import QUALITY_LADDER, JobStatus

Pool = Literal["training", "serving"]
Assignment = Literal["training", "serving", "idle", "draining"]
AdmissionMode = Literal["open", "queue", "shed"]
Severity = Literal["info", "warning", "critical"]

POOLS: tuple[str, ...] = ("training", "serving")
ASSIGNMENTS: tuple[str, ...] = ("training", "serving", "idle", "draining")
ADMISSION_MODES: tuple[str, ...] = ("open", "queue", "shed")
# Only scales a ladder rung no video has been measured at yet. 12, not the pipeline's default 24: at 24 the fallback
# would price rung 1 (8 steps) at a third of rung 0; at 12 it prices it at two thirds, an over-estimate of its cost
# and power, which errs on the side of the cap until a measurement replaces it.
DEFAULT_REQUESTED_STEPS = 12


class GovernorConfigError(ValueError):
    """A governor configuration that cannot hold; the message says what to change."""


def finite_nonneg(value: float | None) -> bool:
    """True for a usable reading: a finite number >= 0 (not None, NaN, inf or negative)."""
    return value is not None and isinstance(value, int | float) and math.isfinite(value) and value >= 0


def relative_cost(level: int, requested_steps: int = DEFAULT_REQUESTED_STEPS) -> float:
    """Analytic cost of ladder rung `level` relative to rung 0: steps kept times pixels kept.

    Only a fallback for rungs the fleet has not measured yet (`ServingState.service_device_s_by_level`).
    """
    rung = QUALITY_LADDER[level]
    return rung.steps_for(requested_steps) / requested_steps * rung.native_scale**2


@dataclass(frozen=True)
class GovernorConfig:
    """The governor's knobs. Watermarks are fractions of `power_cap_w`; device counts are whole devices.

    Attributes:
        power_cap_w: the fleet's power budget in watts (all devices together, as the meters read them).
        training_guarantee: devices training can always get back from serving (reclaimed within the grace period).
        serving_floor: serving-home devices that are never lent away from serving.
        lending_limit: most training-home devices lent to serving at once; None lends every idle one.
        high_watermark: above `power_cap_w * high_watermark` the controller steps serving down.
        low_watermark: below `power_cap_w * low_watermark` for `restore_hold_periods` periods it steps back up.
        control_period_s: seconds between two ticks of `decide`.
        grace_period_s: seconds a reclaimed device's serving work gets to finish before it is requeued.
        slo_s: a video request's target time from submission to completion.
        slo_target: fraction of requests that must meet `slo_s` for the service to count as fully online.
        worker_timeout_s: a device silent this long is marked lost and its in-flight work requeued.
        restore_hold_periods: periods below the low watermark before one rung is restored.
        max_concurrency: requests a serving device runs at once when unconstrained (the concurrency rungs go
            from here down to 1).
        power_limit_step_fraction: each power-limit rung lowers a device's limit by this fraction of its
            settable range (max - min).
        target_utilization: serving devices are sized so they are busy at most this fraction of the time
            (queueing headroom for the SLO).
        lend_idle_return_s: a lent device with nothing in flight and an empty queue for this long goes back to the
            training pool, even when the measured demand would keep it (a burst's arrivals weigh on the demand
            estimate for a whole arrival window after the burst is served); inf keeps lent devices until reclaim.
    """

    power_cap_w: float
    training_guarantee: int = 0
    serving_floor: int = 0
    lending_limit: int | None = None
    high_watermark: float = 0.97
    low_watermark: float = 0.85
    control_period_s: float = 1.0
    grace_period_s: float = 5.0
    slo_s: float = 60.0
    slo_target: float = 0.95
    worker_timeout_s: float = 10.0
    restore_hold_periods: int = 3
    max_concurrency: int = 1
    power_limit_step_fraction: float = 0.25
    target_utilization: float = 0.8
    lend_idle_return_s: float = 5.0

    @property
    def high_w(self) -> float:
        return self.power_cap_w * self.high_watermark

    @property
    def low_w(self) -> float:
        return self.power_cap_w * self.low_watermark

    def validate(self, devices: Sequence[DeviceState] = ()) -> None:
        """Raise GovernorConfigError when this configuration cannot hold on `devices` (or at all).

        Checked: numbers in range, watermarks ordered, the guarantee and the floor fit their pools, and the cap is
        above the fleet's idle draw (below it, no decision could ever hold the cap).
        """
        problems: list[str] = []
        if not (isinstance(self.power_cap_w, int | float) and math.isfinite(self.power_cap_w) and self.power_cap_w > 0):
            problems.append(f"power_cap_w must be a positive number of watts, got {self.power_cap_w!r}")
        for name in ("training_guarantee", "serving_floor", "restore_hold_periods"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                problems.append(f"{name} must be a whole number >= 0, got {value!r}")
        if self.lending_limit is not None and (not isinstance(self.lending_limit, int) or self.lending_limit < 0):
            problems.append(f"lending_limit must be a whole number >= 0 or None (no limit), got {self.lending_limit!r}")
        if not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
            problems.append(f"max_concurrency must be a whole number >= 1, got {self.max_concurrency!r}")
        if not 0 < self.low_watermark < self.high_watermark <= 1:
            problems.append(
                f"watermarks must satisfy 0 < low < high <= 1 (fractions of the cap), got low={self.low_watermark}"
                f" high={self.high_watermark}"
            )
        for name in ("control_period_s", "slo_s", "worker_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"{name} must be a positive number of seconds, got {value!r}")
        if not (isinstance(self.lend_idle_return_s, int | float) and self.lend_idle_return_s >= 0):
            problems.append(f"lend_idle_return_s must be >= 0 seconds (inf: never), got {self.lend_idle_return_s!r}")
        if not (math.isfinite(self.grace_period_s) and self.grace_period_s >= 0):
            problems.append(f"grace_period_s must be >= 0 seconds, got {self.grace_period_s!r}")
        if not 0 < self.power_limit_step_fraction <= 1:
            problems.append(f"power_limit_step_fraction must be in (0, 1], got {self.power_limit_step_fraction!r}")
        if not 0 < self.target_utilization <= 1:
            problems.append(f"target_utilization must be in (0, 1], got {self.target_utilization!r}")
        if not 0 <= self.slo_target <= 1:
            problems.append(f"slo_target must be in [0, 1], got {self.slo_target!r}")
        if devices:
            n_training = sum(1 for d in devices if d.home_pool == "training")
            n_serving = sum(1 for d in devices if d.home_pool == "serving")
            if self.training_guarantee + self.serving_floor > len(devices):
                problems.append(
                    f"training_guarantee ({self.training_guarantee}) + serving_floor ({self.serving_floor}) is more"
                    f" than the fleet's {len(devices)} devices: lower one of them or add devices"
                )
            if self.training_guarantee > n_training:
                problems.append(
                    f"training_guarantee is {self.training_guarantee} but only {n_training} devices have"
                    " home_pool='training': move devices to the training pool or lower the guarantee"
                )
            if self.serving_floor > n_serving:
                problems.append(
                    f"serving_floor is {self.serving_floor} but only {n_serving} devices have home_pool='serving':"
                    " move devices to the serving pool or lower the floor"
                )
            idle_w = sum(d.idle_power_w for d in devices if finite_nonneg(d.idle_power_w))
            if math.isfinite(self.power_cap_w) and self.power_cap_w > 0 and idle_w >= self.low_w:
                problems.append(
                    f"power_cap_w {self.power_cap_w:.0f} W leaves {self.low_w:.0f} W below the low watermark, but"
                    f" the fleet draws {idle_w:.0f} W idle: no decision can hold that cap; raise the cap above"
                    f" {idle_w / self.low_watermark:.0f} W or remove devices"
                )
            ids = [d.id for d in devices]
            if len(set(ids)) != len(ids):
                problems.append(f"device ids must be unique, got {sorted(ids)}")
        if problems:
            raise GovernorConfigError("invalid governor configuration: " + "; ".join(problems))


@dataclass(frozen=True)
class InFlight:
    """One video request running on a device: how far it is (0..1) and how long it was expected to take."""

    video_id: str
    progress: float = 0.0
    expected_s: float = 0.0

    @property
    def work_done_s(self) -> float:
        """Seconds of work that would be lost if this request were requeued now."""
        progress = self.progress if math.isfinite(self.progress) else 0.0
        expected = self.expected_s if math.isfinite(self.expected_s) else 0.0
        return min(max(progress, 0.0), 1.0) * max(expected, 0.0)


@dataclass(frozen=True)
class DeviceState:
    """One device as the governor sees it this tick.

    `power_w` is the last meter reading (NaN when there is none); `idle_power_w` and `busy_power_w` are the device's
    power model (idle, and fully busy at its maximum power limit). `job_id` is the training job holding the device,
    or, while `assignment == "draining"`, the job it is being reclaimed for (None: returned to the training pool).
    `idle_since_s` is when a serving device last had work in flight (or started serving); None while work runs
    there, or when it is not known.
    """

    id: str
    home_pool: Pool
    assignment: Assignment = "idle"
    job_id: str | None = None
    power_w: float = math.nan
    idle_power_w: float = 0.0
    busy_power_w: float = 0.0
    power_limit_w: float | None = None
    min_power_limit_w: float | None = None
    max_power_limit_w: float | None = None
    power_limit_settable: bool = False
    in_flight: tuple[InFlight, ...] = ()
    draining_deadline_s: float | None = None
    last_report_s: float | None = None
    healthy: bool = True
    idle_since_s: float | None = None

    @property
    def lent(self) -> bool:
        """A training-home device doing serving work."""
        return self.home_pool == "training" and self.assignment == "serving"

    @property
    def lost_work_s(self) -> float:
        """Work (seconds) lost if this device's in-flight requests were requeued now: what preemption minimizes."""
        return sum(f.work_done_s for f in self.in_flight)

    @property
    def can_limit(self) -> bool:
        """True when NVML (or the simulator) can set this device's power limit within a known range."""
        return (
            self.power_limit_settable
            and finite_nonneg(self.min_power_limit_w)
            and finite_nonneg(self.max_power_limit_w)
            and self.max_power_limit_w >= self.min_power_limit_w  # type: ignore[operator]
        )

    @property
    def current_limit_w(self) -> float:
        """The device's power limit now; its maximum (or busy power) when none was set or reported."""
        if finite_nonneg(self.power_limit_w):
            return float(self.power_limit_w)  # type: ignore[arg-type]
        if finite_nonneg(self.max_power_limit_w):
            return float(self.max_power_limit_w)  # type: ignore[arg-type]
        return max(self.busy_power_w, self.idle_power_w)


@dataclass(frozen=True)
class ServingState:
    """The serving side as a whole.

    Attributes:
        quality_level: index into core.fleet.QUALITY_LADDER new requests are rendered at.
        concurrency: requests each serving device runs at once now (1..config.max_concurrency).
        admission: "open" (admit and run), "queue" (admit into the queue; workers finish what they run and start
            nothing new until power allows) or "shed" (as queue, and new requests are refused with a retry-after).
        queue_depth: requests waiting.
        queued_device_s: predicted device-seconds of the waiting requests at `quality_level`.
        arrival_rate_per_s: measured rate of admitted requests.
        service_device_s_by_level: measured mean device-seconds per request at each ladder rung (index = rung);
            a missing or non-positive entry means "not measured" and is scaled from a measured rung.
        slo_attainment: fraction of recent requests that met the SLO; None when there were none.
    """

    quality_level: int = 0
    concurrency: int = 1
    admission: AdmissionMode = "open"
    queue_depth: int = 0
    queued_device_s: float = 0.0
    arrival_rate_per_s: float = 0.0
    service_device_s_by_level: tuple[float, ...] = ()
    slo_attainment: float | None = None

    def service_device_s(self, level: int) -> float | None:
        """Mean device-seconds of one request at rung `level`: measured, else scaled from the nearest measured rung
        by the ladder's analytic relative cost; None when no rung was ever measured."""
        level = min(max(level, 0), len(QUALITY_LADDER) - 1)
        measured = {
            i: s for i, s in enumerate(self.service_device_s_by_level[: len(QUALITY_LADDER)]) if finite_nonneg(s) and s
        }
        if level in measured:
            return measured[level]
        if not measured:
            return None
        nearest = min(measured, key=lambda i: (abs(i - level), i))
        return measured[nearest] * relative_cost(level) / relative_cost(nearest)


@dataclass(frozen=True)
class TrainingJobState:
    """A training job: how many devices it asked for, which it holds, its status, and whether it is throttled."""

    id: str
    devices_requested: int
    devices_held: tuple[str, ...] = ()
    status: JobStatus = JobStatus.WAITING
    submitted_s: float = 0.0
    throttled: bool = False


@dataclass(frozen=True)
class ControlMemory:
    """What the controller carries from one tick to the next; persisted with each decision so a restarted
    governor resumes where it stood.

    Attributes:
        periods_below_low: consecutive periods the reading was below the low watermark.
        periods_above_cap: periods (ever) the reading was above the cap, and `periods` all periods seen:
            the "over cap in at most 1% of periods" figure, live.
        last_reading_w: the last valid fleet reading.
        settle_until_s: until then, a step taken earlier is still taking effect; the controller does not escalate
            again unless the reading is above the cap itself.
        expected_power_w: what the controller predicted the reading would settle at after its last step.
        rungs: the last steps taken, newest last ("down:quality:2", "up:admission:open"), for operators.
        alerted: alert keys already raised and still true (so an alert is sent once, not every period).
    """

    periods_below_low: int = 0
    periods_above_cap: int = 0
    periods: int = 0
    last_reading_w: float | None = None
    settle_until_s: float = -math.inf
    expected_power_w: float | None = None
    rungs: tuple[str, ...] = ()
    alerted: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict for the store (inf becomes None)."""
        out = asdict(self)
        out["settle_until_s"] = None if not math.isfinite(self.settle_until_s) else self.settle_until_s
        out["rungs"] = list(self.rungs)
        out["alerted"] = list(self.alerted)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ControlMemory:
        """Rebuild from `to_dict` output; unknown keys are ignored and missing ones take defaults."""
        if not data:
            return cls()
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if kwargs.get("settle_until_s") is None:
            kwargs["settle_until_s"] = -math.inf
        for key in ("rungs", "alerted"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


@dataclass(frozen=True)
class FleetState:
    """Everything `decide` sees at one tick. `fleet_power_w` is the meters' total (NaN when unread)."""

    now_s: float
    devices: tuple[DeviceState, ...]
    serving: ServingState = field(default_factory=ServingState)
    jobs: tuple[TrainingJobState, ...] = ()
    fleet_power_w: float = math.nan
    power_source: str = "estimate"
    tick: int = 0
    memory: ControlMemory = field(default_factory=ControlMemory)

    def device(self, device_id: str) -> DeviceState:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise KeyError(f"no device {device_id!r} in the fleet")


# --- actions ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Action:
    """Something the executor must do. `reason` says why in words an operator can act on; `reading` holds the
    measured values that caused it (watts, seconds, counts)."""

    reason: str = ""
    reading: Mapping[str, float | int | str | None] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """snake_case name of the action ("set_quality"), as the store records it."""
        name = type(self).__name__
        return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict with a `kind` key, for the store and the logs."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else dict(value) if f.name == "reading" else value
        return out


@dataclass(frozen=True)
class StartTraining(Action):
    """Start training job `job_id` on `device_ids` (all of them free now)."""

    job_id: str
    device_ids: tuple[str, ...]


@dataclass(frozen=True)
class RejectJob(Action):
    """Refuse a training job that can never run as asked (the reason says why and what to ask instead)."""

    job_id: str


@dataclass(frozen=True)
class Lend(Action):
    """Give idle training-home device `device_id` to serving (start a serving worker there)."""

    device_id: str


@dataclass(frozen=True)
class Reclaim(Action):
    """Take lent device `device_id` back for training job `job_id` (None: back to the idle training pool): it takes
    no new serving work from now on and finishes what runs until `deadline_s`."""

    device_id: str
    job_id: str | None
    deadline_s: float


@dataclass(frozen=True)
class FinishReclaim(Action):
    """The reclaim of `device_id` ends: stop its serving worker, put `requeue_video_ids` (still in flight) back on
    the queue, and hand the device to `job_id` (or the idle training pool)."""

    device_id: str
    job_id: str | None
    requeue_video_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetQuality(Action):
    """Render new requests at ladder rung `level` (core.fleet.QUALITY_LADDER)."""

    level: int


@dataclass(frozen=True)
class SetConcurrency(Action):
    """Run at most `per_device` requests at once on each serving device."""

    per_device: int


@dataclass(frozen=True)
class SetPowerLimit(Action):
    """Set `device_id`'s power limit to `watts` (NVML on a GPU)."""

    device_id: str
    watts: float


@dataclass(frozen=True)
class SetAdmission(Action):
    """Switch admission to `mode` ("open", "queue" or "shed")."""

    mode: AdmissionMode


@dataclass(frozen=True)
class ThrottleTraining(Action):
    """Last resort: lower the power limit of training job `job_id`'s device to `watts` (always with an Alert).
    Raising it back uses the same action with the higher limit."""

    job_id: str
    device_id: str
    watts: float


@dataclass(frozen=True)
class Alert(Action):
    """Tell an operator: `severity` is "info", "warning" or "critical"."""

    severity: Severity
    message: str


@dataclass(frozen=True)
class MarkLost(Action):
    """`device_id` stopped reporting (or is unhealthy): stop using it and requeue `requeue_video_ids`."""

    device_id: str
    requeue_video_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateVerdict:
    """The deployment gate: "online", "degraded" or "offline", and why, one sentence an operator can act on each."""

    state: Literal["online", "degraded", "offline"]
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    """One tick's output: the actions in the order to apply them, the memory to carry, and the gate."""

    actions: tuple[Action, ...]
    memory: ControlMemory
    gate: GateVerdict
    reading: Mapping[str, float | int | str | None] = field(default_factory=dict)

    def of(self, kind: type[Action]) -> list[Action]:
        """The actions of one type, in order."""
        return [a for a in self.actions if isinstance(a, kind)]


def serving_demand_device_s_per_s(serving: ServingState, slo_s: float, level: int | None = None) -> float | None:
    """Device-seconds per second serving must deliver at rung `level` (default: the current one): the arrivals, plus
    the waiting queue drained within one SLO. None when no rung's service time was ever measured."""
    level = serving.quality_level if level is None else level
    per_request_s = serving.service_device_s(level)
    if per_request_s is None:
        return None
    rate = serving.arrival_rate_per_s if finite_nonneg(serving.arrival_rate_per_s) else 0.0
    queued = serving.queued_device_s if finite_nonneg(serving.queued_device_s) else 0.0
    current_s = serving.service_device_s(serving.quality_level) or per_request_s
    queued_at_level = queued * per_request_s / current_s  # the queue was priced at the current rung
    return rate * per_request_s + queued_at_level / slo_s


def reporting(device: DeviceState, now_s: float, worker_timeout_s: float) -> bool:
    """True for a healthy device that reported within `worker_timeout_s` (a device that never reported is not)."""
    if not device.healthy or device.last_report_s is None or not math.isfinite(device.last_report_s):
        return False
    return now_s - device.last_report_s <= worker_timeout_s

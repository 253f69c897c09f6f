"""The fleet simulator: the governor's own `policy.decide`, unchanged, over virtual devices in simulated time.

Per site, as the live runtime (governor/runtime.py) does per control period: build a `FleetState` from the
simulated devices' readings, call `policy.decide`, apply its actions (lend, reclaim, finish a reclaim and requeue
what was in flight, start and reject training, quality, concurrency, power limits, admission, training throttle),
then let the period's discrete events happen: arrivals, starts and completions of video requests, training
progress and job ends.

How it scales to 100,000 devices and 10 million requests a day on two cores (measured: benchmarks/planner_scale.py):

- Devices are grouped into units: a governor device stands for a block of identical physical devices (same site,
  chip and pool; at most `max_units_per_site` per site). The governor sees a unit as one device with the block's
  power (idle, busy, limits times the block size), running block size x max_concurrency requests at once, so its
  demand model and the Poisson peak of requests running at once are those of the devices one by one. Fidelity
  cost: lending, reclaiming and power limits move whole blocks, a job's device count is rounded up to whole
  blocks, and the concurrency rung counts requests per block. With `max_units_per_site` >= the device count, a
  unit is one device and nothing is aggregated.
- Requests are not events in a Python heap of their own: each serving slot (a device runs `max_concurrency` slots,
  each at 1/`max_concurrency` of its speed) is an entry (free_at_s, unit) in a heapq, and a FIFO queue is served by
  the recursion start = max(arrival, earliest free slot), one `heapreplace` per request (Kiefer and Wolfowitz's
  G/G/c recursion). Starts are only committed inside the current control period, so the governor's next decision
  (fewer slots, lower quality, a drain) applies to everything still waiting. This is an exact discrete-event
  simulation of a FIFO multi-server queue, at about one C-level heap operation per request.
- Busy time per unit and period is binned with numpy (np.add.at) from each period's starts and ends, and gives the
  devices' power readings (idle + (busy - idle) x utilization, clipped at the power limit), as the meters would.

Why hand-written: SimPy (measured against it in benchmarks/planner_scale.py) puts every request through a
generator and an event object, about two orders of magnitude slower than the recursion above; no library runs a
caller's pure policy function as the scheduler of a multi-server queue.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from garrison.core.fleet import QUALITY_LADDER, JobStatus
from garrison.governor import policy
from garrison.governor.state import (
    Alert,
    ControlMemory,
    DeviceState,
    FinishReclaim,
    FleetState,
    GovernorConfig,
    GovernorConfigError,
    InFlight,
    Lend,
    MarkLost,
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
from garrison.hardware.catalog import Chip
from garrison.planner.demand import arrival_times_s, request_kinds
from garrison.planner.profiles import (
    BUILTIN_ACTIVE_W_PER_CORE,
    BUILTIN_IDLE_W_PER_CORE,
    CPU_CHIP,
    CostProfile,
)
from garrison.planner.scenario import Scenario, ScenarioError, Site

ARRIVAL_WINDOW_S = 60.0  # as the live runtime measures the arrival rate
SLO_WINDOW_S = 300.0
SERVICE_SAMPLES = 50
MAX_LIMIT_CHANGES = 1000  # power-limit changes kept in a result's extra (a replay's timeline; a fleet's would be long)


def _reason_kind(reason: str) -> str:
    """A gate reason's kind: its text up to the first digit (the reasons are templates filled with figures)."""
    match = re.search(r"\d", reason)
    return reason[: match.start()] if match else reason


@dataclass(frozen=True)
class ChipPower:
    """Per physical device: idle and busy watts, and the settable power-limit range."""

    idle_w: float
    busy_w: float
    min_limit_w: float
    max_limit_w: float


@dataclass
class Unit:
    """A block of `size` identical devices the governor sees as one device."""

    id: str
    chip: str
    home_pool: str
    size: int
    power: ChipPower
    assignment: str = "idle"
    job_id: str | None = None
    deadline_s: float | None = None
    limit_w: float = 0.0  # per physical device


@dataclass
class JobRun:
    """A training job in the simulation: its units, its work done and when it ended."""

    name: str
    units_requested: int
    duration_s: float
    start_s: float
    status: JobStatus = JobStatus.WAITING
    units: tuple[int, ...] = ()
    work_s: float = 0.0
    started_s: float | None = None
    finished_s: float | None = None
    throttled: bool = False
    reason: str = ""


@dataclass
class SiteResult:
    """One site's simulated run: per-request arrays, per-period series, jobs, alerts and gate."""

    name: str
    period_s: float
    power_cap_w: float  # chip watts (the governor's cap)
    facility_factor: float  # chip watts x this = facility watts
    arrival_s: np.ndarray
    kind: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    chip_of_request: np.ndarray
    level: np.ndarray
    shed: np.ndarray
    power_w: np.ndarray  # chip watts per period
    queue_depth: np.ndarray
    quality: np.ndarray
    serving_devices: np.ndarray
    training_devices: np.ndarray
    admission: list[str]
    gate: dict[str, int]
    gate_reasons: dict[str, str]  # per gate state: an example of its most frequent kind of reason
    gate_reason_periods: dict[str, dict[str, int]]  # per gate state: periods per kind of reason (its latest text)
    jobs: list[JobRun]
    alerts: dict[str, int]
    alert_examples: list[str]
    requeued: int
    devices: int
    units: int
    serving_slot_s: float
    serving_busy_s: float
    training_device_s: float
    decide_calls: int
    events: int
    extra: dict[str, Any] = field(default_factory=dict)


def chip_power(scenario: Scenario, chip_key: str, chip: Chip | None, serving_busy_w: float) -> ChipPower:
    """The power model of one device of `chip_key` (see Simulation's docstring for the assumptions)."""
    sim = scenario.simulation
    if chip_key == CPU_CHIP:
        # The estimate meter's CPU core model, and the cgroup limiter's range (hardware/power_limit.py).
        idle, busy = BUILTIN_IDLE_W_PER_CORE, BUILTIN_ACTIVE_W_PER_CORE
        return ChipPower(idle, busy, idle + 0.1 * (busy - idle), busy)
    assert chip is not None
    idle = sim.idle_fraction * chip.tdp_w
    busy = max(min(serving_busy_w, chip.tdp_w), idle)
    return ChipPower(idle, busy, sim.min_power_limit_fraction * chip.tdp_w, chip.tdp_w)


def speed_under_limit(
    chip: str, power: ChipPower, limit_w: float, exponent: float, quota_work_fraction: float = 1.0
) -> float:
    """Work rate under a power limit, 1 at or above busy power. A CPU core slot's limit is a cgroup CPU quota
    (hardware/power_limit.py), so its speed is the quota, (limit - idle) / (busy - idle), times the work a throttled
    process does per CPU-second against a free one (`quota_work_fraction`; benchmarks/cpu_quota_speed.py: the demo's
    serving worker under the 3.6 and 2.6 W limits ran at 0.80 to 1.03 of its quota, batch to batch, on one host, and
    the replay of a run fits it from the run's own videos). A GPU's limit lowers its clocks: (limit / busy) **
    exponent."""
    if limit_w >= power.busy_w:
        return 1.0
    if chip == CPU_CHIP:
        quota = (limit_w - power.idle_w) / max(power.busy_w - power.idle_w, 1e-9)
        return max(quota * quota_work_fraction, 0.01)
    return (max(limit_w, 1e-9) / power.busy_w) ** exponent


class SiteSimulator:
    """One site: its units, its queue, its governor. `run()` simulates the scenario's horizon."""

    def __init__(
        self,
        scenario: Scenario,
        site_index: int,
        arrivals_s: np.ndarray,
        kinds: np.ndarray,
        profile: CostProfile | None = None,
        with_training: bool = True,
        service_multiplier: np.ndarray | None = None,
        level_of_request: np.ndarray | None = None,
        tick_clock_s: np.ndarray | None = None,
        limit_delay_s: np.ndarray | None = None,
    ) -> None:
        """`level_of_request` (optional, one per arrival): the quality rung each request runs at, -1 for the rung the
        governor has set when it starts. A replay of a measured run gives the rungs its videos ran at (which side of
        a tick a claim fell on is a race the simulator cannot reproduce); the governor's own rung decisions still
        drive everything else. Its times scale by the rungs' ratio on the site's first chip.

        `tick_clock_s` (optional, one per control period from the first): the clock each tick of a measured run read
        (its `now_s`), given to the governor as the tick's time instead of the period's start; the simulated events
        still happen period by period. The runtime schedules ticks a period apart, but each reads the clock after its
        timer wakes, a few tenths of a millisecond late (2026-11-26: tick-to-tick 0.996 to 1.004 s, under 1 s in
        about half the periods). A step whose settle time is one period (policy: `settle_until_s` = now + one
        period) holds the next tick exactly when that tick's clock read came less than a period after the step's:
        on four quiet demo runs it held the tick after the cap first binds in two (the next limit a period later),
        and an exact simulated clock never holds it.

        `limit_delay_s` (optional, one per control period): seconds after the period's start at which the power
        limits its tick sets take effect (a measured run's: the tick reads the meters and the store before it acts,
        0.03 to 0.16 s on a quiet machine); the running requests are slowed from then, and the period's power reading
        counts the old limit until then. Requests started within the delay take the new limit (it is shorter than
        a request)."""
        self.scenario = scenario
        self.site: Site = scenario.sites[site_index]
        self.site_index = site_index
        chips = scenario.chips()
        self.profile = profile or CostProfile(catalog=chips)
        gov = scenario.governor
        self.m = gov.max_concurrency
        self.period_s = gov.control_period_s
        self.horizon_s = scenario.horizon_s
        # Request kinds x chips: seconds and joules per request at rung 0, and the rung factors.
        kinds_spec = scenario.requests
        site_chips = sorted({g.chip for g in self.site.devices if g.count > 0})
        self.chip_index = {c: i for i, c in enumerate(site_chips)}
        self.base_s = np.zeros((len(site_chips), len(kinds_spec)))
        self.base_j = np.zeros_like(self.base_s)
        self.fixed_s = np.zeros_like(self.base_s)  # the part of base_s a quality rung does not shorten
        weights = np.array([r.weight for r in kinds_spec]) / sum(r.weight for r in kinds_spec)
        powers = {}
        for ci, c in enumerate(site_chips):
            for ri, r in enumerate(kinds_spec):
                try:
                    p = self.profile.predict(
                        r.model, c, 1, r.width, r.height, self.profile.frames_for(r.model, r.seconds), r.steps
                    )
                except ValueError as error:
                    raise ScenarioError(f"requests[{ri}] on {c}: {error}") from None
                self.base_s[ci, ri], self.base_j[ci, ri] = p.seconds, p.joules
                self.fixed_s[ci, ri] = min(p.fixed_s, p.seconds)
            busy = float(np.sum(weights * self.base_j[ci] / self.base_s[ci]))
            powers[c] = chip_power(scenario, c, chips.get(c), busy)
        self.chip_powers = powers
        # The part of a request's time each rung keeps: steps kept, each at the rung's native size (a point with a
        # fixed share per step keeps that share whatever the size).
        self.level_factor = np.array(
            [
                [
                    [
                        self.profile.rung_factor(
                            r.model, c, r.width, r.height, self.profile.frames_for(r.model, r.seconds), r.steps, q
                        )
                        for q in range(len(QUALITY_LADDER))
                    ]
                    for r in kinds_spec
                ]
                for c in site_chips
            ]
        )  # [chip, kind, level]
        self.kind_weights = weights
        # Units: blocks of at most `size` devices of one (chip, pool).
        total = sum(g.count for g in self.site.devices)
        size = max(1, math.ceil(total / scenario.simulation.max_units_per_site))
        self.unit_size = size
        self.units: list[Unit] = []
        for g in self.site.devices:
            left = g.count
            while left > 0:
                n = min(size, left)
                pw = powers[g.chip]
                uid = f"{self.site.name}/{g.chip}/{g.pool}/{len(self.units)}"
                self.units.append(Unit(uid, g.chip, g.pool, n, pw, limit_w=pw.max_limit_w))
                left -= n
        self.devices = total
        facility = self.site.pue * self.site.server_factor
        self.facility_factor = facility
        cap_w = self.site.power_cap_mw * 1e6 / facility
        training_units = sum(1 for u in self.units if u.home_pool == "training")
        guarantee = training_units
        if gov.training_guarantee is not None:
            guarantee = min(training_units, math.ceil(gov.training_guarantee / size))
        self.config = GovernorConfig(
            power_cap_w=cap_w,
            training_guarantee=guarantee,
            serving_floor=0,
            high_watermark=gov.high_watermark,
            low_watermark=gov.low_watermark,
            control_period_s=self.period_s,
            grace_period_s=gov.grace_period_s,
            slo_s=gov.slo_s,
            slo_target=gov.slo_target,
            worker_timeout_s=max(10.0, 3 * self.period_s),
            # A unit of `size` devices runs size x m requests at once, each holding 1/(size x m) of it: the governor's
            # Poisson peak of requests running at once is then the same as over the devices one by one.
            max_concurrency=size * self.m,
            target_utilization=gov.target_utilization,
        )
        idle_w = sum(u.size * u.power.idle_w for u in self.units)
        if idle_w >= self.config.low_w:
            raise ScenarioError(
                f"sites[{site_index}].power_cap_mw: {self.site.power_cap_mw} MW at PUE {self.site.pue} and server"
                f" factor {self.site.server_factor} leaves {cap_w / 1e6:.4f} MW for the chips, but they draw"
                f" {idle_w / 1e6:.4f} MW idle (the governor needs the idle draw below {gov.low_watermark:.0%} of the"
                f" cap): raise the cap above {idle_w / gov.low_watermark * facility / 1e6:.4f} MW or remove devices"
            )
        try:
            self.config.validate(self._device_states(0.0, np.zeros(len(self.units)), None))
        except GovernorConfigError as error:
            raise ScenarioError(f"sites[{site_index}]: {error}") from None
        self.jobs: list[JobRun] = []
        if with_training:
            for job in scenario.training:
                if (job.site or scenario.sites[0].name) != self.site.name:
                    continue
                self.jobs.append(JobRun(job.name, math.ceil(job.devices / size), job.duration_s, job.start_s))
        self.arrivals = arrivals_s
        self.kinds = kinds
        self._sizes = np.array([u.size for u in self.units], dtype=float)
        self._unit_mean_s = np.array([self.base_s[self.chip_index[u.chip]] @ self.kind_weights for u in self.units])
        self._chip_of_unit = np.array([self.chip_index[u.chip] for u in self.units])
        self.service_multiplier = service_multiplier
        self.level_of_request = level_of_request
        self.tick_clock_s = tick_clock_s
        self.limit_delay_s = limit_delay_s

    def rung_s(self, quality: int) -> np.ndarray:
        """Seconds per request [chip, kind] at full speed on one device at rung `quality`: the rung scales the part
        that grows with the clip (steps x native pixels); the fixed part (the profile's per-request overhead) stays."""
        fixed = self.fixed_s
        return fixed + (self.base_s - fixed) * self.level_factor[:, :, quality]

    def _serving_speed(self, unit: Unit) -> float:
        """A serving unit's work rate under its limit, capped at the share of its device a worker gets."""
        sim = self.scenario.simulation
        speed = speed_under_limit(unit.chip, unit.power, unit.limit_w, sim.power_perf_exponent, sim.quota_work_fraction)
        return min(speed, sim.serving_share)

    def _replayed_multiplier(self, quality: int) -> np.ndarray:
        """Per request: its service multiplier times its replayed rung's time over rung `quality`'s (1 where the
        request takes the governor's rung)."""
        base = self.service_multiplier if self.service_multiplier is not None else np.ones(len(self.arrivals))
        levels = self.level_of_request
        ratio = np.ones(len(levels))
        now = self.rung_s(quality)[0]  # [kind], on the site's first chip
        for q in np.unique(levels[levels >= 0]).tolist():
            pick = levels == q
            ratio[pick] = (self.rung_s(int(q))[0] / now)[self.kinds[pick]]
        return base * ratio

    # --- governor view --------------------------------------------------------------------------------------------

    def _device_states(
        self,
        now_s: float,
        power_w: np.ndarray,
        inflight: list[list[tuple[float, int, float]]] | None,
        last_busy_s: np.ndarray | None = None,
    ) -> tuple[DeviceState, ...]:
        out = []
        for i, u in enumerate(self.units):
            flight: tuple[InFlight, ...] = ()
            if inflight is not None and inflight[i] and u.home_pool == "training":
                live = [(e, s) for e, _, s in inflight[i] if e > now_s]
                if live:
                    expected = sum(e - s for e, s in live)
                    done = sum(now_s - s for e, s in live if now_s > s)
                    flight = (InFlight(f"unit:{i}", done / expected if expected > 0 else 0.0, expected),)
            idle_since_s = None
            if last_busy_s is not None and u.assignment == "serving" and not flight and math.isfinite(last_busy_s[i]):
                idle_since_s = float(last_busy_s[i])
            out.append(
                DeviceState(
                    id=u.id,
                    home_pool=u.home_pool,  # type: ignore[arg-type]
                    assignment=u.assignment,  # type: ignore[arg-type]
                    job_id=u.job_id,
                    power_w=float(power_w[i]),
                    idle_power_w=u.size * u.power.idle_w,
                    busy_power_w=u.size * u.power.busy_w,
                    power_limit_w=u.size * u.limit_w,
                    min_power_limit_w=u.size * u.power.min_limit_w,
                    max_power_limit_w=u.size * u.power.max_limit_w,
                    power_limit_settable=True,
                    in_flight=flight,
                    draining_deadline_s=u.deadline_s,
                    last_report_s=now_s,
                    healthy=True,
                    idle_since_s=idle_since_s,
                )
            )
        return tuple(out)

    @staticmethod
    def _exact(
        q_idx: np.ndarray,
        arr_list: list[float],
        kind_list: list[int],
        cand: np.ndarray,
        free_at: np.ndarray,
        svc: np.ndarray,
        slot_unit: np.ndarray,
        busy_until: np.ndarray,
        mult: np.ndarray | None,
        t1: float,
        pickup_s: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """FIFO over this period's candidate slots, one heapreplace per request (a slot may serve several); returns
        the requests started, their starts, ends, units and slots. A request that finds its slot idle starts
        `pickup_s` after it arrives (simulation.worker_pickup_s)."""
        heap = list(zip(free_at.tolist(), cand.tolist(), strict=True))
        heapq.heapify(heap)
        svc_l = svc.tolist()
        unit_of_slot = dict(zip(cand.tolist(), slot_unit[cand].tolist(), strict=True))
        mult_l = mult.tolist() if mult is not None else None
        ks, ss, es, us, sls = [], [], [], [], []
        heapreplace = heapq.heapreplace
        for k in q_idx.tolist():
            f, slot = heap[0]
            a = arr_list[k]
            st = a + pickup_s if a > f else f
            if st >= t1:
                break
            i = unit_of_slot[slot]
            e = st + svc_l[i][kind_list[k]] * (mult_l[k] if mult_l is not None else 1.0)
            heapreplace(heap, (e, slot))
            ks.append(k)
            ss.append(st)
            es.append(e)
            us.append(i)
            sls.append(slot)
        for f, slot in heap:
            busy_until[slot] = f
        return (
            np.array(ks, dtype=np.int64),
            np.array(ss),
            np.array(es),
            np.array(us, dtype=np.int64),
            np.array(sls, dtype=np.int64),
        )

    # --- the run --------------------------------------------------------------------------------------------------

    def run(self) -> SiteResult:
        P, H, m = self.period_s, self.horizon_s, self.m
        nbins = max(1, math.ceil(H / P))
        U = len(self.units)
        units = self.units
        partial = np.zeros((U, nbins + 1))
        diff = np.zeros((U, nbins + 2))
        running = np.zeros(U)
        met_bins = np.zeros(nbins + 2)
        done_bins = np.zeros(nbins + 2)
        arr = self.arrivals
        arr_list = arr.tolist()
        kind_list = self.kinds.tolist()
        n = len(arr_list)
        shed_np = np.zeros(n, dtype=bool)
        shed_total = shed_passed = 0
        rq: deque[int] = deque()
        nxt = 0
        # Serving slots: unit i owns slots [slot_lo[i], slot_lo[i] + size * m); a slot takes new work while its
        # unit serves and its index is below the concurrency in force (requests per unit); it is busy until busy_until.
        slot_count = np.array([u.size * m for u in units])
        slot_lo = np.concatenate([[0], np.cumsum(slot_count)[:-1]]).astype(np.int64)
        slot_unit = np.repeat(np.arange(U), slot_count)
        slot_rank = np.arange(int(slot_count.sum())) - slot_lo[slot_unit]  # index within its unit
        busy_until = np.zeros(len(slot_unit))
        serving_unit = np.zeros(U, dtype=bool)
        track_arr = np.array([u.home_pool == "training" for u in units])
        mult = self.service_multiplier
        mult_min = float(mult.min()) if mult is not None and len(mult) else 1.0
        inflight: list[list[tuple[float, int, float]]] = [[] for _ in range(U)]
        last_busy_s = np.full(U, np.nan)  # a lent unit's last request end (or its lend): the runtime's idle_since_s
        quality, concurrency, admission = 0, self.config.max_concurrency, "open"
        memory = ControlMemory()
        power_series = np.zeros(nbins)
        queue_series = np.zeros(nbins, dtype=np.int64)
        quality_series = np.zeros(nbins, dtype=np.int8)
        serving_series = np.zeros(nbins, dtype=np.int64)
        training_series = np.zeros(nbins, dtype=np.int64)
        admission_series: list[str] = []
        gate_counts = {"online": 0, "degraded": 0, "offline": 0}
        # Per state, periods per kind of reason. A reason's kind is its text up to the first digit (the gate's reasons
        # are templates filled with figures), so a day of "serving needs 3.1 devices ..." counts as one kind; the
        # latest text stands for it. Keeping only the first reason made a day's report name the start-up's "no
        # request has been measured yet" for every degraded period that came after.
        reason_kinds: dict[str, dict[str, list]] = {}
        alerts: dict[str, int] = {}
        alert_examples: list[str] = []
        chunks: list[tuple[np.ndarray, ...]] = []
        requeued = 0
        # A power limit set while requests run changes their speed from then on (simulation.limits_apply_in_flight);
        # otherwise a request keeps the speed it started at.
        in_flight_limits = self.scenario.simulation.limits_apply_in_flight
        rewritten = False
        slot_req = np.full(len(slot_unit), -1, dtype=np.int64)
        slot_start = np.zeros(len(slot_unit))
        chunk_level: dict[int, int] = {}
        limit_changes: list[tuple[float, str, float]] = []  # (when it took effect, unit, watts): the first ones
        decide_calls = 0
        serving_slot_s = training_device_s = 0.0
        power_now = np.array([u.size * u.power.idle_w for u in units])
        sizes = self._sizes
        cpu_units = np.array([u.chip == CPU_CHIP for u in units])
        idle = np.array([u.power.idle_w for u in units]) * sizes
        span_w = np.array([max(u.power.busy_w - u.power.idle_w, 0.0) for u in units]) * sizes
        busy_w_per_device = np.array([u.power.busy_w for u in units])

        def cpu_quota(limit_w: np.ndarray) -> np.ndarray:
            """Each unit's CPU quota under per-device limits `limit_w` (speed_under_limit's CPU rule, vectorised)."""
            per_span = np.maximum(span_w / sizes, 1e-9)
            return np.where(limit_w >= busy_w_per_device, 1.0, np.maximum((limit_w - idle / sizes) / per_span, 0.01))

        def bin_busy(s: np.ndarray, e: np.ndarray, u: np.ndarray, w: float) -> None:
            end_edge = nbins * P
            s = np.minimum(s, end_edge)
            e = np.minimum(e, end_edge)
            keep = e > s
            s, e, u = s[keep], e[keep], u[keep]
            i0 = np.minimum((s // P).astype(np.int64), nbins)
            i1 = np.minimum((e // P).astype(np.int64), nbins)
            same = i0 == i1
            np.add.at(partial, (u[same], i0[same]), w * (e[same] - s[same]))
            d = ~same
            ud, i0d, i1d = u[d], i0[d], i1[d]
            np.add.at(partial, (ud, i0d), w * ((i0d + 1) * P - s[d]))
            np.add.at(partial, (ud, i1d), w * (e[d] - i1d * P))
            np.add.at(diff, (ud, i0d + 1), w)
            np.add.at(diff, (ud, i1d), -w)

        def set_serving(i: int, now_s: float) -> None:
            units[i].assignment = "serving"
            serving_unit[i] = True
            last_busy_s[i] = now_s
            lo = slot_lo[i]
            # A fresh worker (whatever ran there before was requeued), ready once it has loaded the model.
            busy_until[lo : lo + slot_count[i]] = now_s + self.scenario.simulation.worker_start_s

        def stop_serving(i: int) -> None:
            serving_unit[i] = False

        def rescale_in_flight(i: int, now_s: float, factor: float) -> bool:
            """Stretch what is left of unit i's running requests by `factor` (old speed / new speed)."""
            nonlocal pending_end, pending_unit_s
            if factor == 1.0:
                return False
            lo = slot_lo[i]
            slots = np.arange(lo, lo + slot_count[i])
            slots = slots[(busy_until[slots] > now_s) & (slot_req[slots] >= 0)]
            for slot in slots.tolist():
                k, old_end = int(slot_req[slot]), float(busy_until[slot])
                new_end = now_s + (old_end - now_s) * factor
                busy_until[slot] = new_end
                bin_busy(np.array([now_s]), np.array([old_end]), np.array([i]), -1.0)
                bin_busy(np.array([now_s]), np.array([new_end]), np.array([i]), 1.0)
                b_old, b_new = min(int(old_end // P), nbins), min(int(new_end // P), nbins)
                met = (
                    float(old_end - arr_list[k] <= self.config.slo_s),
                    float(new_end - arr_list[k] <= self.config.slo_s),
                )
                done_bins[b_old] -= 1
                done_bins[b_new] += 1
                met_bins[b_old] -= met[0]
                met_bins[b_new] += met[1]
                level_k = chunk_level.get(k, quality)
                chunks.append(
                    (
                        np.array([k]),
                        np.array([slot_start[slot]]),
                        np.array([new_end]),
                        np.array([i]),
                        np.array([level_k]),
                    )
                )
                hit = np.flatnonzero(pending_end == old_end)[:1]
                if len(hit):
                    pending_end[hit] = new_end
                    pending_unit_s[hit] = (new_end - slot_start[slot]) / unit_slots[i]
                if inflight[i]:
                    inflight[i] = [(new_end, kk, st) if kk == k else (e, kk, st) for e, kk, st in inflight[i]]
            return len(slots) > 0

        # Serving-home devices always run a worker (the runtime's serving floor).
        for i, u in enumerate(units):
            if u.home_pool == "serving":
                set_serving(i, 0.0)
        wb = max(1, math.ceil(SLO_WINDOW_S / P))
        # Measured service (as the runtime): the mean unit-seconds of the last SERVICE_SAMPLES completed requests at
        # each rung; a rung with none completed is "not measured" and the governor scales it from a measured one.
        pending_end = np.zeros(0)
        pending_level = np.zeros(0, dtype=np.int64)
        pending_unit_s = np.zeros(0)
        measured: list[deque[float]] = [deque(maxlen=SERVICE_SAMPLES) for _ in QUALITY_LADDER]
        unit_slots = self._sizes * m
        for j in range(nbins):
            t0 = j * P
            t1 = min(t0 + P, H)
            # --- read: the fleet as the meters saw it over the last period ------------------------------------
            lo_rate = np.searchsorted(arr, t0 - ARRIVAL_WINDOW_S)
            hi_now = int(np.searchsorted(arr, t0))
            rate = (hi_now - lo_rate) / ARRIVAL_WINDOW_S  # as the runtime measures it, a fixed window
            queue_depth = len(rq) + max(hi_now - nxt, 0) - (shed_total - shed_passed)
            queue_depth = max(queue_depth, 0)
            if len(pending_end):
                done_now = pending_end <= t0
                if done_now.any():
                    order = np.argsort(pending_end[done_now], kind="stable")
                    lv, us_ = pending_level[done_now][order], pending_unit_s[done_now][order]
                    for q in np.unique(lv).tolist():
                        measured[q].extend(us_[lv == q][-SERVICE_SAMPLES:].tolist())
                    keep = ~done_now
                    pending_end, pending_level, pending_unit_s = (
                        pending_end[keep],
                        pending_level[keep],
                        pending_unit_s[keep],
                    )
            service = tuple(sum(d) / len(d) if d else 0.0 for d in measured)
            done = float(done_bins[max(0, j - wb) : j].sum())
            serving_state = ServingState(
                quality_level=quality,
                concurrency=concurrency,
                admission=admission,  # type: ignore[arg-type]
                queue_depth=queue_depth,
                queued_device_s=0.0,
                arrival_rate_per_s=rate,
                service_device_s_by_level=service,
                slo_attainment=float(met_bins[max(0, j - wb) : j].sum()) / done if done else None,
            )
            per_request_s = serving_state.service_device_s(quality)
            if per_request_s:  # as the runtime prices the queue
                serving_state = replace(serving_state, queued_device_s=queue_depth * per_request_s)
            jobs_state = tuple(
                TrainingJobState(
                    id=job.name,
                    devices_requested=job.units_requested,
                    devices_held=tuple(units[i].id for i in job.units),
                    status=job.status,
                    submitted_s=job.start_s,
                    throttled=job.throttled,
                )
                for job in self.jobs
                if job.status in (JobStatus.WAITING, JobStatus.RUNNING) and job.start_s <= t0
            )
            now_s = t0
            if self.tick_clock_s is not None and j < len(self.tick_clock_s):
                now_s = float(self.tick_clock_s[j])
            state = FleetState(
                now_s=now_s,
                devices=self._device_states(now_s, power_now, inflight, last_busy_s),
                serving=serving_state,
                jobs=jobs_state,
                fleet_power_w=float(power_now.sum()),
                power_source="planner",
                tick=j,
                memory=memory,
            )
            decision = policy.decide(state, self.config)
            decide_calls += 1
            memory = decision.memory
            gate_counts[decision.gate.state] += 1
            if decision.gate.state != "online":
                kinds = reason_kinds.setdefault(decision.gate.state, {})
                for reason in decision.gate.reasons:
                    entry = kinds.setdefault(_reason_kind(reason), [0, reason])
                    entry[0] += 1
                    entry[1] = reason
            # --- apply ------------------------------------------------------------------------------------------
            act_delay_s = 0.0
            if self.limit_delay_s is not None and j < len(self.limit_delay_s):
                act_delay_s = min(max(float(self.limit_delay_s[j]), 0.0), P)
            changed_after_s = np.zeros(U)  # when this period's limit change took effect, after its start
            limit_before_w = np.array([u.limit_w for u in units])
            index = {u.id: i for i, u in enumerate(units)}
            jobs = {job.name: job for job in self.jobs}
            for action in decision.actions:
                if isinstance(action, StartTraining):
                    job = jobs[action.job_id]
                    job.status, job.started_s = JobStatus.RUNNING, t0
                    job.units = tuple(index[d] for d in action.device_ids)
                    for i in job.units:
                        units[i].assignment, units[i].job_id = "training", job.name
                elif isinstance(action, RejectJob):
                    job = jobs[action.job_id]
                    job.status, job.reason = JobStatus.FAILED, action.reason
                elif isinstance(action, Lend):
                    set_serving(index[action.device_id], t0)
                elif isinstance(action, Reclaim):
                    i = index[action.device_id]
                    stop_serving(i)
                    units[i].assignment, units[i].job_id, units[i].deadline_s = (
                        "draining",
                        action.job_id,
                        action.deadline_s,
                    )
                elif isinstance(action, FinishReclaim):
                    i = index[action.device_id]
                    stop_serving(i)
                    live = [(e, k, s) for e, k, s in inflight[i] if e > t0]
                    if live:
                        ks = [k for _, k, _ in live]
                        requeued += len(ks)
                        merged = sorted([*rq, *ks], key=lambda k: arr_list[k])
                        rq = deque(merged)
                        e_arr = np.array([e for e, _, _ in live])
                        bin_busy(np.full(len(live), t0), e_arr, np.full(len(live), i), -1.0)
                        # Void their starts: the last record of a request wins.
                        nan = np.full(len(ks), np.nan)
                        chunks.append((np.array(ks), nan, nan, np.full(len(ks), i), np.full(len(ks), -1)))
                        e_bins = np.minimum((e_arr // P).astype(np.int64), nbins)
                        np.add.at(done_bins, e_bins, -1)
                        met = np.array([e - arr_list[k] <= self.config.slo_s for e, k, _ in live], dtype=float)
                        np.add.at(met_bins, e_bins, -met)
                    inflight[i] = []
                    # As the runtime: the worker stops and the device is free; the job's StartTraining (this tick or
                    # a later one, once all its devices are free) puts it to work.
                    units[i].assignment, units[i].job_id, units[i].deadline_s = "idle", None, None
                elif isinstance(action, SetQuality):
                    quality = action.level
                elif isinstance(action, SetConcurrency):
                    concurrency = action.per_device
                elif isinstance(action, SetAdmission):
                    admission = action.mode
                elif isinstance(action, SetPowerLimit | ThrottleTraining):
                    i = index[action.device_id]
                    old_speed = self._serving_speed(units[i])
                    changed_after_s[i] = act_delay_s
                    if len(limit_changes) < MAX_LIMIT_CHANGES:
                        limit_changes.append((t0 + act_delay_s, units[i].id, float(action.watts)))
                    units[i].limit_w = action.watts / units[i].size
                    if in_flight_limits and serving_unit[i]:
                        rescaled = rescale_in_flight(i, t0 + act_delay_s, old_speed / self._serving_speed(units[i]))
                        rewritten = rewritten or rescaled
                    if isinstance(action, ThrottleTraining):
                        jobs[action.job_id].throttled = units[i].limit_w < units[i].power.max_limit_w
                elif isinstance(action, Alert):
                    alerts[action.severity] = alerts.get(action.severity, 0) + 1
                    if len(alert_examples) < 5 and action.severity != "info":
                        alert_examples.append(action.message)
                elif isinstance(action, MarkLost):  # simulated devices always report; kept for completeness
                    stop_serving(index[action.device_id])
            # --- events of this period --------------------------------------------------------------------------
            hi_end = int(np.searchsorted(arr, t1))
            if admission == "shed":
                lo_new = max(hi_now, nxt)
                if hi_end > lo_new:
                    shed_np[lo_new:hi_end] = True
                shed_total += max(hi_end - lo_new, 0)
            committed = None
            pickup_s = self.scenario.simulation.worker_pickup_s
            if admission == "open" and serving_unit.any():
                exp = self.scenario.simulation.power_perf_exponent
                share = self.scenario.simulation.serving_share
                slow = np.array([1.0 / self._serving_speed(u) for u in units])
                # svc[u, kind]: seconds one slot of unit u takes for a request of each kind at this rung.
                svc = self.rung_s(quality)[self._chip_of_unit] * m * slow[:, None]
                if self.level_of_request is not None:  # replayed rungs: their time over this rung's
                    mult = self._replayed_multiplier(quality)
                    mult_min = float(mult.min()) if len(mult) else 1.0
                enabled = serving_unit[slot_unit] & (slot_rank < concurrency)
                avail = np.where(enabled, np.maximum(busy_until, t0), np.inf)
                cand = np.flatnonzero(avail < t1)
                if len(cand):
                    order = np.argsort(avail[cand], kind="stable")
                    cand = cand[order]
                    free_at = avail[cand]
                    # The queue in FIFO order: requeued requests first (they arrived earlier), then new arrivals,
                    # at most as many as there are candidate slots (the fast path) or all that arrived (exact path).
                    # Fast (vectorised, and exact) when no slot can take two new requests this period: every
                    # service time is longer than the period, or the queue fits in the slots free at its start.
                    queued_upper = len(rq) + max(hi_end - nxt, 0) - (shed_total - shed_passed)
                    free_now = int(np.searchsorted(free_at, t0, side="right"))
                    fast = float(svc.min()) * mult_min >= (t1 - t0) or queued_upper <= free_now
                    limit = len(cand) if fast else n
                    take_rq = list(rq)[:limit]
                    take_new = np.arange(nxt, min(hi_end, nxt + limit + (shed_total - shed_passed)))
                    if shed_total > shed_passed and len(take_new):
                        skipped = shed_np[take_new]
                        take_new = take_new[~skipped]
                    q_idx = np.concatenate([np.array(take_rq, dtype=np.int64), take_new])[:limit]
                    if len(q_idx):
                        if fast:
                            # Each slot takes at most one new request this period (every service time is longer
                            # than the period), so FIFO pairs the k-th request with the k-th earliest free slot.
                            L = min(len(q_idx), len(cand))
                            k_a = q_idx[:L]
                            a_k = arr[k_a]
                            s_a = np.where(a_k > free_at[:L], a_k + pickup_s, free_at[:L])
                            late = s_a >= t1  # a prefix starts (an idle slot's pickup can put one after the next)
                            L = int(np.argmax(late)) if late.any() else len(s_a)
                            k_a, s_a, sl = k_a[:L], s_a[:L], cand[:L]
                            u_a = slot_unit[sl]
                            e_a = s_a + svc[u_a, self.kinds[k_a]] * (mult[k_a] if mult is not None else 1.0)
                            busy_until[sl] = e_a
                            slots_a = sl
                        else:
                            # The first Q requests only ever use the Q earliest slots.
                            k_a, s_a, e_a, u_a, slots_a = self._exact(
                                q_idx,
                                arr_list,
                                kind_list,
                                cand[: len(q_idx)],
                                free_at[: len(q_idx)],
                                svc,
                                slot_unit,
                                busy_until,
                                mult,
                                t1,
                                pickup_s,
                            )
                        committed = (k_a, s_a, e_a, u_a)
                        if in_flight_limits:  # which request each slot runs, for a limit that changes mid-request
                            slot_req[slots_a] = k_a
                            slot_start[slots_a] = s_a
                        # Advance the queue past what started.
                        started_n = len(k_a)
                        from_rq = min(started_n, len(take_rq))
                        for _ in range(from_rq):
                            rq.popleft()
                        if started_n > from_rq:
                            last_new = int(k_a[-1])
                            shed_passed += int(shed_np[nxt : last_new + 1].sum()) if shed_total > shed_passed else 0
                            nxt = last_new + 1
            if committed is not None and len(committed[0]):
                k_a, s_a, e_a, u_a = committed
                bin_busy(s_a, e_a, u_a, 1.0)
                e_bins = np.minimum((e_a // P).astype(np.int64), nbins)
                np.add.at(done_bins, e_bins, 1)
                np.add.at(met_bins, e_bins, (e_a - arr[k_a] <= self.config.slo_s).astype(float))
                level_a = np.full(len(k_a), quality)
                if self.level_of_request is not None:
                    replayed = self.level_of_request[k_a]
                    level_a = np.where(replayed >= 0, replayed, quality)
                chunks.append((k_a, s_a, e_a, u_a, level_a))
                if in_flight_limits:
                    chunk_level.update(zip(k_a.tolist(), level_a.tolist(), strict=True))
                pending_end = np.concatenate([pending_end, e_a])
                pending_level = np.concatenate([pending_level, level_a])
                pending_unit_s = np.concatenate([pending_unit_s, (e_a - s_a) / unit_slots[u_a]])
                tracked = track_arr[u_a]
                if tracked.any():
                    for e, k, st, i in zip(
                        e_a[tracked].tolist(),
                        k_a[tracked].tolist(),
                        s_a[tracked].tolist(),
                        u_a[tracked].tolist(),
                        strict=True,
                    ):
                        inflight[i].append((e, k, st))
            for i in range(U):
                if track_arr[i] and inflight[i] and units[i].assignment in ("serving", "draining"):
                    ended = [x[0] for x in inflight[i] if x[0] <= t0]
                    if ended:
                        last_busy_s[i] = max(np.nan_to_num(last_busy_s[i], nan=-np.inf), max(ended))
                    inflight[i] = [x for x in inflight[i] if x[0] > t0]
            # --- training progress and the period's power -------------------------------------------------------
            span = t1 - t0
            exp = self.scenario.simulation.power_perf_exponent
            training_start_s = self.scenario.simulation.training_start_s
            train_frac = np.ones(U)  # share of the period a training unit trains (0 while its process starts)
            for job in self.jobs:
                if job.status != JobStatus.RUNNING:
                    continue
                speed = min(speed_under_limit(units[i].chip, units[i].power, units[i].limit_w, exp) for i in job.units)
                left = job.duration_s - job.work_s
                work_from = max(t0, (job.started_s or 0.0) + training_start_s)
                work_span = max(t1 - work_from, 0.0)
                if speed * work_span >= left:
                    job.work_s = job.duration_s
                    job.finished_s = work_from + left / speed
                    job.status = JobStatus.SUCCEEDED
                    for i in job.units:
                        training_device_s += units[i].size * (job.finished_s - t0)
                        units[i].assignment, units[i].job_id = "idle", None
                else:
                    job.work_s += speed * work_span
                    for i in job.units:
                        training_device_s += units[i].size * span
                        train_frac[i] = work_span / span if span > 0 else 1.0
            running += diff[:, j]
            busy = partial[:, j] + running * P
            limits = np.array([u.limit_w for u in units]) * sizes
            util = np.clip(busy / (span * sizes * m), 0.0, 1.0) if span > 0 else np.zeros(U)
            training_now = np.array([u.assignment == "training" for u in units])
            util = np.where(training_now, train_frac, util)
            share = self.scenario.simulation.serving_share
            if share < 1.0:  # a serving worker draws for the share of its device it gets, not its whole busy time
                util = np.where(training_now, util, util * share)
            if cpu_units.any():
                # A CPU core slot's limit is a CPU quota (hardware/power_limit.py CpuSlotLimiter), not a clip on its
                # power: while its work runs it uses the quota's share of the core, and reads idle + (busy - idle) x
                # that share x the part of the period it had work, below its limit when the work ran part of it.
                # Clipping the busy reading at the limit read a slot that waited for its next request as if it had
                # been throttled all period (2026-11-26: 0.1 to 0.2 W high on the period the cap first binds).
                quota = cpu_quota(limits / sizes)
                before = cpu_quota(limit_before_w)
                if span > 0:  # a limit that took effect after the period began: the old quota until then
                    after_s = np.minimum(changed_after_s, span)
                    quota = (after_s * before + (span - after_s) * quota) / span
                cut = np.where(training_now, quota, np.minimum(quota, share) / share if share < 1.0 else quota)
                util = np.where(cpu_units, util * cut, util)
            power_now = np.minimum(idle + span_w * util, np.maximum(limits, idle))
            if cpu_units.any():  # the quota already holds a CPU slot under its limits, the one before a change too
                power_now = np.where(cpu_units, idle + span_w * util, power_now)
            power_series[j] = power_now.sum()
            queue_series[j] = queue_depth
            quality_series[j] = quality
            serving_series[j] = int(sum(u.size for u in units if u.assignment == "serving"))
            training_series[j] = int(sum(u.size for u in units if u.assignment == "training"))
            admission_series.append(admission)
            serving_slot_s += float(sum(u.size for u in units if u.assignment in ("serving", "draining"))) * span
        # --- per-request results: the last record of each request wins --------------------------------------------
        start = np.full(n, np.nan)
        end = np.full(n, np.nan)
        unit_of = np.full(n, -1, dtype=np.int64)
        level = np.full(n, -1, dtype=np.int8)
        if chunks:
            k_all = np.concatenate([c[0] for c in chunks]).astype(np.int64)
            cols = [np.concatenate([c[i] for c in chunks]) for i in range(1, 5)]
            if requeued or rewritten:
                _, first_rev = np.unique(k_all[::-1], return_index=True)
                pick = len(k_all) - 1 - first_rev
                k_all = k_all[pick]
                cols = [c[pick] for c in cols]
            start[k_all], end[k_all], unit_of[k_all], level[k_all] = cols[0], cols[1], cols[2], cols[3]
        chip_of_unit = np.array([self.chip_index[u.chip] for u in units] + [-1])
        busy_total = float(np.nansum(np.minimum(end, H) - np.minimum(start, H)) / m)
        return SiteResult(
            name=self.site.name,
            period_s=P,
            power_cap_w=self.config.power_cap_w,
            facility_factor=self.facility_factor,
            arrival_s=arr,
            kind=self.kinds,
            start_s=start,
            end_s=end,
            chip_of_request=chip_of_unit[unit_of],
            level=level,
            shed=shed_np,
            power_w=power_series,
            queue_depth=queue_series,
            quality=quality_series,
            serving_devices=serving_series,
            training_devices=training_series,
            admission=admission_series,
            gate=gate_counts,
            gate_reasons={
                state: max(kinds.values(), key=lambda e: e[0])[1] for state, kinds in reason_kinds.items() if kinds
            },
            gate_reason_periods={
                state: {text: n for n, text in sorted(kinds.values(), key=lambda e: -e[0])}
                for state, kinds in reason_kinds.items()
            },
            jobs=self.jobs,
            alerts=alerts,
            alert_examples=alert_examples,
            requeued=requeued,
            devices=self.devices,
            units=U,
            serving_slot_s=serving_slot_s,
            serving_busy_s=busy_total,
            training_device_s=training_device_s,
            decide_calls=decide_calls,
            events=int(2 * np.isfinite(start).sum() + n + 2 * len(self.jobs)),
            extra={"unit_size": self.unit_size, "limit_changes": limit_changes},
        )


def site_arrivals(scenario: Scenario, seed_offset: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Arrivals for each site: the demand split by each site's serving capacity (devices x chip speed)."""
    rng = np.random.default_rng(scenario.seed + seed_offset)
    profile = CostProfile(catalog=scenario.chips())
    ref = scenario.requests[0]
    shares = []
    for site in scenario.sites:
        capacity = 0.0
        for g in site.devices:
            if g.count:
                p = profile.predict(
                    ref.model, g.chip, 1, ref.width, ref.height, profile.frames_for(ref.model, ref.seconds), ref.steps
                )
                capacity += g.count / p.seconds
        shares.append(capacity)
    total = sum(shares) or 1.0
    out = []
    for share in shares:
        times = arrival_times_s(
            scenario.demand.videos_per_day * share / total,
            scenario.horizon_s,
            rng,
            scenario.demand.daily_curve,
            scenario.demand.trace,
        )
        out.append((times, request_kinds(len(times), [r.weight for r in scenario.requests], rng)))
    return out

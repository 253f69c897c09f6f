"""Attribution: split each measured tick's energy on a shared device among the requests and jobs that ran on it.

The rule, per tick and device (measured energy E over T seconds, the device's idle power P_idle):

1. Idle part: idle_j = min(E, P_idle x T), the floor the device burns whoever runs; active part: E - idle_j.
2. The active part is split by utilisation share across consumers (processes, or batches within one): consumer i
   gets active_j x b_i / D, where b_i is its busy time in the tick (CPU-seconds from /proc/PID/stat for a CPU, SM
   utilisation x T for a GPU) and D is the device's busy time (from the meter where it sees it, else the sum of the
   b_i; the larger of the two, since the two are read at slightly different instants). Busy time no consumer
   accounts for (other processes on the machine, the kernel) goes to the owner "(other)".
3. The idle part follows an idle policy:
   - "proportional" (default): in the same shares as the active part, so that whoever used the device pays for
     keeping it on; a tick in which nobody was busy goes to "(idle)";
   - "equal": in equal parts to the consumers present in the tick, busy or not (suits devices reserved for tenants,
     a training job holding its guaranteed GPU pays for it even while waiting on data);
   - "separate": all to "(idle)", the operator's overhead, charged to no request.
   A tick with energy above the idle floor but no busy time anywhere is all treated as idle, by the same policy.
4. Within a consumer that ran a batch, its joules are split by each request's FLOP share in that tick (equal parts if
   the batch reported no FLOPs).

Every split gives the largest share the remainder (total minus the others), so attributed joules add up to the
measured total exactly, up to one rounding of the last addition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from garrison.core.types import Measurement

IDLE_POLICIES = ("proportional", "equal", "separate")
IDLE_OWNER = "(idle)"
OTHER_OWNER = "(other)"


@dataclass(frozen=True)
class Consumer:
    """One process or batch on the device during a tick.

    `busy_s` is its busy device time in the tick. `flops_by_request` names the requests of a batch and their FLOPs in
    this tick; empty means the consumer is itself the owner (a training job, say).
    """

    name: str
    busy_s: float
    flops_by_request: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.busy_s >= 0:
            raise ValueError(f"consumer {self.name!r}: busy_s must be >= 0, got {self.busy_s}")
        for request, flops in self.flops_by_request.items():
            if not flops >= 0:
                raise ValueError(f"consumer {self.name!r}: FLOPs of {request!r} must be >= 0, got {flops}")


@dataclass(frozen=True)
class Attribution:
    """Joules per owner for one tick (or many, added up), with the measured total they must sum to."""

    joules_by_owner: dict[str, float]
    measured_j: float
    idle_j: float = 0.0

    @property
    def attributed_j(self) -> float:
        return math.fsum(self.joules_by_owner.values())


def split_exact(total: float, weights: dict[str, float]) -> dict[str, float]:
    """Split `total` in proportion to `weights` so the parts sum to `total` (largest part takes the remainder)."""
    if not weights:
        raise ValueError("nothing to split among")
    weight_sum = math.fsum(weights.values())
    if not weight_sum > 0:
        raise ValueError(f"weights must have a positive sum, got {weights}")
    largest = max(weights, key=lambda k: weights[k])
    parts = {k: total * w / weight_sum for k, w in weights.items() if k != largest}
    parts[largest] = total - math.fsum(parts.values())
    return parts


def _add(into: dict[str, float], parts: dict[str, float]) -> None:
    for owner, joules in parts.items():
        into[owner] = into.get(owner, 0.0) + joules


def attribute_tick(
    measured_j: float,
    seconds: float,
    consumers: list[Consumer],
    idle_w: float,
    device_busy_s: float | None = None,
    idle_policy: str = "proportional",
) -> Attribution:
    """Split one tick's measured energy on one device among `consumers` (see the module docstring for the rule)."""
    if idle_policy not in IDLE_POLICIES:
        raise ValueError(f"idle_policy must be one of {IDLE_POLICIES}, got {idle_policy!r}")
    if not (measured_j >= 0 and seconds >= 0 and idle_w >= 0):
        raise ValueError(f"measured_j, seconds and idle_w must be >= 0, got {measured_j}, {seconds}, {idle_w}")
    if device_busy_s is not None and not device_busy_s >= 0:
        raise ValueError(f"device_busy_s must be >= 0, got {device_busy_s}")
    names = [c.name for c in consumers]
    if len(set(names)) != len(names):
        raise ValueError(f"consumer names must be unique in a tick, got {names}")

    consumers_busy_s = math.fsum(c.busy_s for c in consumers)
    total_busy_s = max(device_busy_s or 0.0, consumers_busy_s)
    idle_j = min(measured_j, idle_w * seconds)
    active_j = measured_j - idle_j

    busy_shares = {c.name: c.busy_s for c in consumers if c.busy_s > 0}
    if total_busy_s > consumers_busy_s:
        busy_shares[OTHER_OWNER] = total_busy_s - consumers_busy_s
    if not busy_shares:
        # Nobody was busy: whatever rose above the assumed idle floor is idle too.
        idle_j, active_j = measured_j, 0.0

    by_consumer: dict[str, float] = {}
    if active_j > 0:
        _add(by_consumer, split_exact(active_j, busy_shares))
    if idle_j > 0:
        if idle_policy == "proportional" and busy_shares:
            _add(by_consumer, split_exact(idle_j, busy_shares))
        elif idle_policy == "equal" and consumers:
            _add(by_consumer, split_exact(idle_j, {c.name: 1.0 for c in consumers}))
        else:
            by_consumer[IDLE_OWNER] = by_consumer.get(IDLE_OWNER, 0.0) + idle_j

    # Batches hand their share on to their requests by FLOP share.
    joules_by_owner: dict[str, float] = {}
    batches = {c.name: c.flops_by_request for c in consumers if c.flops_by_request}
    for owner, joules in by_consumer.items():
        if owner in batches:
            flops = batches[owner]
            weights = flops if math.fsum(flops.values()) > 0 else dict.fromkeys(flops, 1.0)
            _add(joules_by_owner, split_exact(joules, weights))
        else:
            _add(joules_by_owner, {owner: joules})
    return Attribution(joules_by_owner=joules_by_owner, measured_j=measured_j, idle_j=idle_j)


def attribute_measurement(
    measurement: Measurement,
    consumers_by_device: dict[str, list[Consumer]],
    idle_w_by_device: dict[str, float],
    idle_policy: str = "proportional",
) -> Attribution:
    """Attribute a meter window (one tick) over all its devices; device busy time comes from the measurement."""
    unknown = set(consumers_by_device) - set(measurement.joules_by_device)
    if unknown:
        raise ValueError(f"consumers name devices the measurement does not have: {sorted(unknown)}")
    total: dict[str, float] = {}
    idle_j = 0.0
    for device_id, joules in measurement.joules_by_device.items():
        if device_id not in idle_w_by_device:
            raise ValueError(f"no idle power given for device {device_id}")
        part = attribute_tick(
            measured_j=joules,
            seconds=measurement.seconds,
            consumers=consumers_by_device.get(device_id, []),
            idle_w=idle_w_by_device[device_id],
            device_busy_s=measurement.busy_s_by_device.get(device_id),
            idle_policy=idle_policy,
        )
        _add(total, part.joules_by_owner)
        idle_j += part.idle_j
    return Attribution(joules_by_owner=total, measured_j=measurement.joules, idle_j=idle_j)


@dataclass
class Ledger:
    """Attributed joules added up over ticks, next to the measured total they must match."""

    joules_by_owner: dict[str, float] = field(default_factory=dict)
    measured_j: float = 0.0
    ticks: int = 0

    def add(self, attribution: Attribution) -> None:
        _add(self.joules_by_owner, attribution.joules_by_owner)
        self.measured_j += attribution.measured_j
        self.ticks += 1

    @property
    def attributed_j(self) -> float:
        return math.fsum(self.joules_by_owner.values())

    @property
    def rel_error(self) -> float:
        """|attributed - measured| / measured (0 when nothing was measured)."""
        return abs(self.attributed_j - self.measured_j) / self.measured_j if self.measured_j else 0.0

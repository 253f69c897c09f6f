"""Attribution: the stated rule's arithmetic, its idle policies, and that every tick sums to what was measured."""

from __future__ import annotations

import math
import random

import pytest

from garrison.core.types import Measurement
from garrison.energy.attribution import (
    IDLE_OWNER,
    OTHER_OWNER,
    Consumer,
    Ledger,
    attribute_measurement,
    attribute_tick,
    split_exact,
)


def tick(policy: str = "proportional", **kwargs):
    # 100 J over 10 s on a device idling at 2 W: 20 J idle floor, 80 J active.
    args = dict(
        measured_j=100.0,
        seconds=10.0,
        consumers=[Consumer("job:train", 3.0), Consumer("proc:serve", 1.0)],
        idle_w=2.0,
        device_busy_s=5.0,  # 1 s of busy time belongs to neither: another process
        idle_policy=policy,
    )
    args.update(kwargs)
    return attribute_tick(**args)


def test_proportional_policy_arithmetic():
    a = tick("proportional")
    assert a.idle_j == 20.0
    # active 80 J by busy share 3:1:1, idle 20 J in the same shares
    assert a.joules_by_owner == pytest.approx({"job:train": 48 + 12, "proc:serve": 16 + 4, OTHER_OWNER: 16 + 4})
    assert a.attributed_j == pytest.approx(a.measured_j, rel=1e-15)


def test_equal_policy_arithmetic():
    a = tick("equal")
    # idle 20 J in equal parts to the two tenants; (other) pays only for its busy time
    assert a.joules_by_owner == pytest.approx({"job:train": 48 + 10, "proc:serve": 16 + 10, OTHER_OWNER: 16})


def test_separate_policy_arithmetic():
    a = tick("separate")
    assert a.joules_by_owner == pytest.approx({"job:train": 48, "proc:serve": 16, OTHER_OWNER: 16, IDLE_OWNER: 20})


def test_batch_is_split_by_flop_share():
    serve = Consumer("batch:0", 1.0, flops_by_request={"req:a": 1e12, "req:b": 3e12})
    a = tick(consumers=[Consumer("job:train", 3.0), serve], device_busy_s=None)
    # no (other): device busy = consumers' 4 s; the batch's 25 J goes 1:3 to its requests
    assert a.joules_by_owner == pytest.approx({"job:train": 75.0, "req:a": 6.25, "req:b": 18.75})
    assert "batch:0" not in a.joules_by_owner


def test_batch_without_flops_is_split_equally():
    serve = Consumer("batch:0", 1.0, flops_by_request={"req:a": 0.0, "req:b": 0.0})
    a = tick(consumers=[serve], device_busy_s=None)
    assert a.joules_by_owner == pytest.approx({"req:a": 50.0, "req:b": 50.0})


def test_nobody_busy_is_idle_whatever_the_measured_energy():
    idle_consumers = [Consumer("job:train", 0.0), Consumer("proc:serve", 0.0)]
    assert tick(consumers=idle_consumers, device_busy_s=0.0).joules_by_owner == {IDLE_OWNER: 100.0}
    equal = tick("equal", consumers=idle_consumers, device_busy_s=0.0)
    assert equal.joules_by_owner == pytest.approx({"job:train": 50.0, "proc:serve": 50.0})


def test_energy_below_the_idle_floor_is_all_idle():
    a = tick(measured_j=5.0)  # less than 2 W x 10 s: the idle figure was high, but the total still holds
    assert a.idle_j == 5.0
    assert a.attributed_j == pytest.approx(5.0, rel=1e-15)


def test_consumers_busier_than_the_device_reading():
    # per-process times and /proc/stat are read at slightly different instants: the larger total wins, no (other)
    a = tick(device_busy_s=3.5)
    assert OTHER_OWNER not in a.joules_by_owner
    assert a.joules_by_owner == pytest.approx({"job:train": 75.0, "proc:serve": 25.0})


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="idle_policy"):
        tick("whoever-asks")
    with pytest.raises(ValueError, match="busy_s"):
        Consumer("x", -1.0)
    with pytest.raises(ValueError, match="FLOPs"):
        Consumer("x", 1.0, {"r": -5.0})
    with pytest.raises(ValueError, match="unique"):
        tick(consumers=[Consumer("a", 1.0), Consumer("a", 2.0)])
    with pytest.raises(ValueError, match=">= 0"):
        tick(measured_j=-1.0)
    with pytest.raises(ValueError):
        split_exact(1.0, {"a": 0.0})


def test_split_exact_sums_to_the_total():
    rng = random.Random(0)
    for _ in range(2000):
        total = rng.uniform(0, 1e6)
        weights = {f"k{i}": rng.random() for i in range(rng.randint(1, 9))}
        parts = split_exact(total, weights)
        assert abs(math.fsum(parts.values()) - total) <= 2 * math.ulp(total)
        assert all(p >= 0 for p in parts.values())


def test_random_ticks_sum_exactly_over_a_ledger():
    rng = random.Random(1)
    ledger = Ledger()
    for _ in range(500):
        consumers = [Consumer(f"job:{i}", rng.choice([0.0, rng.uniform(0, 2)])) for i in range(rng.randint(0, 4))]
        consumers.append(Consumer("batch", rng.uniform(0, 1), {f"req:{j}": rng.uniform(0, 1e12) for j in range(3)}))
        ledger.add(
            attribute_tick(
                measured_j=rng.uniform(0, 500),
                seconds=rng.uniform(0.05, 2),
                consumers=consumers,
                idle_w=rng.uniform(0, 200),
                device_busy_s=rng.choice([None, rng.uniform(0, 4)]),
                idle_policy=rng.choice(["proportional", "equal", "separate"]),
            )
        )
    assert ledger.ticks == 500
    assert ledger.rel_error < 1e-12


def test_attribute_a_measurement_over_devices():
    m = Measurement(
        name="tick",
        seconds=1.0,
        joules_by_device={"gpu:0": 700.0, "gpu:1": 100.0},
        source="nvml",
        busy_s_by_device={"gpu:0": 1.0},
    )
    a = attribute_measurement(
        m,
        {"gpu:0": [Consumer("req:a", 0.5), Consumer("job:train", 0.25)], "gpu:1": []},
        {"gpu:0": 70.0, "gpu:1": 70.0},
    )
    assert a.attributed_j == pytest.approx(800.0, rel=1e-15)
    assert a.joules_by_owner == pytest.approx(
        {"req:a": 350.0, "job:train": 175.0, OTHER_OWNER: 175.0, IDLE_OWNER: 100.0}
    )
    with pytest.raises(ValueError, match="gpu:7"):
        attribute_measurement(m, {"gpu:7": [Consumer("x", 1.0)]}, {"gpu:0": 1.0, "gpu:1": 1.0})
    with pytest.raises(ValueError, match="idle power"):
        attribute_measurement(m, {}, {"gpu:0": 1.0})

"""The window interface every backend shares: errors for misuse, overlapping windows, gap-free laps."""

from __future__ import annotations

import pytest

from garrison.core.types import Measurement
from garrison.energy.meters import EstimateMeter, ReplayClock, WindowError
from garrison.hardware.cpu import CLOCK_TICKS_PER_S, CpuPowerModel


class Proc:
    """A written /proc/stat whose busy time the test moves, so every joule below is known in advance."""

    def __init__(self, root):
        self.root, self.busy_ticks = root, 0
        self.write()

    def write(self) -> None:
        (self.root / "stat").write_text(f"cpu  {self.busy_ticks} 0 0 1000 0 0 0 0 0 0\n")

    def work(self, cpu_s: float) -> None:
        self.busy_ticks += round(cpu_s * CLOCK_TICKS_PER_S)
        self.write()


@pytest.fixture
def setup(tmp_path):
    proc, clock = Proc(tmp_path), ReplayClock()
    meter = EstimateMeter(
        power=CpuPowerModel(active_w_per_core=3.0, idle_w_per_core=1.0, cores=2), proc_root=tmp_path, clock=clock
    )
    return meter, proc, clock


def test_misused_windows_are_errors(setup):
    meter, _, _ = setup
    with pytest.raises(WindowError, match="never begun"):
        meter.end_window("nope")
    meter.begin_window("a")
    with pytest.raises(WindowError, match="already open"):
        meter.begin_window("a")
    meter.end_window("a")
    with pytest.raises(WindowError, match="already ended"):
        meter.end_window("a")
    with pytest.raises(WindowError):
        meter.lap("a")


def test_overlapping_windows_each_get_their_own_energy(setup):
    meter, proc, clock = setup
    meter.begin_window("outer")
    proc.work(1.0)
    clock.now_s = 1.0
    meter.begin_window("inner")
    proc.work(2.0)
    clock.now_s = 2.0
    inner = meter.end_window("inner")
    outer = meter.end_window("outer")
    assert inner.joules == pytest.approx(2 * 1.0 * 1.0 + 2.0 * 2.0)  # idle floor + (3 - 1) W x 2 CPU-s
    assert outer.joules == pytest.approx(2 * 1.0 * 2.0 + 2.0 * 3.0)
    assert meter.open_windows() == []


def test_laps_are_gap_free_and_add_up_to_the_whole(setup):
    meter, proc, clock = setup
    meter.begin_window("run")
    meter.begin_window("tick")
    ticks = []
    for k in range(1, 6):
        proc.work(0.3 * k)
        clock.now_s = float(k)
        ticks.append(meter.lap("tick"))
    whole = meter.end_window("run")
    assert sum(t.joules for t in ticks) == pytest.approx(whole.joules, rel=1e-12)
    assert sum(t.seconds for t in ticks) == pytest.approx(whole.seconds)


def test_measurement_refuses_impossible_values():
    with pytest.raises(ValueError, match="source"):
        Measurement(name="x", seconds=1.0, joules_by_device={"cpu:0": 1.0}, source="guess")
    with pytest.raises(ValueError, match="joules"):
        Measurement(name="x", seconds=1.0, joules_by_device={"cpu:0": -1.0}, source="rapl")
    with pytest.raises(ValueError, match="seconds"):
        Measurement(name="x", seconds=-1.0, joules_by_device={}, source="rapl")

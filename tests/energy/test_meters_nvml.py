"""NVML meter logic replayed from a recorded trace (see data/README.md for the trace's provenance).

The meter under test is the real NvmlMeter: the same counter checks, the same power polling and integration that run
on a GPU. Only the readings come from the trace, at the replay clock's time, as Zeus's ReplayZeusMonitor does.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from garrison.core.types import Device
from garrison.energy.meters import (
    CounterError,
    MeterError,
    NvmlMeter,
    ReplayClock,
    ReplayNvmlSource,
    visible_gpus,
)

TRACE = Path(__file__).with_name("data") / "nvml_h100_wan13b.csv"
AVG_ACTIVE_W = 678.2  # ML.ENERGY v3: Wan 2.1 1.3B on one H100, the figure the trace is built around
IDLE_W = 72.0
GPUS = [
    Device(id="gpu:0", kind="gpu", index=0, name="NVIDIA H100 80GB HBM3", chip="h100-sxm"),
    Device(id="gpu:1", kind="gpu", index=1, name="NVIDIA H100 80GB HBM3", chip="h100-sxm"),
]


def replay(trace: Path = TRACE, poll_interval_s: float = 0.1) -> tuple[NvmlMeter, ReplayClock]:
    clock = ReplayClock(start_s=0.1)
    meter = NvmlMeter(
        ReplayNvmlSource(trace, clock), GPUS, clock=clock, poll_interval_s=poll_interval_s, start_thread=False
    )
    return meter, clock


def run_window(meter: NvmlMeter, clock: ReplayClock, start_s: float, end_s: float, name: str = "w"):
    step = meter.poll_interval_s
    clock.advance_to(start_s, step, meter.poll_once)
    meter.begin_window(name)
    clock.advance_to(end_s, step, meter.poll_once)
    return meter.end_window(name)


def test_counter_gpu_and_polled_gpu_are_told_apart():
    meter, _ = replay()
    assert [d.id for d in meter.counter_devices] == ["gpu:0"]
    assert meter.info()["power_polling"] == ["gpu:1"]


def test_counter_window_over_one_generation_matches_the_source_figure():
    meter, clock = replay()
    m = run_window(meter, clock, 3.0, 27.0)  # GPU 0 generates from 3 s to 27 s
    assert m.source == "nvml"
    assert m.seconds == pytest.approx(24.0)
    assert m.joules_by_device["gpu:0"] == pytest.approx(AVG_ACTIVE_W * 24.0, rel=1e-4)


def test_integrated_power_over_one_generation_matches_the_source_figure():
    meter, clock = replay()
    m = run_window(meter, clock, 4.0, 28.0)  # GPU 1 runs the same job 1 s later, without a counter
    assert m.joules_by_device["gpu:1"] == pytest.approx(AVG_ACTIVE_W * 24.0, rel=2e-3)


def test_idle_window():
    meter, clock = replay()
    m = run_window(meter, clock, 0.5, 2.5)
    for device_id in ("gpu:0", "gpu:1"):
        assert m.joules_by_device[device_id] == pytest.approx(IDLE_W * 2.0, rel=0.02)


def test_counter_and_integration_agree_over_the_whole_trace_with_off_grid_boundaries():
    meter, clock = replay()
    m = run_window(meter, clock, 0.25, 29.95)
    counter_j, integrated_j = m.joules_by_device["gpu:0"], m.joules_by_device["gpu:1"]
    assert integrated_j == pytest.approx(counter_j, rel=0.01)


def test_coarser_polling_costs_accuracy_but_stays_near():
    meter, clock = replay(poll_interval_s=0.5)
    m = run_window(meter, clock, 4.0, 28.0)
    assert m.joules_by_device["gpu:1"] == pytest.approx(AVG_ACTIVE_W * 24.0, rel=0.03)


def _edited_trace(tmp_path: Path, edit) -> Path:
    rows = list(csv.DictReader(open(TRACE)))
    for row in rows:
        edit(row)
    out = tmp_path / "edited.csv"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["time_s", "gpu", "power_mw", "energy_mj"])
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_counter_going_back_is_an_error(tmp_path):
    def reset_after_10s(row):  # as if the driver reloaded at 10 s
        if row["gpu"] == "0" and float(row["time_s"]) >= 10.0:
            row["energy_mj"] = str(int(row["energy_mj"]) - 1_000_000_000)

    meter, clock = replay(_edited_trace(tmp_path, reset_after_10s))
    with pytest.raises(CounterError, match="went back"):
        run_window(meter, clock, 5.0, 15.0)


def test_negative_power_reading_is_discarded_and_noted(tmp_path):
    def glitch(row):
        if row["gpu"] == "1" and row["time_s"] == "10.0":
            row["power_mw"] = "-5000"

    meter, clock = replay(_edited_trace(tmp_path, glitch))
    m = run_window(meter, clock, 4.0, 28.0)
    assert any("discarded" in note for note in m.notes)
    # the next reading covers the gap, so the total barely moves
    assert m.joules_by_device["gpu:1"] == pytest.approx(AVG_ACTIVE_W * 24.0, rel=5e-3)


def test_trace_problems_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("time_s,gpu,power_mw,energy_mj\n1.0,0,100,5\n0.5,0,100,6\n")
    with pytest.raises(ValueError, match="bad.csv:3"):
        ReplayNvmlSource(bad, ReplayClock())
    clock = ReplayClock(start_s=0.0)  # before the first reading at 0.1 s
    with pytest.raises(MeterError, match="before GPU 0's first reading"):
        NvmlMeter(ReplayNvmlSource(TRACE, clock), GPUS, clock=clock, start_thread=False)
    clock = ReplayClock(start_s=1.0)
    unknown = Device(id="gpu:5", kind="gpu", index=5, name="?")
    with pytest.raises(MeterError, match="no GPU 5"):
        NvmlMeter(ReplayNvmlSource(TRACE, clock), [unknown], clock=clock, start_thread=False)


def _four_gpus() -> list[Device]:
    return [
        Device(
            id=f"gpu:{i}", kind="gpu", index=i, name="NVIDIA H100 80GB HBM3", chip="h100-sxm", uuid=f"GPU-{i}a7c-{i}"
        )
        for i in range(4)
    ]


def test_a_gpu_worker_meters_only_the_gpus_its_cuda_visible_devices_names():
    gpus = _four_gpus()
    ordered = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert visible_gpus(gpus, {}) == (gpus, "")  # unset: the whole machine
    chosen, note = visible_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "2", **ordered})
    assert [g.id for g in chosen] == ["gpu:2"] and "CUDA_DEVICE_ORDER" not in note
    chosen, _ = visible_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "3, 1", **ordered})
    assert [g.id for g in chosen] == ["gpu:3", "gpu:1"]
    chosen, note = visible_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "GPU-1a7c"})  # a UUID prefix, as CUDA accepts
    assert [g.id for g in chosen] == ["gpu:1"] and "CUDA_DEVICE_ORDER" not in note
    assert visible_gpus(gpus, {"CUDA_VISIBLE_DEVICES": ""})[0] == []
    # Integer indices without PCI bus order may mean other GPUs to CUDA: metered, with a note that says so.
    chosen, note = visible_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "0"})
    assert [g.id for g in chosen] == ["gpu:0"] and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in note
    # An entry that names no GPU here (a MIG instance, a typo) keeps the whole list rather than guessing.
    chosen, note = visible_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "MIG-abc"})
    assert chosen == gpus and "names no single GPU" in note
    assert visible_gpus(gpus, {"CUDA_VISIBLE_DEVICES": "7"})[0] == gpus

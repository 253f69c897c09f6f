"""Device discovery: GPUs through NVML when a driver answers, else the CPU, always with a reason."""

from __future__ import annotations

import sys

import pytest

from garrison.core.types import Device
from garrison.hardware.catalog import get_chip
from garrison.hardware.devices import chip_for_device, cpu_device, discover_devices, nvml_gpus


def test_discovery_finds_gpus_or_falls_back_to_the_cpu_with_a_reason():
    found = discover_devices()
    assert found.reason
    if found.backend == "nvml":  # on a machine with an NVIDIA driver
        assert all(d.kind == "gpu" and d.id == f"gpu:{d.index}" for d in found.devices)
    else:
        assert found.backend == "cpu"
        assert found.devices == [cpu_device()]
        assert "NVML" in found.reason or "nvidia-ml-py" in found.reason


def test_missing_nvml_package_is_a_reason_not_a_crash(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    gpus, reason = nvml_gpus()
    assert gpus == [] and "not installed" in reason
    assert discover_devices().devices == [cpu_device()]


def test_cpu_device_shape():
    cpu = cpu_device()
    assert (cpu.id, cpu.kind, cpu.chip) == ("cpu:0", "cpu", "cpu")
    assert cpu.cores >= 1


def test_chip_for_a_gpu_device():
    gpu = Device(id="gpu:0", kind="gpu", index=0, name="NVIDIA H100 80GB HBM3", chip="h100-sxm")
    assert chip_for_device(gpu) == get_chip("h100-sxm")
    unknown = Device(id="gpu:1", kind="gpu", index=1, name="Mystery GPU")
    with pytest.raises(ValueError, match="not in the hardware catalog"):
        chip_for_device(unknown)


def test_core_slots_are_the_cpus_this_process_may_use():
    import os

    from garrison.hardware.devices import core_slot_devices, fleet_devices

    allowed = sorted(os.sched_getaffinity(0))
    slots = core_slot_devices()
    assert [d.index for d in slots] == allowed
    assert all(d.kind == "cpu-core" and d.id == f"core:{d.index}" for d in slots)
    assert len(core_slot_devices(1)) == 1
    with pytest.raises(ValueError, match="core slots"):
        core_slot_devices(len(allowed) + 1)
    discovery = fleet_devices()
    if discovery.backend == "cpu":  # a machine without NVIDIA GPUs schedules its cores
        assert "core slots" in discovery.reason and discovery.devices == slots


def test_a_cpu_core_has_no_settable_power_limit():
    from garrison.hardware.devices import core_slot_devices
    from garrison.hardware.power_limit import PowerLimitError, power_limit_info, set_power_limit

    core = core_slot_devices(1)[0]
    info = power_limit_info(core)
    assert not info.settable and "no per-device limit" in info.reason
    with pytest.raises(PowerLimitError, match="not settable"):
        set_power_limit(core, 100.0)


def test_a_core_slot_is_its_own_device_and_its_own_chip(monkeypatch, cpu_peak_cache):
    import torch

    from garrison.hardware import devices
    from garrison.hardware.cpu import CpuPowerModel, cpu_chip, cpu_peak
    from garrison.hardware.devices import core_device, core_index, cpu_scope_device

    assert core_index("core:3") == 3 and core_index("cpu:0") is None and core_index("gpu:1") is None
    assert core_index("core:x") is None
    core = core_device(1)
    assert (core.id, core.kind, core.index, core.cores) == ("core:1", "cpu-core", 1, 1)
    assert cpu_scope_device([1]) == core and cpu_scope_device(None) == cpu_device()
    pair = cpu_scope_device([0, 2])
    assert (pair.id, pair.kind, pair.cores) == ("cpu:0", "cpu", 2)
    # One core: one thread's share of the measured peak, one core's active watts.
    cpu_peak_cache(fp32_flops=40e9 * torch.get_num_threads(), bf16_flops=80e9 * torch.get_num_threads())
    power = CpuPowerModel(active_w_per_core=5.0, idle_w_per_core=1.0)
    chip = chip_for_device(core, power)
    assert chip.tdp_w == pytest.approx(5.0)
    assert chip.flop_per_joule("fp32") == pytest.approx(40e9 / 5.0)
    monkeypatch.setattr(devices, "cpu_core_count", lambda: 4)  # two of four CPUs: a chip of two cores
    assert chip_for_device(pair, power).peak_flops("bf16") == pytest.approx(2 * 80e9)
    assert chip_for_device(pair, power).tdp_w == pytest.approx(10.0)
    whole = Device(id="cpu:0", kind="cpu", index=0, name="x", chip="cpu", cores=4)
    assert chip_for_device(whole, power) == cpu_chip(cpu_peak(), power)  # the whole CPU: as before


def test_pinned_cores_are_none_unless_the_process_is_pinned_to_a_subset(monkeypatch):
    import os

    from garrison.hardware import devices

    monkeypatch.setattr(devices, "cpu_core_count", lambda: 4)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert devices.pinned_cores() is None
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 1})
    assert devices.pinned_cores() == [1, 3]

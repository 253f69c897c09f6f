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

"""Device discovery: the NVIDIA GPUs NVML can see, else the host CPU as one device.

NVML is reached through `nvidia-ml-py` (the `pynvml` module NVIDIA publishes); it is tried only when importable and
a driver answers `nvmlInit`. Every way that can fail (no package, no driver, no GPU) is a reason string, never an
exception, so that a CPU-only machine discovers its CPU and says why it found no GPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from garrison.core.types import Device
from garrison.hardware.catalog import Chip, get_chip, load_catalog, match_nvml_name
from garrison.hardware.cpu import CpuPowerModel, cpu_chip, cpu_core_count, cpu_model_name, cpu_peak

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Discovery:
    """What discovery found: the devices, which backend found them ("nvml" or "cpu"), and why."""

    devices: list[Device]
    backend: str
    reason: str


def cpu_device() -> Device:
    """The host CPU as one device: "cpu:0", all logical CPUs."""
    return Device(id="cpu:0", kind="cpu", index=0, name=cpu_model_name(), chip="cpu", cores=cpu_core_count())


def core_device(cpu: int, name: str | None = None) -> Device:
    """Logical CPU `cpu` as a device "core:N" (a core slot: the governor's unit on a CPU-only machine)."""
    name = name or cpu_model_name()
    return Device(id=f"core:{cpu}", kind="cpu-core", index=cpu, name=f"{name} logical CPU {cpu}", chip="cpu", cores=1)


def core_index(device_id: str) -> int | None:
    """N for a core slot's id "core:N"; None for any other device id ("cpu:0", "gpu:1")."""
    kind, _, index = device_id.partition(":")
    return int(index) if kind == "core" and index.isdigit() else None


def pinned_cores() -> list[int] | None:
    """The logical CPUs this process is pinned to (sched_getaffinity), or None when it may run on all of them.

    A process pinned to some cores (`taskset -c 1 garrison generate ...`, or a core slot) can only spend energy on
    those, so its meter is scoped to them; an unpinned one may run anywhere and is metered on the whole machine.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return allowed if 0 < len(allowed) < cpu_core_count() else None


def cpu_scope_device(cores: list[int] | None) -> Device:
    """The device that metered `cores` make: the whole CPU (None), one core slot "core:N", or N logical CPUs."""
    if cores is None:
        return cpu_device()
    if len(cores) == 1:
        return core_device(cores[0])
    return Device(id="cpu:0", kind="cpu", index=0, name=cpu_model_name(), chip="cpu", cores=len(cores))


def _text(value: str | bytes) -> str:
    # Older pynvml releases return bytes for names and UUIDs, newer ones str.
    return value.decode() if isinstance(value, bytes) else value


def nvml_gpus() -> tuple[list[Device], str]:
    """GPUs visible to NVML, and a sentence saying what happened (why none were found, if none were)."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], f"NVML did not start ({exc}): no NVIDIA driver on this machine"
    try:
        catalog = load_catalog()
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(pynvml.nvmlDeviceGetName(handle))
            chip = match_nvml_name(name, catalog)
            if chip is None:
                log.warning("GPU %d %r is not in the hardware catalog; add a chip JSON to know its peak", index, name)
            gpus.append(
                Device(
                    id=f"gpu:{index}",
                    kind="gpu",
                    index=index,
                    name=name,
                    chip=chip.key if chip else None,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                )
            )
    except pynvml.NVMLError as exc:
        return [], f"NVML started but listing GPUs failed ({exc})"
    finally:
        pynvml.nvmlShutdown()
    if not gpus:
        return [], "NVML found no GPU"
    return gpus, f"NVML found {len(gpus)} GPU(s)"


def discover_devices() -> Discovery:
    """NVML GPUs when there are any, else the CPU as one device."""
    gpus, reason = nvml_gpus()
    if gpus:
        return Discovery(devices=gpus, backend="nvml", reason=reason)
    return Discovery(devices=[cpu_device()], backend="cpu", reason=f"{reason}; using the CPU as the device")


def chip_for_device(device: Device, power: CpuPowerModel | None = None) -> Chip:
    """The catalog chip of a device; for the CPU, its measured (cached) peak with the per-core power assumption."""
    if device.kind == "cpu":  # the whole CPU, or the logical CPUs a pinned process may use
        return cpu_chip(cpu_peak(), power, cores=device.cores if device.cores != cpu_core_count() else None)
    if device.kind == "cpu-core":  # a core slot: one core's share of the CPU's peak and of its power
        return cpu_chip(cpu_peak(), power, cores=device.cores or 1)
    if device.chip is None:
        raise ValueError(f"device {device.id} ({device.name}) is not in the hardware catalog; add a chip JSON for it")
    return get_chip(device.chip)


def core_slot_devices(slots: int | None = None) -> list[Device]:
    """The CPU's logical cores as devices "core:0".."core:N-1": the governor's unit on a CPU-only machine.

    A slot is one logical CPU that a worker or training process is pinned to (sched_setaffinity), so that serving
    and training on the same machine share it the way they would share GPUs: whole devices, not time slices.
    """
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(cpu_core_count()))
    count = len(available) if slots is None else slots
    if not 1 <= count <= len(available):
        raise ValueError(f"asked for {count} core slots; this machine lets garrison use {len(available)}")
    name = cpu_model_name()
    return [core_device(cpu, name) for cpu in available[:count]]


def fleet_devices(slots: int | None = None) -> Discovery:
    """The devices the governor schedules: every NVML GPU, else every CPU core slot."""
    gpus, reason = nvml_gpus()
    if gpus:
        return Discovery(devices=gpus[:slots] if slots else gpus, backend="nvml", reason=reason)
    cores = core_slot_devices(slots)
    return Discovery(devices=cores, backend="cpu", reason=f"{reason}; each of {len(cores)} CPU core slots is a device")

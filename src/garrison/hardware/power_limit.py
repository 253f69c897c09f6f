"""Device power limits: read and set them where the hardware allows, say why not where it does not.

NVML's `nvmlDeviceSetPowerManagementLimit` needs root (or the admin's `nvidia-smi -acp UNRESTRICTED`) and a GPU that
supports it; the limit must lie in `nvmlDeviceGetPowerManagementLimitConstraints`. CPU core slots have no per-core
power limit (RAPL's package limit is machine-wide and root-only): `CpuSlotLimiter` below limits their CPU bandwidth
instead, and says so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from garrison.core.types import Device
from garrison.hardware.cpu import CpuPowerModel

log = logging.getLogger(__name__)


class PowerLimitError(RuntimeError):
    """A power limit could not be read or set; the message says why."""


@dataclass(frozen=True)
class PowerLimitInfo:
    """A device's power limit now, the range it accepts, and whether garrison can change it (and if not, why)."""

    device_id: str
    settable: bool
    current_w: float | None
    min_w: float | None
    max_w: float | None
    default_w: float | None
    reason: str


def power_limit_info(device: Device) -> PowerLimitInfo:
    """What garrison knows about `device`'s power limit; never raises."""
    if device.kind != "gpu":
        return PowerLimitInfo(device.id, False, None, None, None, None, f"{device.kind} has no per-device limit")
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # ImportError or NVMLError: either way the limit cannot be reached
        return PowerLimitInfo(device.id, False, None, None, None, None, f"NVML unavailable: {exc}")
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index)
        min_mw, max_mw = pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
        current_mw = pynvml.nvmlDeviceGetPowerManagementLimit(handle)
        default_mw = pynvml.nvmlDeviceGetPowerManagementDefaultLimit(handle)
        return PowerLimitInfo(
            device.id, True, current_mw / 1000, min_mw / 1000, max_mw / 1000, default_mw / 1000, "NVML power limit"
        )
    except pynvml.NVMLError as exc:
        return PowerLimitInfo(device.id, False, None, None, None, None, f"NVML cannot read the power limit: {exc}")
    finally:
        pynvml.nvmlShutdown()


def set_power_limit(device: Device, watts: float) -> float:
    """Set `device`'s power limit to `watts` (clamped to its accepted range); returns the limit now in force.

    Raises PowerLimitError when the device has no settable limit or the driver refuses (no permission).
    """
    info = power_limit_info(device)
    if not info.settable or info.min_w is None or info.max_w is None:
        raise PowerLimitError(f"{device.id}: power limit not settable ({info.reason})")
    target_w = min(max(watts, info.min_w), info.max_w)
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index)
        pynvml.nvmlDeviceSetPowerManagementLimit(handle, int(round(target_w * 1000)))
        now_w = pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000
    except pynvml.NVMLError as exc:
        raise PowerLimitError(f"{device.id}: the driver refused a {target_w:.0f} W limit ({exc})") from exc
    finally:
        pynvml.nvmlShutdown()
    log.info("power limit of %s set to %.0f W (asked %.0f W)", device.id, now_w, watts)
    return now_w


# --- CPU core slots: a power limit through CPU bandwidth control -------------------------------------------------
#
# A CPU core has no power limit of its own that garrison can set (RAPL's package limit is machine-wide). What Linux
# does offer per process group is CFS bandwidth control: at most `quota` microseconds of CPU per `period`. Under the
# CPU power model garrison states (idle + (active - idle) x utilisation, hardware/cpu.py), capping a slot's busy
# fraction caps its power, so a slot's "power limit" in watts becomes the quota that keeps utilisation below
# (limit - idle) / (active - idle). cgroup v2 (`cpu.max`) is used where it is mounted with the cpu controller, else
# cgroup v1 (`cpu.cfs_quota_us`); without either, slots are not settable and say why.

CGROUP_ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000


def _cgroup_cpu_base(root: Path = CGROUP_ROOT) -> tuple[Path | None, str, str]:
    """Where garrison may make CPU cgroups: (folder, "v1" | "v2", reason)."""
    v2 = root / "cgroup.controllers"
    if v2.exists() and "cpu" in v2.read_text().split():
        return root, "v2", "cgroup v2 cpu.max"
    v1 = root / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        return v1, "v1", "cgroup v1 cpu.cfs_quota_us"
    return None, "", f"no writable CPU cgroup controller under {root}"


class CpuSlotLimiter:
    """Per-slot CPU bandwidth limits in cgroups named garrison-<owner>/<slot>; `close()` removes them."""

    def __init__(self, power: CpuPowerModel, owner: str | None = None, root: Path = CGROUP_ROOT):
        self.power = power
        base, self.version, self.reason = _cgroup_cpu_base(root)
        self.group: Path | None = None
        if base is not None:
            group = base / f"garrison-{owner or os.getpid()}"
            try:
                group.mkdir(exist_ok=True)
                self.group = group
            except OSError as exc:
                self.reason = f"cannot create {group} ({exc.strerror}): run as root or delegate a cgroup"
        self._limits_w: dict[str, float] = {}

    @property
    def available(self) -> bool:
        return self.group is not None

    def _slot(self, device: Device) -> Path:
        if self.group is None:
            raise PowerLimitError(f"{device.id}: power limit not settable ({self.reason})")
        path = self.group / device.id.replace(":", "-")
        path.mkdir(exist_ok=True)
        return path

    def attach(self, device: Device, pid: int) -> None:
        """Put process `pid` into `device`'s slot group, so the slot's limit applies to it."""
        (self._slot(device) / "cgroup.procs").write_text(str(pid))

    def info(self, device: Device) -> PowerLimitInfo:
        p = self.power
        if self.group is None:
            return PowerLimitInfo(device.id, False, None, None, None, None, self.reason)
        # the floor keeps a slot able to make progress (10% busy): a limit of zero would hang its work forever
        min_w = p.idle_w_per_core + 0.1 * (p.active_w_per_core - p.idle_w_per_core)
        current = self._limits_w.get(device.id, p.active_w_per_core)
        return PowerLimitInfo(
            device.id, True, current, min_w, p.active_w_per_core, p.active_w_per_core, f"{self.reason} (estimate)"
        )

    def set(self, device: Device, watts: float) -> float:
        info = self.info(device)
        if not info.settable or info.min_w is None or info.max_w is None:
            raise PowerLimitError(f"{device.id}: power limit not settable ({info.reason})")
        target_w = min(max(watts, info.min_w), info.max_w)
        p = self.power
        fraction = (target_w - p.idle_w_per_core) / (p.active_w_per_core - p.idle_w_per_core)
        slot = self._slot(device)
        quota_us = -1 if target_w >= info.max_w else max(1000, int(fraction * CFS_PERIOD_US))
        if self.version == "v2":
            (slot / "cpu.max").write_text(f"{'max' if quota_us < 0 else quota_us} {CFS_PERIOD_US}")
        else:
            (slot / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (slot / "cpu.cfs_quota_us").write_text(str(quota_us))
        self._limits_w[device.id] = target_w
        return target_w

    def close(self) -> None:
        """Move our processes back to the root group and remove the slot groups."""
        if self.group is None:
            return
        root_procs = self.group.parent / "cgroup.procs"
        for slot in [p for p in self.group.iterdir() if p.is_dir()]:
            try:
                for pid in (slot / "cgroup.procs").read_text().split():
                    try:
                        root_procs.write_text(pid)
                    except OSError:
                        pass  # the process is gone
                slot.rmdir()
            except OSError as exc:
                log.warning("could not remove %s: %s", slot, exc)
        try:
            self.group.rmdir()
        except OSError as exc:
            log.warning("could not remove %s: %s", self.group, exc)
        self.group = None

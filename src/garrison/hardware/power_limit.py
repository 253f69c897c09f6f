"""Device power limits: read and set them where the hardware allows (NVML), say why not where it does not.

NVML's `nvmlDeviceSetPowerManagementLimit` needs root (or the admin's `nvidia-smi -acp UNRESTRICTED`) and a GPU that
supports it; the limit must lie in `nvmlDeviceGetPowerManagementLimitConstraints`. CPU core slots have no per-core
limit garrison can set (RAPL's package limit is machine-wide and root-only), so they report `settable=False` with the
reason, and the governor skips that rung of its ladder for them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from garrison.core.types import Device

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

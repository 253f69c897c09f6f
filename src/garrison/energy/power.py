"""Per-device power, sampled once per control period: what the governor's power-cap controller reads.

Meters (meters.py) answer "how many joules did this window take"; the controller needs "how many watts is each
device drawing now". GPUs: NVML's power reading (milliwatts, averaged by the driver over about a second). CPU core
slots: the estimate meter's stated model applied per logical CPU, from the busy time /proc/stat gives each core
between two samples, so the readings carry source "estimate" exactly like the joules they add up to.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from garrison.core.types import Device
from garrison.hardware.cpu import CLOCK_TICKS_PER_S, CpuPowerModel, process_cpu_s, read_per_cpu_times


def process_age_s(pid: int, proc_root: Path = Path("/proc")) -> float:
    """Seconds since process `pid` started: /proc/uptime minus its start time (field 22 of /proc/PID/stat)."""
    text = (proc_root / str(pid) / "stat").read_text()
    start_ticks = int(text[text.rindex(")") + 2 :].split()[19])
    return float((proc_root / "uptime").read_text().split()[0]) - start_ticks / CLOCK_TICKS_PER_S


@dataclass(frozen=True)
class PowerSample:
    """Watts per device averaged over `interval_s` ending at `time_s` (a monotonic clock), and where they came from."""

    time_s: float
    interval_s: float
    power_w_by_device: dict[str, float]
    source: str
    notes: tuple[str, ...] = field(default=())
    # CPU slots read by their pinned processes: each slot's logical CPU as a whole (0 to 1 busy, every program on it),
    # so a reader can tell garrison's work from other programs' (the planner's demo replay does); empty otherwise.
    cpu_utilisation_by_device: dict[str, float] = field(default_factory=dict)

    @property
    def total_w(self) -> float:
        return math.fsum(self.power_w_by_device.values())


class DevicePowerSampler:
    """`sample()` returns each device's average power since the previous call (the first call primes it)."""

    def __init__(
        self,
        devices: list[Device],
        power_model: CpuPowerModel | None = None,
        proc_root: Path = Path("/proc"),
        clock: Callable[[], float] = time.monotonic,
        pids_by_device: Callable[[], dict[str, list[int]]] | None = None,
    ):
        if not devices:
            raise ValueError("a power sampler needs at least one device")
        kinds = {d.kind for d in devices}
        if len(kinds) != 1 or kinds - {"gpu", "cpu-core"}:
            raise ValueError(f"devices must be all GPUs or all CPU core slots, got kinds {sorted(kinds)}")
        self.devices = devices
        self.kind = kinds.pop()
        self.power_model = power_model or CpuPowerModel.from_env()
        self.proc_root = proc_root
        self.clock = clock
        self.source = "nvml" if self.kind == "gpu" else "estimate"
        # CPU slots only: count the busy time of the processes pinned to each slot (garrison's own work) instead of
        # the whole logical CPU's, so other programs on a shared machine do not read as the fleet's power.
        self.pids_by_device = pids_by_device if self.kind == "cpu-core" else None
        self.scope = "pinned processes" if self.pids_by_device else ("device" if self.kind == "gpu" else "logical CPU")
        self._last_pid_s: dict[int, float] = {}
        self._last_time_s: float | None = None
        self._last_busy_s: dict[int, float] = {}
        self._last_cpu_busy_s: dict[int, float] = {}
        self._nvml = None
        if self.kind == "gpu":
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = {d.id: pynvml.nvmlDeviceGetHandleByIndex(d.index) for d in devices}
        self.sample()

    def _busy_s(self, interval_s: float) -> dict[int, float]:
        if self.pids_by_device is not None:
            return self._process_busy_s(interval_s)
        times = read_per_cpu_times(self.proc_root)
        return {d.index: times[d.index].busy_s for d in self.devices}

    def _process_busy_s(self, interval_s: float) -> dict[int, float]:
        """Cumulative busy seconds per slot from its pinned processes; a process that ended keeps what it used.

        A process first seen now that started within the last interval counts from zero: its CPU time since spawn
        (a serving worker importing torch and loading its model) is the slot's work in this interval. Any other
        newcomer (the first sample, an adopted process) counts from its first sighting.
        """
        totals = dict(getattr(self, "_slot_totals", {d.index: 0.0 for d in self.devices}))
        pids = self.pids_by_device() if self.pids_by_device else {}
        seen: dict[int, float] = {}
        for d in self.devices:
            for pid in pids.get(d.id, []):
                try:
                    now = process_cpu_s(pid, self.proc_root)
                except (OSError, ValueError, IndexError):
                    continue
                last = self._last_pid_s.get(pid)
                if last is None:
                    last = now
                    if interval_s > 0:
                        try:
                            last = 0.0 if process_age_s(pid, self.proc_root) <= interval_s else now
                        except (OSError, ValueError, IndexError):
                            pass
                totals[d.index] += max(0.0, now - last)
                seen[pid] = now
        self._last_pid_s = seen
        self._slot_totals = totals
        return totals

    def sample(self) -> PowerSample:
        now_s = self.clock()
        interval_s = 0.0 if self._last_time_s is None else now_s - self._last_time_s
        notes: list[str] = []
        power: dict[str, float] = {}
        if self._nvml is not None:
            for device_id, handle in self._handles.items():
                power[device_id] = self._nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        else:
            busy = self._busy_s(interval_s)
            m = self.power_model
            for d in self.devices:
                if interval_s <= 0 or d.index not in self._last_busy_s:
                    power[d.id] = m.idle_w_per_core
                    continue
                utilisation = (busy[d.index] - self._last_busy_s[d.index]) / interval_s
                if utilisation < 0 or utilisation > 1.05:  # /proc/stat ticks are 10 ms: allow rounding, flag beyond
                    notes.append(f"{d.id}: utilisation {utilisation:.2f} out of range, clamped")
                utilisation = min(max(utilisation, 0.0), 1.0)
                power[d.id] = m.idle_w_per_core + (m.active_w_per_core - m.idle_w_per_core) * utilisation
            self._last_busy_s = busy
        whole = self._cpu_utilisation(interval_s) if self.pids_by_device is not None else {}
        self._last_time_s = now_s
        return PowerSample(now_s, interval_s, power, self.source, tuple(notes), whole)

    def _cpu_utilisation(self, interval_s: float) -> dict[str, float]:
        """Each slot's logical CPU busy (every program on it, from /proc/stat) since the previous sample."""
        try:
            times = read_per_cpu_times(self.proc_root)
        except (OSError, ValueError):
            return {}
        out = {}
        for d in self.devices:
            if d.index not in times:
                continue
            last = self._last_cpu_busy_s.get(d.index)
            if last is not None and interval_s > 0:
                out[d.id] = round(min(max((times[d.index].busy_s - last) / interval_s, 0.0), 1.0), 4)
            self._last_cpu_busy_s[d.index] = times[d.index].busy_s
        return out

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml = None

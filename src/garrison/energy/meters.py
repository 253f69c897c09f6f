"""Energy meters behind one interface: `begin_window(name)` / `end_window(name) -> Measurement`.

Three backends, each labelled with its `source` in every Measurement it returns:

- `NvmlMeter` ("nvml"): NVIDIA GPUs. Where the GPU has a total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`,
  millijoules since the driver loaded; Volta and later) a window is the counter's difference. Where it has none,
  a thread polls `nvmlDeviceGetPowerUsage` (milliwatts) and `PowerIntegrator` integrates it.
- `RaplMeter` ("rapl"): CPU packages through `/sys/class/powercap/intel-rapl:N/energy_uj` (AMD Zen exposes the same
  tree). The counter wraps at `max_energy_range_uj`; each read compares with the last and counts wraps, and a thread
  reads often enough that no window can hide two wraps.
- `EstimateMeter` ("estimate"): no counter at all. CPU energy from a stated model, `CpuPowerModel.joules`:
  E = idle_w_per_core x cores x seconds + (active_w_per_core - idle_w_per_core) x busy CPU-seconds, the busy time
  read from /proc/stat (so it covers child processes and the device as a whole, like a real counter). Its scope is
  the whole machine (the aggregate `cpu` line, every core's idle power) or, given `cores`, just those logical CPUs
  (their `cpuN` lines, their idle power, one "core:N" device each), as NVML meters one GPU and not its neighbours.
  Its assumptions are printed by `garrison energy info`.

`get_meter()` picks the first that works in that order and says why the others did not.

Why nvidia-ml-py and not Zeus: garrison needs exactly two NVML readings (the energy counter and power) plus the power
limit calls the governor will add, behind its own window interface and its own `Measurement`. Zeus would bring those
through its monitor, which wants its own window bookkeeping, its own result type and a heavier dependency tree;
nvidia-ml-py is NVIDIA's own thin binding with no dependencies. What garrison takes from Zeus is the design:
counter where supported, polled power otherwise, and a replay of recorded traces for testing (`ReplayNvmlSource`,
after Zeus's ReplayZeusMonitor).

Bad input never yields a silently wrong number: a window begun twice, ended twice or never begun raises
`WindowError`; a counter that goes backwards without a known wrap range raises `CounterError`; a wrap or a
discarded reading is corrected, logged and written in the Measurement's `notes`.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from garrison.core.types import Device, Measurement
from garrison.hardware.cpu import (
    CLOCK_TICKS_PER_S,
    CpuPowerModel,
    cpu_model_name,
    read_cpu_times,
    read_per_cpu_times,
)
from garrison.hardware.devices import core_device, cpu_device, nvml_gpus

log = logging.getLogger(__name__)

DEFAULT_RAPL_ROOT = Path("/sys/class/powercap")
DEFAULT_PROC_ROOT = Path("/proc")
# A snapshot reads its counters between two clock reads; if the two are further apart than this (the thread was
# preempted mid-read), it reads again, up to SNAPSHOT_TRIES times, so that counters and time stay paired.
MAX_READ_SKEW_S = 0.002
SNAPSHOT_TRIES = 3
# Highest package power a RAPL zone is assumed to draw when choosing how often to read it: a wrap of a 262 kJ counter
# then takes at least 262 s, and reading every quarter of that can never miss one.
RAPL_MAX_PLAUSIBLE_W = 1000.0


class MeterError(RuntimeError):
    """Metering cannot give a correct number; the message says why."""


class WindowError(MeterError):
    """A window begun twice, or ended without being open (never begun, or already ended)."""


class CounterError(MeterError):
    """A counter moved in a way no correction can explain (went backwards with no known wrap range, vanished)."""


class NotSupportedError(Exception):
    """The device does not offer this reading (for example no total-energy counter before Volta)."""


@dataclass(frozen=True)
class Reading:
    """What a backend read: cumulative joules and busy seconds per device, corrected, and notes on any correction."""

    joules_by_device: dict[str, float]
    busy_s_by_device: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    """A Reading paired with the time it was taken: `time_s` is the middle of the read, `skew_s` half its span."""

    time_s: float
    unix_s: float
    joules_by_device: dict[str, float]
    busy_s_by_device: dict[str, float] = field(default_factory=dict)
    skew_s: float = 0.0
    notes: tuple[str, ...] = ()


class Meter(ABC):
    """One interface for every backend. Windows are named; any number may be open at once, overlapping freely."""

    source: str = ""

    def __init__(self, devices: list[Device], reason: str = "", clock: Callable[[], float] = time.perf_counter):
        self.devices = devices
        self.reason = reason
        self._clock = clock
        self._windows: dict[str, Snapshot] = {}
        self._notes: list[tuple[float, str]] = []  # (clock time, correction) for every adjusted reading
        self._lock = threading.RLock()

    @property
    def device_ids(self) -> list[str]:
        return [d.id for d in self.devices]

    @abstractmethod
    def _read(self) -> Reading:
        """Read every device's cumulative counter now (called under the meter's lock)."""

    def _snapshot(self) -> Snapshot:
        notes: list[str] = []
        for _ in range(SNAPSHOT_TRIES):
            t0_s = self._clock()
            reading = self._read()
            t1_s = self._clock()
            notes.extend(reading.notes)
            if t1_s - t0_s <= MAX_READ_SKEW_S:
                break
        for text in reading.notes:
            log.warning("%s meter: %s", self.source, text)
        return Snapshot(
            time_s=(t0_s + t1_s) / 2,
            unix_s=time.time() - (t1_s - t0_s) / 2,
            joules_by_device=reading.joules_by_device,
            busy_s_by_device=reading.busy_s_by_device,
            skew_s=(t1_s - t0_s) / 2,
            notes=tuple(notes),
        )

    def _energy_between(self, start: Snapshot, end: Snapshot, notes: list[str]) -> dict[str, float]:
        """Joules per device between two snapshots, appending to `notes` anything the window's figure should carry.

        Snapshots are monotonic by construction; a decrease here is a bug, and raises.
        """
        joules = {}
        for device_id, end_j in end.joules_by_device.items():
            delta_j = end_j - start.joules_by_device[device_id]
            if delta_j < 0:
                raise CounterError(f"{device_id}: energy went backwards by {-delta_j:.6g} J within a window")
            joules[device_id] = delta_j
        return joules

    def _note(self, text: str) -> None:
        """Record a correction made between window boundaries (by a background poll), with its time."""
        log.warning("%s meter: %s", self.source, text)
        self._notes.append((self._clock(), text))

    def begin_window(self, name: str) -> None:
        """Start measuring a window called `name`. WindowError if one by that name is already open."""
        with self._lock:
            if name in self._windows:
                raise WindowError(f"window {name!r} is already open; end it before beginning it again")
            self._windows[name] = self._snapshot()

    def end_window(self, name: str) -> Measurement:
        """End window `name` and return its energy. WindowError if it was never begun or was already ended."""
        with self._lock:
            start = self._windows.pop(name, None)
            if start is None:
                raise WindowError(f"window {name!r} is not open: it was never begun, or it was already ended")
            return self._measure(name, start, self._snapshot())

    def lap(self, name: str) -> Measurement:
        """End window `name` and reopen it at the same reading: back-to-back ticks with no gap between them."""
        with self._lock:
            start = self._windows.get(name)
            if start is None:
                raise WindowError(f"window {name!r} is not open: it was never begun, or it was already ended")
            end = self._snapshot()
            self._windows[name] = end
            return self._measure(name, start, end)

    def open_windows(self) -> list[str]:
        with self._lock:
            return list(self._windows)

    def _measure(self, name: str, start: Snapshot, end: Snapshot) -> Measurement:
        notes = [text for t, text in self._notes if start.time_s < t <= end.time_s] + list(end.notes)
        if not self._windows:  # nothing open can need older notes
            self._notes = [(t, text) for t, text in self._notes if t > end.time_s]
        joules = self._energy_between(start, end, notes)
        busy: dict[str, float] = {}
        for device_id in end.busy_s_by_device.keys() & start.busy_s_by_device.keys():
            busy_s = end.busy_s_by_device[device_id] - start.busy_s_by_device[device_id]
            if busy_s < 0:
                notes.append(f"{device_id}: busy time went backwards by {-busy_s:.3f} s; reported as 0")
                busy_s = 0.0
            busy[device_id] = busy_s
        return Measurement(
            name=name,
            seconds=end.time_s - start.time_s,
            joules_by_device=joules,
            source=self.source,
            start_unix_s=start.unix_s,
            notes=tuple(notes),
            busy_s_by_device=busy,
        )

    def info(self) -> dict[str, Any]:
        """What this meter measures and how, for `garrison energy info`."""
        return {"source": self.source, "reason": self.reason, "devices": [d.__dict__ for d in self.devices]}

    def close(self) -> None:
        """Drop open windows and stop background threads, if any. The meter should not be used afterwards."""
        with self._lock:
            self._windows.clear()


# --- estimate ------------------------------------------------------------------------------------------------------


class EstimateMeter(Meter):
    """CPU energy from `CpuPowerModel` and busy CPU time; no hardware counter involved.

    Scope: `cores=None` meters the whole machine, one device "cpu:0": busy time from /proc/stat's aggregate line (all
    processes, like a package counter) and every core's idle power. `cores=[1]` meters logical CPU 1 alone, device
    "core:1": its own `cpu1` line and one core's idle power, so a worker pinned there is charged what its core used,
    not the training job on the core beside it. Busy time on a core is everything the kernel ran there (a GPU's
    counter also counts every process on that GPU); each core gets its own joules in `joules_by_device`.

    Where /proc/stat cannot be read, it falls back to this process's own CPU time (itself plus children it has
    waited for) with the scope's idle power, says so in `info()` and in every Measurement's notes, since that then
    leaves out other processes' work.
    """

    source = "estimate"

    def __init__(
        self,
        power: CpuPowerModel | None = None,
        proc_root: Path = DEFAULT_PROC_ROOT,
        reason: str = "",
        clock: Callable[[], float] = time.perf_counter,
        cores: Sequence[int] | None = None,
    ):
        power = power or CpuPowerModel.from_env()
        self.cores: tuple[int, ...] | None = None
        if cores is not None:
            self.cores = tuple(sorted({int(c) for c in cores}))
            if not self.cores or min(self.cores) < 0:
                raise ValueError(f"cores must name logical CPUs (ints >= 0), got {list(cores)!r}")
            # idle power of just these cores; the same per-core watts
            power = CpuPowerModel(power.active_w_per_core, power.idle_w_per_core, len(self.cores), power.source)
            devices = [core_device(c) for c in self.cores]
        else:
            device = cpu_device()
            if power.cores:
                device = Device(id=device.id, kind="cpu", index=0, name=device.name, chip="cpu", cores=power.cores)
            devices = [device]
        self.power = power
        super().__init__(devices, reason=reason, clock=clock)
        self.proc_root = proc_root
        self._last_busy_s: dict[str, float] = {}
        found: dict[int, Any] = {}
        try:
            if self.cores is None:
                read_cpu_times(proc_root)
                self.scope = "machine"
            else:
                found = read_per_cpu_times(proc_root)
                self.scope = "cores " + ",".join(str(c) for c in self.cores)
        except (OSError, ValueError) as exc:
            self.scope = "process"
            self._scope_note = f"{proc_root / 'stat'} unreadable ({exc}): busy time is this process's only"
            log.warning("estimate meter: %s", self._scope_note)
        missing = [c for c in self.cores or () if found and c not in found]
        if missing:  # a core this machine does not have: bad input, not something to measure around
            raise MeterError(
                f"cannot meter cpu{missing[0]}: {proc_root / 'stat'} lists cpu{min(found)}..cpu{max(found)} only"
            )

    def _read_busy_s(self) -> dict[str, float]:
        """Cumulative busy CPU-seconds per metered device."""
        if self.scope == "process":
            t = os.times()
            busy_s = t.user + t.system + t.children_user + t.children_system
            if self.cores is None:
                return {"cpu:0": busy_s}
            # one process's time cannot be told apart by core: it is all put on the first
            return {d.id: busy_s if i == 0 else 0.0 for i, d in enumerate(self.devices)}
        if self.cores is None:
            return {"cpu:0": read_cpu_times(self.proc_root).busy_s}
        per_cpu = read_per_cpu_times(self.proc_root)
        try:
            return {d.id: per_cpu[d.index].busy_s for d in self.devices}
        except KeyError as exc:
            raise CounterError(
                f"{self.proc_root / 'stat'} lost the line of cpu{exc.args[0]} (CPU taken offline?)"
            ) from None

    def _read(self) -> Reading:
        busy = self._read_busy_s()
        notes: list[str] = []
        for device_id, busy_s in busy.items():
            last_s = self._last_busy_s.get(device_id)
            if last_s is not None and busy_s < last_s:
                # /proc/stat is documented as monotonic, but some kernels have stepped it back across CPU hotplug:
                # hold the last value so no window sees negative work, and say so.
                notes.append(
                    f"{device_id}: busy CPU time went backwards by {last_s - busy_s:.3f} s; held at last value"
                )
                busy[device_id] = last_s
        self._last_busy_s = dict(busy)
        # joules are unused: the estimate's energy comes from seconds and busy time in _energy_between
        return Reading(joules_by_device=dict.fromkeys(busy, 0.0), busy_s_by_device=busy, notes=tuple(notes))

    def _energy_between(self, start: Snapshot, end: Snapshot, notes: list[str]) -> dict[str, float]:
        seconds = end.time_s - start.time_s
        busy = {d: end.busy_s_by_device[d] - start.busy_s_by_device[d] for d in end.busy_s_by_device}
        # /proc/stat's 10 ms ticks may put up to one tick per core more into a window than it lasted, and each
        # boundary's read took up to 2 x skew; more than that means the power model counts fewer cores than
        # /proc/stat does, and the figure is too high.
        slack_s = 2.0 / CLOCK_TICKS_PER_S + 2 * (start.skew_s + end.skew_s)
        busy_s = sum(busy.values())
        if busy_s > self.power.core_count * (seconds + slack_s):
            why = (
                "the power model's core count is below the machine's"
                if self.cores is None
                else "this process ran on more cores than the metered ones"
            )
            text = f"busy time {busy_s:.3f} CPU-s in {seconds:.3f} s exceeds {self.power.core_count} cores: {why}"
            log.warning("estimate meter: %s", text)
            notes.append(text)
        if self.scope == "process":
            notes.append(self._scope_note)
        if self.cores is None:
            return {"cpu:0": self.power.joules(seconds, busy_s)}
        # One core each: its idle power and its own busy time (a core cannot be busier than the window, beyond
        # a tick; a process-scope fallback may put more on the first core, and the note above says why).
        one_core = CpuPowerModel(self.power.active_w_per_core, self.power.idle_w_per_core, 1, self.power.source)
        return {device_id: one_core.joules(seconds, b) for device_id, b in busy.items()}

    def info(self) -> dict[str, Any]:
        p = self.power
        if self.scope == "process":
            busy_from = "os.times() of this process"
        elif self.cores is None:
            busy_from = f"{self.proc_root / 'stat'} (the aggregate cpu line)"
        else:
            busy_from = f"{self.proc_root / 'stat'} (lines " + ", ".join(f"cpu{c}" for c in self.cores) + ")"
        return {
            **super().info(),
            "model": (
                "E = idle_w_per_core x cores x seconds + (active_w_per_core - idle_w_per_core) x busy_cpu_s "
                "(linear utilisation power model; busy CPU-seconds from /proc/stat in 10 ms ticks)"
            ),
            "busy_time_scope": self.scope,
            "busy_time_from": busy_from,
            "metered_cores": None if self.cores is None else list(self.cores),
            "cpu_model": cpu_model_name(),
            "cores": p.core_count,
            "active_w_per_core": p.active_w_per_core,
            "idle_w_per_core": p.idle_w_per_core,
            "idle_w": p.idle_w,
            "max_w": p.tdp_w,
            "assumption_source": p.source,
        }


# --- RAPL ----------------------------------------------------------------------------------------------------------


@dataclass
class RaplZone:
    """One RAPL package zone and its wrap bookkeeping."""

    device_id: str
    path: Path
    name: str
    max_energy_range_uj: int | None
    last_raw_uj: int | None = None
    wraps: int = 0

    def read_uj(self) -> int:
        try:
            return int((self.path / "energy_uj").read_text().strip())
        except FileNotFoundError:
            raise CounterError(f"{self.path / 'energy_uj'} disappeared while metering") from None
        except PermissionError:
            raise CounterError(f"{self.path / 'energy_uj'} became unreadable (permission denied)") from None
        except ValueError as exc:
            raise CounterError(f"{self.path / 'energy_uj'} holds no integer ({exc})") from None


def probe_rapl(root: Path = DEFAULT_RAPL_ROOT) -> tuple[list[RaplZone], str]:
    """Usable RAPL package zones under `root`, and a sentence saying what was found or why none is usable."""
    if not root.is_dir():
        return [], f"{root} does not exist (no powercap driver, or a VM that does not expose RAPL)"
    zones: list[RaplZone] = []
    problems: list[str] = []
    # Top-level zones are intel-rapl:N (packages, sometimes psys); intel-rapl:N:M are their sub-zones (core, dram).
    for path in sorted(root.glob("intel-rapl:*")):
        parts = path.name.split(":")
        if len(parts) != 2 or not parts[1].isdigit():
            continue
        try:
            name = (path / "name").read_text().strip()
        except OSError as exc:
            problems.append(f"{path.name}: no readable name ({exc.strerror})")
            continue
        if not name.startswith("package"):
            continue  # psys covers the whole platform and would double-count the packages
        try:
            int((path / "energy_uj").read_text().strip())
        except PermissionError:
            problems.append(
                f"{path.name}/energy_uj is root-only (kernels restrict it since CVE-2020-8694); run as root "
                "or make it readable"
            )
            continue
        except (OSError, ValueError) as exc:
            problems.append(f"{path.name}/energy_uj unreadable ({exc})")
            continue
        try:
            max_range_uj: int | None = int((path / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError) as exc:
            max_range_uj = None
            log.warning("RAPL %s: max_energy_range_uj unreadable (%s); a counter wrap will raise", path.name, exc)
        index = int(name.split("-")[-1]) if name.split("-")[-1].isdigit() else len(zones)
        zones.append(RaplZone(device_id=f"cpu:{index}", path=path, name=name, max_energy_range_uj=max_range_uj))
    if zones:
        return zones, f"RAPL package zones readable under {root}: {', '.join(z.name for z in zones)}"
    detail = "; ".join(problems) if problems else "no intel-rapl:N package zone"
    return [], f"RAPL under {root} not usable: {detail}"


class RaplMeter(Meter):
    """CPU package energy from RAPL counters, wraps corrected with `max_energy_range_uj`."""

    source = "rapl"

    def __init__(
        self,
        zones: list[RaplZone],
        reason: str = "",
        clock: Callable[[], float] = time.perf_counter,
        poll_interval_s: float | None = -1.0,
        proc_root: Path = DEFAULT_PROC_ROOT,
    ):
        if not zones:
            raise MeterError("RaplMeter needs at least one readable zone; use probe_rapl() to find them")
        devices = [
            Device(id=z.device_id, kind="cpu", index=int(z.device_id.split(":")[1]), name=z.name, chip="cpu")
            for z in zones
        ]
        super().__init__(devices, reason=reason, clock=clock)
        self.zones = zones
        self.proc_root = proc_root
        for zone in zones:
            zone.last_raw_uj = zone.read_uj()
        if poll_interval_s is not None and poll_interval_s < 0:
            ranges = [z.max_energy_range_uj for z in zones if z.max_energy_range_uj]
            poll_interval_s = min(ranges) / 1e6 / RAPL_MAX_PLAUSIBLE_W / 4 if ranges else None
        self.poll_interval_s = poll_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_sysfs(cls, root: Path = DEFAULT_RAPL_ROOT, **kwargs: Any) -> RaplMeter:
        zones, reason = probe_rapl(root)
        if not zones:
            raise MeterError(reason)
        return cls(zones, reason=reason, **kwargs)

    def _read_zone_j(self, zone: RaplZone) -> tuple[float, str | None]:
        """The zone's energy since the meter started, wraps added; and a note if a wrap was corrected."""
        note = None
        raw_uj = zone.read_uj()
        if raw_uj < 0:
            raise CounterError(f"{zone.path / 'energy_uj'} is negative ({raw_uj})")
        if zone.last_raw_uj is not None and raw_uj < zone.last_raw_uj:
            if zone.max_energy_range_uj is None:
                raise CounterError(
                    f"{zone.name}: counter went from {zone.last_raw_uj} to {raw_uj} uJ and max_energy_range_uj is "
                    "unknown, so the wrap cannot be corrected"
                )
            if zone.last_raw_uj > zone.max_energy_range_uj:
                raise CounterError(
                    f"{zone.name}: counter read {zone.last_raw_uj} uJ, above max_energy_range_uj "
                    f"{zone.max_energy_range_uj}: not a RAPL counter this meter understands"
                )
            zone.wraps += 1
            note = f"{zone.name}: counter wrapped at {zone.max_energy_range_uj} uJ (wrap {zone.wraps})"
        zone.last_raw_uj = raw_uj
        return (raw_uj + zone.wraps * (zone.max_energy_range_uj or 0)) / 1e6, note

    def poll(self) -> None:
        """Read every zone once so wraps are counted; the background thread calls this between windows."""
        with self._lock:
            for zone in self.zones:
                _, note = self._read_zone_j(zone)
                if note:
                    self._note(note)

    def _read(self) -> Reading:
        busy: dict[str, float] = {}
        if len(self.zones) == 1:
            # With one package, the machine's busy time is that package's: attribution can use it.
            try:
                busy[self.zones[0].device_id] = read_cpu_times(self.proc_root).busy_s
            except (OSError, ValueError):
                pass
        joules: dict[str, float] = {}
        notes: list[str] = []
        for zone in self.zones:
            joules[zone.device_id], note = self._read_zone_j(zone)
            if note:
                notes.append(note)
        return Reading(joules_by_device=joules, busy_s_by_device=busy, notes=tuple(notes))

    def begin_window(self, name: str) -> None:
        super().begin_window(name)
        if self.poll_interval_s and self._thread is None:
            self._thread = threading.Thread(target=self._poll_loop, name="garrison-rapl-wrap", daemon=True)
            self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.poll()
            except MeterError as exc:  # the next window read raises it to the caller; here only log
                log.error("RAPL poll failed: %s", exc)

    def close(self) -> None:
        super().close()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "zones": [
                {"zone": z.name, "path": str(z.path), "max_energy_range_uj": z.max_energy_range_uj} for z in self.zones
            ],
            "wrap_poll_interval_s": self.poll_interval_s,
        }


# --- NVML ----------------------------------------------------------------------------------------------------------


class NvmlSource(Protocol):
    """The NVML readings the meter uses, in NVML's own units (mJ, mW)."""

    def total_energy_mj(self, index: int) -> int: ...

    def power_mw(self, index: int) -> int: ...


class PynvmlSource:
    """Live NVML through nvidia-ml-py. Keeps NVML initialised for the source's lifetime."""

    def __init__(self) -> None:
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._handles: dict[int, Any] = {}

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            self._handles[index] = self._nvml.nvmlDeviceGetHandleByIndex(index)
        return self._handles[index]

    def total_energy_mj(self, index: int) -> int:
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle(index)))
        except self._nvml.NVMLError_NotSupported:
            raise NotSupportedError(f"GPU {index} has no total-energy counter") from None

    def power_mw(self, index: int) -> int:
        # On Ampere and later this is the average over the last second, not an instantaneous reading (NVML docs).
        return int(self._nvml.nvmlDeviceGetPowerUsage(self._handle(index)))

    def close(self) -> None:
        self._nvml.nvmlShutdown()


class PowerIntegrator:
    """Cumulative energy from power readings: each reading stands for the interval since the one before it.

    Why that rule: NVML's power reading is an average over a trailing window (one second on Ampere and later, per
    NVML's documentation), so it describes the time just behind it, not ahead of it. The meter also takes a fresh
    reading at every window boundary and uses that reading's time as the boundary, so a boundary's energy is fixed
    when it is read and later readings never change it.
    """

    def __init__(self, device_id: str):
        self.device_id = device_id
        self.cum_j = 0.0
        self.last_t_s: float | None = None
        self.last_w = 0.0
        self.samples = 0

    def add(self, t_s: float, power_w: float) -> str | None:
        """Fold in a reading taken at `t_s`; returns a note if it had to be discarded (and why), else None."""
        if not math.isfinite(power_w) or power_w < 0:
            return f"{self.device_id}: power reading {power_w} W at t={t_s} s discarded (negative or not finite)"
        if self.last_t_s is not None:
            if t_s < self.last_t_s:
                return f"{self.device_id}: power reading at t={t_s} s is older than the last one ({self.last_t_s} s)"
            self.cum_j += power_w * (t_s - self.last_t_s)
        self.last_t_s, self.last_w = t_s, power_w
        self.samples += 1
        return None

    def joules_at(self, t_s: float) -> float:
        """Energy up to `t_s`, normally the time of the last reading (the meter reads just before asking).

        If the reading at `t_s` was discarded (its note is already logged), the last valid power is held up to `t_s`.
        """
        if self.last_t_s is None:
            raise MeterError(f"{self.device_id}: no valid power reading yet")
        if t_s < self.last_t_s:
            raise MeterError(f"{self.device_id}: energy asked at {t_s} s, before the last reading at {self.last_t_s} s")
        return self.cum_j + self.last_w * (t_s - self.last_t_s)


class NvmlMeter(Meter):
    """GPU energy: the total-energy counter where supported, integrated polled power where not."""

    source = "nvml"

    def __init__(
        self,
        source: NvmlSource,
        devices: list[Device],
        reason: str = "",
        clock: Callable[[], float] = time.perf_counter,
        poll_interval_s: float = 0.1,
        start_thread: bool = True,
        force_polling: bool = False,
    ):
        """`force_polling` integrates power even where a counter exists: the path of pre-Volta GPUs, run on a
        newer one so that the two can be compared (benchmarks/nvml_calibration.py)."""
        super().__init__(devices, reason=reason, clock=clock)
        self.nvml = source
        self.poll_interval_s = poll_interval_s
        self.counter_devices: list[Device] = []
        self._last_mj: dict[str, int] = {}
        self._integrators: dict[str, PowerIntegrator] = {}
        for device in devices:
            if force_polling:
                self._integrators[device.id] = PowerIntegrator(device.id)
                continue
            try:
                self._last_mj[device.id] = self._read_counter_mj(device)
                self.counter_devices.append(device)
            except NotSupportedError:
                self._integrators[device.id] = PowerIntegrator(device.id)
        self.poll_once()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._integrators and start_thread:
            self._thread = threading.Thread(target=self._poll_loop, name="garrison-nvml-power", daemon=True)
            self._thread.start()

    @classmethod
    def live(cls, **kwargs: Any) -> NvmlMeter:
        gpus, reason = nvml_gpus()
        if not gpus:
            raise MeterError(reason)
        return cls(PynvmlSource(), gpus, reason=reason, **kwargs)

    def _read_counter_mj(self, device: Device) -> int:
        value_mj = self.nvml.total_energy_mj(device.index)
        if value_mj < 0:
            raise CounterError(f"{device.id}: energy counter read negative ({value_mj} mJ)")
        return value_mj

    def _poll(self) -> tuple[float, list[str]]:
        """One power reading per polled GPU, all stamped with one time; returns that time and any notes."""
        t_s = self._clock()
        notes = []
        for device in self.devices:
            if device.id in self._integrators:
                note = self._integrators[device.id].add(t_s, self.nvml.power_mw(device.index) / 1000.0)
                if note:
                    notes.append(note)
        return t_s, notes

    def poll_once(self) -> None:
        """Take one power reading per polled GPU: what the background thread does every `poll_interval_s`."""
        with self._lock:
            _, notes = self._poll()
            for note in notes:
                self._note(note)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.poll_once()
            except Exception as exc:  # a failed poll must not kill the thread silently: log, keep polling
                log.error("NVML power poll failed: %s", exc)

    def _read(self) -> Reading:
        now_s, notes = self._poll()  # a fresh reading at the boundary, so a window never ends on a stale one
        joules: dict[str, float] = {}
        for device in self.devices:
            if device.id in self._integrators:
                joules[device.id] = self._integrators[device.id].joules_at(now_s)
                continue
            value_mj = self._read_counter_mj(device)
            if value_mj < self._last_mj[device.id]:
                # A 64-bit millijoule counter does not wrap in practice; going back means the driver reloaded.
                raise CounterError(
                    f"{device.id}: energy counter went back from {self._last_mj[device.id]} to {value_mj} mJ "
                    "(driver reloaded or GPU reset?); windows open across it cannot be measured"
                )
            self._last_mj[device.id] = value_mj
            joules[device.id] = value_mj / 1000.0
        return Reading(joules_by_device=joules, notes=tuple(notes))

    def close(self) -> None:
        super().close()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        closer = getattr(self.nvml, "close", None)
        if closer is not None:
            closer()

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "energy_counter": [d.id for d in self.counter_devices],
            "power_polling": sorted(self._integrators),
            "poll_interval_s": self.poll_interval_s,
        }


# --- replay of recorded NVML traces --------------------------------------------------------------------------------


class ReplayClock:
    """A clock that moves only when told to: trace time in seconds."""

    def __init__(self, start_s: float = 0.0):
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance_to(self, t_s: float, step_s: float, on_step: Callable[[], None] | None = None) -> None:
        """Move to `t_s` in steps of `step_s`, calling `on_step` at each (as the poll thread would)."""
        if t_s < self.now_s:
            raise ValueError(f"replay clock cannot go back from {self.now_s} to {t_s}")
        if not step_s > 0:
            raise ValueError(f"step_s must be > 0, got {step_s}")
        # Steps counted from the origin and rounded to the nanosecond, so that float error never accumulates into
        # "before the reading at 4.000000000000002 s"; the last step lands on t_s exactly.
        origin_s, k = self.now_s, 1
        while origin_s + k * step_s < t_s - 1e-9:
            self.now_s = round(origin_s + k * step_s, 9)
            if on_step is not None:
                on_step()
            k += 1
        self.now_s = t_s
        if on_step is not None:
            on_step()


class ReplayNvmlSource:
    """NVML readings replayed from a recorded trace, as NVML would have answered at the clock's time.

    Trace: CSV with `time_s,gpu,power_mw,energy_mj`, one row per reading taken; `energy_mj` empty for a GPU without
    the counter (the meter then integrates its power, as it would live). A read returns the latest row at or before
    the clock's time: NVML, too, answers with its last update, not with the present instant.
    """

    def __init__(self, path: Path, clock: ReplayClock):
        self.path = path
        self.clock = clock
        self.rows: dict[int, list[tuple[float, int, int | None]]] = {}
        with open(path) as f:
            for line_no, row in enumerate(csv.DictReader(f), start=2):
                try:
                    t_s, gpu = float(row["time_s"]), int(row["gpu"])
                    energy = int(row["energy_mj"]) if row["energy_mj"] else None
                    readings = self.rows.setdefault(gpu, [])
                    if readings and t_s <= readings[-1][0]:
                        raise ValueError(f"time {t_s} not after {readings[-1][0]}")
                    readings.append((t_s, int(row["power_mw"]), energy))
                except (KeyError, ValueError) as exc:
                    raise ValueError(f"{path}:{line_no}: bad trace row ({exc})") from None

    @property
    def start_s(self) -> float:
        return min(r[0][0] for r in self.rows.values())

    @property
    def end_s(self) -> float:
        return min(r[-1][0] for r in self.rows.values())

    def _row(self, index: int) -> tuple[float, int, int | None]:
        if index not in self.rows:
            raise MeterError(f"trace {self.path} has no GPU {index}")
        readings = self.rows[index]
        t_s = self.clock()
        lo, hi = 0, len(readings)
        while lo < hi:  # last row with time <= t_s
            mid = (lo + hi) // 2
            if readings[mid][0] <= t_s:
                lo = mid + 1
            else:
                hi = mid
        if lo == 0:
            raise MeterError(f"replay time {t_s} s is before GPU {index}'s first reading at {readings[0][0]} s")
        return readings[lo - 1]

    def total_energy_mj(self, index: int) -> int:
        energy_mj = self._row(index)[2]
        if energy_mj is None:
            raise NotSupportedError(f"GPU {index} in {self.path.name} has no energy counter")
        return energy_mj

    def power_mw(self, index: int) -> int:
        return self._row(index)[1]


# --- choosing a meter ----------------------------------------------------------------------------------------------


def visible_gpus(gpus: list[Device], env: Mapping[str, str]) -> tuple[list[Device], str]:
    """The GPUs of `gpus` (NVML's list) that CUDA_VISIBLE_DEVICES in `env` names, and a note on how it was read.

    Unset: all of them. Empty: none (the process was told to use no GPU). Entries are NVML indices or UUIDs
    ("GPU-..." or a unique prefix of one), as CUDA accepts. Integer indices mean NVML's order only under
    CUDA_DEVICE_ORDER=PCI_BUS_ID (CUDA's default, FASTEST_FIRST, may order mixed GPUs differently); without it the
    note says so. An entry that names no GPU here (a MIG instance, a typo) keeps the whole list, with a note: a
    meter over too many GPUs is visible in its devices, one over the wrong GPU is not.
    """
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return gpus, ""
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if not entries:
        return [], "CUDA_VISIBLE_DEVICES is empty: this process uses no GPU"
    chosen: list[Device] = []
    for entry in entries:
        if entry.isdigit():
            match = [g for g in gpus if g.index == int(entry)]
        else:
            match = [g for g in gpus if g.uuid and g.uuid.startswith(entry)]
        if len(match) != 1:
            return gpus, f"CUDA_VISIBLE_DEVICES entry {entry!r} names no single GPU NVML lists: metering all of them"
        if match[0] not in chosen:
            chosen.append(match[0])
    note = f"metering the GPU(s) CUDA_VISIBLE_DEVICES={visible} names"
    if any(e.isdigit() for e in entries) and env.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        note += " (as NVML indices; set CUDA_DEVICE_ORDER=PCI_BUS_ID so CUDA numbers them the same way)"
    return chosen, note


def get_meter(
    prefer: str | None = None,
    rapl_root: Path = DEFAULT_RAPL_ROOT,
    proc_root: Path = DEFAULT_PROC_ROOT,
    power: CpuPowerModel | None = None,
    cores: Sequence[int] | None = None,
) -> Meter:
    """The best meter this machine offers: NVML, then RAPL, then the estimate; `reason` says why.

    `prefer` (or env GARRISON_METER) names one backend; if that one cannot run, MeterError says why instead of
    silently measuring something else.

    `cores` (logical CPUs a pinned process runs on; None: the whole machine) scopes the estimate to those cores, so
    a core slot's work is charged its own core's energy. It does not scope the other two, because they cannot be:
    RAPL's counter is one per package (socket) and has no per-core reading (AMD's per-core energy MSRs are not in
    /sys/class/powercap), so a RAPL figure stays the package's. NVML's counters are per GPU, and a GPU process's
    GPUs are chosen by CUDA_VISIBLE_DEVICES, not CPU affinity: NVML ignores that variable and lists every GPU, so
    the NVML meter is scoped by `visible_gpus` to the ones the variable names (garrison's executors write NVML
    indices there with CUDA_DEVICE_ORDER=PCI_BUS_ID, so CUDA and NVML mean the same GPU by an index).
    """
    prefer = prefer or os.environ.get("GARRISON_METER") or None
    if prefer not in (None, "nvml", "rapl", "estimate"):
        raise MeterError(f"unknown meter {prefer!r}; choose nvml, rapl or estimate")
    skipped: list[str] = []
    if prefer in (None, "nvml"):
        gpus, why = nvml_gpus()
        gpus, scope_note = visible_gpus(gpus, os.environ)
        if scope_note:
            why = f"{why}; {scope_note}"
        if gpus:
            return NvmlMeter(PynvmlSource(), gpus, reason=why)
        if prefer == "nvml":
            raise MeterError(f"NVML meter asked for but unavailable: {why}")
        skipped.append(f"nvml: {why}")
    if prefer in (None, "rapl"):
        zones, why = probe_rapl(rapl_root)
        if zones:
            return RaplMeter(zones, reason=why, proc_root=proc_root)
        if prefer == "rapl":
            raise MeterError(f"RAPL meter asked for but unavailable: {why}")
        skipped.append(f"rapl: {why}")
        # Root-only counters are the case an operator can fix, so it is logged louder than an absent driver.
        (log.warning if "root-only" in why else log.info)("falling back from RAPL: %s", why)
    reason = "; ".join(skipped) + "; using the estimate" if skipped else "estimate requested"
    return EstimateMeter(power=power, proc_root=proc_root, reason=reason, cores=cores)

"""The host CPU as a device: its measured matmul peak, its assumed power, and its busy time from /proc.

Peak: a CPU's FLOP/s is not in any table garrison ships, so it is measured once (torch matmul, fp32 and bf16) and
cached in `$GARRISON_HOME/hardware/cpu_peak.json`, keyed by CPU model, thread count and torch version. It is timed
on one thread by that thread's own CPU time, then multiplied by the thread count: wall-clock timing on a shared
machine measures the other tenants as much as the silicon (on this project's 2-core EPYC under a training run,
wall-clock gave 1.4 GFLOP/s fp32 over two threads where one thread's CPU time shows 80 GFLOP/s), while CPU time only
counts the cycles the matmul got. The multiplication assumes a compute-bound GEMM scales linearly over cores, which
makes the figure an upper estimate: the safe side for a floor on energy. The cache records the load average too.

Power: sysfs does not tell a CPU's TDP in general (RAPL exposes energy, not the rating, and is often root-only), so
garrison assumes a per-core wattage, stated here and printed by `garrison energy info`:

- active: 5.6 W per core, an AMD EPYC 9554's 360 W TDP over its 64 cores (AMD's datasheet); server parts of the
  Zen 3 and Zen 4 generations sit between about 3.8 W (96 cores, 360 W) and 8.8 W (32 cores, 280 W) per core;
- idle: 1.7 W per core, 30% of the active figure: an assumption (server packages idle at roughly a quarter to a
  third of TDP), not a measurement.

Both are overridable with `GARRISON_CPU_ACTIVE_W_PER_CORE` and `GARRISON_CPU_IDLE_W_PER_CORE`, or by passing a
`CpuPowerModel`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from garrison.hardware.catalog import Chip, garrison_home

log = logging.getLogger(__name__)

DEFAULT_ACTIVE_W_PER_CORE = 5.6
DEFAULT_IDLE_W_PER_CORE = 1.7
PEAK_DTYPES = ("fp32", "bf16")
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_model_name(proc_root: Path = Path("/proc")) -> str:
    """The CPU's model name from /proc/cpuinfo, or platform.processor() where that file is absent."""
    try:
        for line in (proc_root / "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_core_count() -> int:
    """Logical CPUs the machine has (the unit /proc/stat counts busy time in)."""
    return os.cpu_count() or 1


@dataclass(frozen=True)
class CpuPowerModel:
    """Assumed CPU power: `idle_w_per_core` always, up to `active_w_per_core` for a core busy all the time."""

    active_w_per_core: float = DEFAULT_ACTIVE_W_PER_CORE
    idle_w_per_core: float = DEFAULT_IDLE_W_PER_CORE
    cores: int = 0  # 0: the machine's logical CPU count
    source: str = "assumption: active 5.6 W/core = AMD EPYC 9554 TDP 360 W / 64 cores; idle 30% of that (1.7 W/core)"

    def __post_init__(self) -> None:
        if not 0 <= self.idle_w_per_core <= self.active_w_per_core:
            raise ValueError(
                f"need 0 <= idle_w_per_core <= active_w_per_core, got {self.idle_w_per_core}, {self.active_w_per_core}"
            )

    @property
    def core_count(self) -> int:
        return self.cores or cpu_core_count()

    @property
    def tdp_w(self) -> float:
        """All cores busy: the model's ceiling, used as the CPU's TDP."""
        return self.active_w_per_core * self.core_count

    @property
    def idle_w(self) -> float:
        return self.idle_w_per_core * self.core_count

    @classmethod
    def from_env(cls) -> CpuPowerModel:
        """The defaults, overridden by GARRISON_CPU_ACTIVE_W_PER_CORE / GARRISON_CPU_IDLE_W_PER_CORE when set."""
        active = os.environ.get("GARRISON_CPU_ACTIVE_W_PER_CORE")
        idle = os.environ.get("GARRISON_CPU_IDLE_W_PER_CORE")
        if active is None and idle is None:
            return cls()
        try:
            active_w = float(active) if active is not None else DEFAULT_ACTIVE_W_PER_CORE
            idle_w = float(idle) if idle is not None else min(DEFAULT_IDLE_W_PER_CORE, active_w)
        except ValueError:
            raise ValueError(
                f"GARRISON_CPU_ACTIVE_W_PER_CORE / GARRISON_CPU_IDLE_W_PER_CORE must be numbers, got {active!r}, {idle!r}"
            ) from None
        return cls(active_w_per_core=active_w, idle_w_per_core=idle_w, source="set by GARRISON_CPU_*_W_PER_CORE")

    def joules(self, seconds: float, busy_cpu_s: float) -> float:
        """Energy of the whole CPU over `seconds` with `busy_cpu_s` CPU-seconds of work (linear power model).

        P = idle + (active - idle) x utilisation, summed over cores: the usual linear server power model. Busy time is
        not capped at cores x seconds: /proc/stat counts in 10 ms ticks, so a short window can see a tick more than
        it lasted, and the next window a tick less; capping would bias every fully loaded run low, while leaving it
        makes back-to-back windows add up to the window that spans them.
        """
        if seconds < 0 or busy_cpu_s < 0:
            raise ValueError(f"seconds and busy_cpu_s must be >= 0, got {seconds}, {busy_cpu_s}")
        return self.idle_w * seconds + (self.active_w_per_core - self.idle_w_per_core) * busy_cpu_s


@dataclass(frozen=True)
class CpuTimes:
    """Machine-wide CPU time from /proc/stat, in CPU-seconds since boot."""

    busy_s: float
    idle_s: float
    steal_s: float


def read_cpu_times(proc_root: Path = Path("/proc")) -> CpuTimes:
    """Read the aggregate `cpu` line of /proc/stat.

    Busy is user + nice + system + irq + softirq (guest time is already inside user). Steal is kept apart: it is
    time the hypervisor ran someone else, not energy this machine's cores spent for it.
    """
    with open(proc_root / "stat") as f:
        first = f.readline().split()
    if not first or first[0] != "cpu" or len(first) < 5:
        raise ValueError(f"{proc_root / 'stat'}: unexpected first line {' '.join(first)!r}")
    ticks = [int(x) for x in first[1:]] + [0] * 8
    user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
    return CpuTimes(
        busy_s=(user + nice + system + irq + softirq) / CLOCK_TICKS_PER_S,
        idle_s=(idle + iowait) / CLOCK_TICKS_PER_S,
        steal_s=steal / CLOCK_TICKS_PER_S,
    )


def read_per_cpu_times(proc_root: Path = Path("/proc")) -> dict[int, CpuTimes]:
    """Read the per-CPU `cpuN` lines of /proc/stat: busy and idle seconds of each logical CPU."""
    result: dict[int, CpuTimes] = {}
    with open(proc_root / "stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            parts = line.split()
            if parts[0] == "cpu":
                continue
            ticks = [int(x) for x in parts[1:]] + [0] * 8
            user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
            result[int(parts[0][3:])] = CpuTimes(
                busy_s=(user + nice + system + irq + softirq) / CLOCK_TICKS_PER_S,
                idle_s=(idle + iowait) / CLOCK_TICKS_PER_S,
                steal_s=steal / CLOCK_TICKS_PER_S,
            )
    if not result:
        raise ValueError(f"{proc_root / 'stat'} has no per-CPU lines")
    return result


def process_cpu_s(pid: int, proc_root: Path = Path("/proc")) -> float:
    """CPU-seconds (user + system, all threads) process `pid` has used, from /proc/PID/stat."""
    text = (proc_root / str(pid) / "stat").read_text()
    # The command name (field 2) may contain spaces and parentheses: split after its closing one.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5), counted from 1
    return (utime + stime) / CLOCK_TICKS_PER_S


# --- matmul peak ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuPeak:
    """Measured dense matmul FLOP/s of this CPU, per dtype, and the conditions it was measured under."""

    cpu_model: str
    threads: int
    torch_version: str
    peak_flops_by_dtype: dict[str, float]
    matrix_n: int
    measured_at_unix_s: float
    loadavg_1m: float
    # torch's vector ISA for this CPU ("AVX2", "AVX512", ...): hosts sold under one model name differ in it, and
    # bf16's speed with it (a cache from an AVX-512 host must not stand for an AVX2 one)
    cpu_capability: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _loadavg_1m() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def measure_matmul_peak(dtype: str, n: int = 1024, budget_s: float = 0.5, min_reps: int = 1) -> float:
    """FLOP/s of one thread on an n x n x n torch matmul in `dtype` ("fp32" or "bf16"), best of about `budget_s`.

    Timed by the calling thread's CPU time (torch limited to one thread for the measurement), so time the scheduler
    gave to other processes is not counted. Best rather than mean: interference only ever slows a repetition.
    """
    import torch  # heavy import: only when a measurement is actually taken

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        raise ValueError(f"dtype must be one of {PEAK_DTYPES}, got {dtype!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen).to(torch_dtype)
        b = torch.randn(n, n, generator=gen).to(torch_dtype)
        torch.mm(a, b)  # warm-up: first call picks kernels and allocates
        best_s = float("inf")
        spent_s = 0.0
        reps = 0
        while reps < min_reps or spent_s < budget_s:
            t0 = time.thread_time()
            torch.mm(a, b)
            took_s = time.thread_time() - t0
            if took_s > 0:  # a clock too coarse to see one matmul would give infinity; skip such a reading
                best_s = min(best_s, took_s)
            spent_s += took_s
            reps += 1
            if reps > 10_000:
                raise RuntimeError("thread CPU clock does not advance; cannot time the matmul")
    finally:
        torch.set_num_threads(threads)
    return 2.0 * n**3 / best_s


def cpu_peak_cache_path() -> Path:
    return garrison_home() / "hardware" / "cpu_peak.json"


def cpu_peak(refresh: bool = False, n: int = 1024, budget_s: float = 0.5, cache_path: Path | None = None) -> CpuPeak:
    """This CPU's matmul peak: from the cache when it matches this machine, else measured now and cached."""
    import torch

    cache_path = cache_path or cpu_peak_cache_path()
    model, threads, torch_version = cpu_model_name(), torch.get_num_threads(), torch.__version__
    capability = cpu_capability()
    if not refresh and cache_path.exists():
        try:
            cached = CpuPeak(**json.loads(cache_path.read_text()))
            key = (cached.cpu_model, cached.threads, cached.torch_version, cached.cpu_capability)
            if key == (model, threads, torch_version, capability):
                return cached
            log.info("cpu peak cache %s is for another machine or torch; measuring again", cache_path)
        except (ValueError, TypeError) as exc:
            log.warning("cpu peak cache %s is unreadable (%s); measuring again", cache_path, exc)
    load_before = _loadavg_1m()
    peaks = {dtype: threads * measure_matmul_peak(dtype, n=n, budget_s=budget_s) for dtype in PEAK_DTYPES}
    peak = CpuPeak(
        cpu_model=model,
        threads=threads,
        torch_version=torch_version,
        peak_flops_by_dtype=peaks,
        matrix_n=n,
        measured_at_unix_s=time.time(),
        loadavg_1m=max(load_before, _loadavg_1m()),
        cpu_capability=capability,
    )
    if peak.loadavg_1m > cpu_core_count():
        log.info("cpu peak measured under load average %.1f (timed by CPU time, so not counted)", peak.loadavg_1m)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_text(json.dumps(peak.to_dict(), indent=2) + "\n")
    return peak


def bf16_is_fast(device_type: str = "cpu") -> bool:
    """Whether bf16 compute is at least as fast as fp32 on this device: the default precision of the built-in model.

    A GPU with bf16 support runs it natively. On a CPU it depends on the silicon: oneDNN runs bf16 at or above fp32
    speed with AVX-512 (BF16, AMX), while an AVX2-only part converts every element in software (this project's
    2-core EPYC on 2026-11-26: 1.8 GFLOP/s bf16 against 119 GFLOP/s fp32 on a 1024 matmul, a training step 27.4 s
    against 1.83 s and a 4 s 112x64 clip 13.07 s against 2.50 s). So the CPU's answer is its measured (cached) matmul peak.
    """
    if device_type == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device_type != "cpu":
        return False
    peaks = cpu_peak().peak_flops_by_dtype
    return peaks.get("bf16", 0.0) >= peaks.get("fp32", float("inf"))


def cached_cpu_peak(cache_path: Path | None = None) -> CpuPeak | None:
    """The cached peak if one exists for this CPU model, without measuring (for quick commands)."""
    cache_path = cache_path or cpu_peak_cache_path()
    try:
        cached = CpuPeak(**json.loads(cache_path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if cached.cpu_model != cpu_model_name() or cached.cpu_capability != cpu_capability():
        return None
    return cached


def cpu_capability() -> str:
    """torch's name for this CPU's vector ISA ("AVX2", "AVX512", "DEFAULT", ...)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def cpu_chip(peak: CpuPeak, power: CpuPowerModel | None = None, cores: int | None = None) -> Chip:
    """This CPU as a catalog chip: measured peak FLOP/s, TDP from the per-core power assumption.

    `cores` (None: as measured, over the peak's threads and the model's cores) makes it a chip of that many logical
    CPUs, such as one core slot: each thread's peak times `cores`, and `cores` x the active watts per core.
    """
    power = power or CpuPowerModel.from_env()
    peaks = dict(peak.peak_flops_by_dtype)
    threads = peak.threads
    if cores is not None:
        if cores < 1:
            raise ValueError(f"cores must be >= 1, got {cores}")
        peaks = {dtype: flops / max(peak.threads, 1) * cores for dtype, flops in peaks.items()}
        power = CpuPowerModel(power.active_w_per_core, power.idle_w_per_core, cores, power.source)
        threads = cores
    return Chip(
        key="cpu" if cores is None else "cpu-core" if cores == 1 else f"cpu-{cores}-cores",
        name=peak.cpu_model if cores is None else f"{peak.cpu_model}, {cores} logical CPU(s)",
        peak_flops_by_dtype=peaks,
        tdp_w=power.tdp_w,
        source=(
            f"peak: torch matmul n={peak.matrix_n}, one thread by CPU time x {threads} threads, measured on this machine "
            f"(load average {peak.loadavg_1m:.1f}); TDP: {power.core_count} cores x {power.active_w_per_core} W "
            f"({power.source})"
        ),
    )

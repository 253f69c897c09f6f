"""Estimate meter: the stated model's arithmetic on a written /proc, and its bounds on the real one."""

from __future__ import annotations

import time

import pytest

from garrison.energy.meters import EstimateMeter, MeterError, ReplayClock, get_meter
from garrison.hardware.cpu import CLOCK_TICKS_PER_S, CpuPowerModel

MODEL = CpuPowerModel(active_w_per_core=5.0, idle_w_per_core=1.0, cores=2)


def write_stat(proc, busy_ticks: int, idle_ticks: int = 10_000) -> None:
    # user nice system idle iowait irq softirq steal: busy split over user and system
    proc.mkdir(exist_ok=True)
    (proc / "stat").write_text(f"cpu  {busy_ticks - busy_ticks // 4} 0 {busy_ticks // 4} {idle_ticks} 0 0 0 0 0 0\n")


def test_model_arithmetic_on_a_written_proc(tmp_path):
    write_stat(tmp_path, busy_ticks=1000)
    clock = ReplayClock(start_s=100.0)
    meter = EstimateMeter(power=MODEL, proc_root=tmp_path, clock=clock)
    meter.begin_window("gen")
    write_stat(tmp_path, busy_ticks=1000 + 3 * CLOCK_TICKS_PER_S)  # 3 CPU-seconds of work
    clock.now_s = 104.0
    m = meter.end_window("gen")
    assert m.source == "estimate"
    assert m.seconds == 4.0
    assert m.busy_s_by_device == {"cpu:0": pytest.approx(3.0)}
    assert m.joules == pytest.approx(2 * 1.0 * 4.0 + (5.0 - 1.0) * 3.0)


def test_busy_time_beyond_the_cores_is_noted_not_capped(tmp_path):
    write_stat(tmp_path, busy_ticks=0)
    clock = ReplayClock()
    meter = EstimateMeter(power=MODEL, proc_root=tmp_path, clock=clock)
    meter.begin_window("gen")
    write_stat(tmp_path, busy_ticks=10 * CLOCK_TICKS_PER_S)  # 10 CPU-seconds in 1 s on 2 cores: impossible
    clock.now_s = 1.0
    m = meter.end_window("gen")
    assert m.joules == pytest.approx(MODEL.idle_w * 1.0 + 4.0 * 10.0)
    assert any("exceeds 2 cores" in note for note in m.notes)


def test_one_tick_of_quantization_is_not_flagged_and_laps_telescope(tmp_path):
    # /proc/stat's 10 ms ticks: a 50 ms window on a full machine may see 60 ms per core; no note for that,
    # and no cap either, so the next (short) window's deficit evens it out.
    write_stat(tmp_path, busy_ticks=0)
    clock = ReplayClock()
    meter = EstimateMeter(power=MODEL, proc_root=tmp_path, clock=clock)
    meter.begin_window("run")
    meter.begin_window("tick")
    write_stat(tmp_path, busy_ticks=12)  # 0.12 CPU-s in 0.05 s on 2 cores
    clock.now_s = 0.05
    first = meter.lap("tick")
    write_stat(tmp_path, busy_ticks=20)  # 0.08 CPU-s in the next 0.05 s
    clock.now_s = 0.10
    second = meter.end_window("tick")
    whole = meter.end_window("run")
    assert first.notes == () and second.notes == ()
    assert first.joules + second.joules == pytest.approx(whole.joules)
    assert whole.joules == pytest.approx(MODEL.idle_w * 0.1 + 4.0 * 0.2)


def test_busy_time_going_backwards_is_held_and_noted(tmp_path):
    write_stat(tmp_path, busy_ticks=5000)
    clock = ReplayClock()
    meter = EstimateMeter(power=MODEL, proc_root=tmp_path, clock=clock)
    meter.begin_window("gen")
    write_stat(tmp_path, busy_ticks=4000)
    clock.now_s = 2.0
    m = meter.end_window("gen")
    assert m.joules == pytest.approx(MODEL.idle_w * 2.0)  # no negative work
    assert any("went backwards" in note for note in m.notes)


def test_unreadable_proc_falls_back_to_own_cpu_time_and_says_so(tmp_path):
    meter = EstimateMeter(power=MODEL, proc_root=tmp_path / "no-proc")
    assert meter.scope == "process"
    meter.begin_window("gen")
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    m = meter.end_window("gen")
    assert m.busy_s_by_device["cpu:0"] >= 0.03  # os.times() counts in 10 ms ticks
    assert m.joules >= MODEL.idle_w * m.seconds + (MODEL.active_w_per_core - MODEL.idle_w_per_core) * 0.03
    assert any("this process's only" in note for note in m.notes)
    assert meter.info()["busy_time_scope"] == "process"


def test_real_proc_stays_within_the_model_bounds():
    meter = EstimateMeter(power=MODEL)
    assert meter.scope == "machine"
    meter.begin_window("work")
    deadline = time.perf_counter() + 0.3
    while time.perf_counter() < deadline:
        pass
    m = meter.end_window("work")
    # at least this process's busy time, at most every core busy (plus one 10 ms tick per core of quantization)
    assert m.busy_s_by_device["cpu:0"] > 0.1
    tick_j = (MODEL.active_w_per_core - MODEL.idle_w_per_core) * MODEL.core_count * 2 / CLOCK_TICKS_PER_S
    assert MODEL.idle_w * m.seconds < m.joules <= MODEL.tdp_w * m.seconds + tick_j


def test_info_states_the_assumptions():
    info = EstimateMeter(power=MODEL).info()
    assert info["source"] == "estimate"
    assert info["active_w_per_core"] == 5.0 and info["idle_w_per_core"] == 1.0 and info["cores"] == 2
    assert "idle_w_per_core" in info["model"]


def test_a_read_preempted_between_its_clock_reads_is_taken_again(tmp_path):
    # The clock jumps 0.7 s inside the first read of the end boundary, as when the scheduler preempts the meter:
    # the snapshot must read again rather than pair the counters with a time they were not read at.
    write_stat(tmp_path, busy_ticks=0)
    times = iter([0.0, 0.0, 1.0, 1.7, 1.7, 1.7])
    meter = EstimateMeter(power=MODEL, proc_root=tmp_path, clock=lambda: next(times))
    meter.begin_window("gen")  # reads at 0.0 / 0.0
    write_stat(tmp_path, busy_ticks=2 * CLOCK_TICKS_PER_S)
    m = meter.end_window("gen")  # 1.0 / 1.7 is too far apart; again at 1.7 / 1.7
    assert m.seconds == pytest.approx(1.7)
    assert m.notes == ()
    assert m.joules == pytest.approx(MODEL.idle_w * 1.7 + 4.0 * 2.0)


# --- per-core scope: a core slot's own energy ------------------------------------------------------------------------


def write_per_cpu_stat(proc, busy_ticks_by_cpu: dict[int, int], idle_ticks: int = 10_000) -> None:
    """/proc/stat with the aggregate line and one `cpuN` line per CPU (busy split over user and system)."""
    proc.mkdir(exist_ok=True)

    def line(name: str, busy: int, idle: int) -> str:
        return f"{name} {busy - busy // 4} 0 {busy // 4} {idle} 0 0 0 0 0 0"

    total = sum(busy_ticks_by_cpu.values())
    lines = [line("cpu ", total, idle_ticks * len(busy_ticks_by_cpu))]
    lines += [line(f"cpu{n}", busy, idle_ticks) for n, busy in sorted(busy_ticks_by_cpu.items())]
    (proc / "stat").write_text("\n".join(lines) + "\nintr 0\nctxt 0\n")


def test_a_core_window_counts_only_that_cores_busy_time_and_idle_power(tmp_path):
    # Two cores: core 0 trains flat out, core 1 serves a video half of the time. One 2 s window.
    write_per_cpu_stat(tmp_path, {0: 500, 1: 300})
    clock = ReplayClock(start_s=10.0)
    core1 = EstimateMeter(power=MODEL, proc_root=tmp_path, clock=clock, cores=[1])
    machine = EstimateMeter(power=MODEL, proc_root=tmp_path, clock=clock)
    core1.begin_window("video")
    machine.begin_window("video")
    write_per_cpu_stat(tmp_path, {0: 500 + 2 * CLOCK_TICKS_PER_S, 1: 300 + CLOCK_TICKS_PER_S})
    clock.now_s = 12.0
    on_core = core1.end_window("video")
    whole = machine.end_window("video")
    assert core1.device_ids == ["core:1"] and core1.devices[0].kind == "cpu-core"
    assert on_core.busy_s_by_device == {"core:1": pytest.approx(1.0)}
    # one core's idle power (1 W x 2 s) + the span (4 W) x core 1's own 1 CPU-second
    assert on_core.joules_by_device == {"core:1": pytest.approx(1.0 * 2.0 + 4.0 * 1.0)}
    assert on_core.notes == ()
    # the whole-machine scope is unchanged: both cores' idle power and all 3 busy CPU-seconds
    assert whole.busy_s_by_device == {"cpu:0": pytest.approx(3.0)}
    assert whole.joules == pytest.approx(2 * 1.0 * 2.0 + 4.0 * 3.0)


def test_several_cores_each_get_their_own_joules_and_add_up_to_the_machine(tmp_path):
    write_per_cpu_stat(tmp_path, {0: 0, 1: 0, 2: 0})
    clock = ReplayClock()
    model = CpuPowerModel(active_w_per_core=5.0, idle_w_per_core=1.0, cores=3)
    pair = EstimateMeter(power=model, proc_root=tmp_path, clock=clock, cores=[2, 0])
    machine = EstimateMeter(power=model, proc_root=tmp_path, clock=clock)
    pair.begin_window("w")
    machine.begin_window("w")
    write_per_cpu_stat(tmp_path, {0: CLOCK_TICKS_PER_S // 2, 1: CLOCK_TICKS_PER_S, 2: CLOCK_TICKS_PER_S // 4})
    clock.now_s = 1.0
    m = pair.end_window("w")
    assert pair.device_ids == ["core:0", "core:2"] and pair.power.core_count == 2
    assert m.joules_by_device == {"core:0": pytest.approx(1.0 + 4.0 * 0.5), "core:2": pytest.approx(1.0 + 4.0 * 0.25)}
    assert m.joules == pytest.approx(2 * 1.0 + 4.0 * 0.75)
    # core 1's idle watt and its 1 CPU-second are the rest of the machine's figure
    assert machine.end_window("w").joules == pytest.approx(m.joules + 1.0 + 4.0 * 1.0)


def test_a_core_scope_states_itself_and_refuses_a_core_the_machine_lacks(tmp_path):
    write_per_cpu_stat(tmp_path, {0: 0, 1: 0})
    info = EstimateMeter(power=MODEL, proc_root=tmp_path, cores=[1]).info()
    assert info["busy_time_scope"] == "cores 1" and info["metered_cores"] == [1]
    assert info["cores"] == 1 and info["idle_w"] == pytest.approx(1.0) and info["max_w"] == pytest.approx(5.0)
    assert "cpu1" in info["busy_time_from"]
    assert EstimateMeter(power=MODEL, proc_root=tmp_path).info()["busy_time_scope"] == "machine"
    with pytest.raises(MeterError, match="cpu7"):
        EstimateMeter(power=MODEL, proc_root=tmp_path, cores=[7])
    with pytest.raises(ValueError, match="logical CPUs"):
        EstimateMeter(power=MODEL, proc_root=tmp_path, cores=[])


def test_a_core_going_backwards_is_held_on_that_core_only(tmp_path):
    write_per_cpu_stat(tmp_path, {0: 400, 1: 400})
    clock = ReplayClock()
    meter = EstimateMeter(power=MODEL, proc_root=tmp_path, clock=clock, cores=[0, 1])
    meter.begin_window("w")
    write_per_cpu_stat(tmp_path, {0: 300, 1: 400 + CLOCK_TICKS_PER_S})
    clock.now_s = 1.0
    m = meter.end_window("w")
    assert m.joules_by_device == {"core:0": pytest.approx(1.0), "core:1": pytest.approx(1.0 + 4.0)}
    assert any(note.startswith("core:0: busy CPU time went backwards") for note in m.notes)


def test_a_core_scope_without_proc_falls_back_to_own_cpu_time_with_one_cores_idle_power(tmp_path):
    meter = EstimateMeter(power=MODEL, proc_root=tmp_path / "no-proc", cores=[1])
    assert meter.scope == "process" and meter.device_ids == ["core:1"]
    meter.begin_window("gen")
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    m = meter.end_window("gen")
    assert m.busy_s_by_device["core:1"] >= 0.03
    # one core's idle watt, not the model's two
    assert m.joules == pytest.approx(1.0 * m.seconds + 4.0 * m.busy_s_by_device["core:1"])
    assert any("this process's only" in note for note in m.notes)


def test_get_meter_passes_the_cores_to_the_estimate(tmp_path):
    write_per_cpu_stat(tmp_path, {0: 0, 1: 0})
    scoped = get_meter(rapl_root=tmp_path / "no-rapl", proc_root=tmp_path, power=MODEL, cores=[1])
    assert isinstance(scoped, EstimateMeter) and scoped.device_ids == ["core:1"]
    assert get_meter(rapl_root=tmp_path / "no-rapl", proc_root=tmp_path, power=MODEL).device_ids == ["cpu:0"]


def test_real_proc_core_scope_stays_within_one_core():
    meter = EstimateMeter(power=MODEL, cores=[0])
    assert meter.scope == "cores 0"
    meter.begin_window("w")
    time.sleep(0.2)
    m = meter.end_window("w")
    tick_j = (MODEL.active_w_per_core - MODEL.idle_w_per_core) * 2 / CLOCK_TICKS_PER_S
    assert MODEL.idle_w_per_core * m.seconds <= m.joules <= MODEL.active_w_per_core * m.seconds + tick_j

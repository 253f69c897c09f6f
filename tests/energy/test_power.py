import pytest

from garrison.core.types import Device
from garrison.energy.power import DevicePowerSampler
from garrison.hardware.cpu import CpuPowerModel


def _write_stat(root, busy_ticks):
    lines = ["cpu  0 0 0 0 0 0 0 0"]
    for cpu, busy in enumerate(busy_ticks):
        lines.append(f"cpu{cpu} {busy} 0 0 1000 0 0 0 0")
    (root / "stat").write_text("\n".join(lines) + "\nintr 0\n")


def _cores(n):
    return [Device(id=f"core:{i}", kind="cpu-core", index=i, name="cpu", chip="cpu", cores=1) for i in range(n)]


def test_core_power_follows_each_cores_busy_time(tmp_path):
    clock = iter([0.0, 2.0])
    _write_stat(tmp_path, [0, 0])
    model = CpuPowerModel(active_w_per_core=10.0, idle_w_per_core=2.0, cores=2)
    sampler = DevicePowerSampler(_cores(2), model, proc_root=tmp_path, clock=lambda: next(clock))
    _write_stat(tmp_path, [200, 50])  # 100 ticks/s: core 0 busy 2 s of 2 s, core 1 busy 0.5 s of 2 s
    sample = sampler.sample()
    assert sample.source == "estimate"
    assert sample.interval_s == 2.0
    assert sample.power_w_by_device == pytest.approx({"core:0": 10.0, "core:1": 2.0 + 8.0 * 0.25})
    assert sample.total_w == pytest.approx(14.0)


def test_the_first_sample_is_idle_and_impossible_busy_time_is_clamped_and_noted(tmp_path):
    clock = iter([0.0, 1.0])
    _write_stat(tmp_path, [0])
    model = CpuPowerModel(active_w_per_core=10.0, idle_w_per_core=2.0, cores=1)
    sampler = DevicePowerSampler(_cores(1), model, proc_root=tmp_path, clock=lambda: next(clock))
    _write_stat(tmp_path, [500])  # 5 s busy in 1 s: a core count mismatch, not real
    sample = sampler.sample()
    assert sample.power_w_by_device["core:0"] == 10.0
    assert sample.notes and "out of range" in sample.notes[0]


def test_mixed_or_empty_device_lists_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        DevicePowerSampler([])
    gpu = Device(id="gpu:0", kind="gpu", index=0, name="H100")
    with pytest.raises(ValueError, match="all GPUs or all CPU core slots"):
        DevicePowerSampler([gpu, *_cores(1)])


def test_pinned_process_scope_counts_only_the_slots_own_processes(tmp_path):
    def write_pid(pid, ticks):
        (tmp_path / str(pid)).mkdir(exist_ok=True)
        fields = ["S"] + ["0"] * 10 + [str(ticks), "0"] + ["0"] * 30
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (python) " + " ".join(fields))

    _write_stat(tmp_path, [0, 0])
    clock = iter([0.0, 1.0, 2.0])
    pids = {"core:0": [101], "core:1": []}
    write_pid(101, 0)
    model = CpuPowerModel(active_w_per_core=10.0, idle_w_per_core=2.0, cores=2)
    sampler = DevicePowerSampler(
        _cores(2), model, proc_root=tmp_path, clock=lambda: next(clock), pids_by_device=lambda: pids
    )
    assert sampler.scope == "pinned processes"
    _write_stat(tmp_path, [100, 100])  # the machine is fully busy: someone else's work too
    write_pid(101, 50)  # our process used half a core
    first = sampler.sample()
    assert first.power_w_by_device == pytest.approx({"core:0": 6.0, "core:1": 2.0})
    # the whole logical CPUs beside it, other programs included: what a reader needs to tell them apart
    assert first.cpu_utilisation_by_device == pytest.approx({"core:0": 1.0, "core:1": 1.0})
    pids["core:0"] = []  # the process ended: what it used stays counted, nothing more is added
    _write_stat(tmp_path, [150, 100])
    second = sampler.sample()
    assert second.power_w_by_device == pytest.approx({"core:0": 2.0, "core:1": 2.0})
    assert second.cpu_utilisation_by_device == pytest.approx({"core:0": 0.5, "core:1": 0.0})


def test_whole_core_readings_only_beside_pinned_processes(tmp_path):
    clock = iter([0.0, 1.0])
    _write_stat(tmp_path, [0])
    sampler = DevicePowerSampler(_cores(1), CpuPowerModel(10.0, 2.0, 1), proc_root=tmp_path, clock=lambda: next(clock))
    _write_stat(tmp_path, [50])
    assert sampler.sample().cpu_utilisation_by_device == {}  # the logical CPU scope reads whole cores already


def test_a_process_spawned_since_the_last_sample_counts_from_its_start(tmp_path):
    """A worker started between two samples (a lend) is busy loading its model: that CPU time is the slot's work."""

    def write_pid(pid, ticks, start_ticks):
        (tmp_path / str(pid)).mkdir(exist_ok=True)
        fields = ["S"] + ["0"] * 10 + [str(ticks), "0"] + ["0"] * 6 + [str(start_ticks)] + ["0"] * 20
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (python) " + " ".join(fields))

    _write_stat(tmp_path, [0, 0])
    (tmp_path / "uptime").write_text("1000.00 1500.00\n")
    clock = iter([0.0, 2.0, 4.0])
    pids: dict[str, list[int]] = {"core:0": [], "core:1": []}
    model = CpuPowerModel(active_w_per_core=10.0, idle_w_per_core=2.0, cores=2)
    sampler = DevicePowerSampler(
        _cores(2), model, proc_root=tmp_path, clock=lambda: next(clock), pids_by_device=lambda: pids
    )
    (tmp_path / "uptime").write_text("1002.00 1500.00\n")
    write_pid(201, 150, start_ticks=100_050)  # started at uptime 1000.5 s, 1.5 s CPU since: counted in full
    write_pid(202, 90, start_ticks=50_000)  # an older process first seen now (adopted): counts from here on
    pids["core:0"], pids["core:1"] = [201], [202]
    first = sampler.sample()
    assert first.power_w_by_device == pytest.approx({"core:0": 2.0 + 8.0 * 0.75, "core:1": 2.0})
    write_pid(202, 190, start_ticks=50_000)  # then 1 s of CPU in 2 s
    (tmp_path / "uptime").write_text("1004.00 1500.00\n")
    assert sampler.sample().power_w_by_device["core:1"] == pytest.approx(2.0 + 8.0 * 0.5)

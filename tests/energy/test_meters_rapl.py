"""RAPL meter against a powercap sysfs tree the tests write: arithmetic, wraps, missing and root-only files."""

from __future__ import annotations

import multiprocessing
import os
import stat
import tempfile
import time
from pathlib import Path

import pytest

from garrison.energy.meters import (
    CounterError,
    EstimateMeter,
    MeterError,
    RaplMeter,
    ReplayClock,
    get_meter,
    probe_rapl,
)

MAX_RANGE_UJ = 10_000_000  # 10 J, so a test can wrap it with small numbers


def make_zone(root: Path, zone: str, name: str, energy_uj: int | None, max_range_uj: int | None = MAX_RANGE_UJ) -> Path:
    path = root / zone
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    if energy_uj is not None:
        (path / "energy_uj").write_text(f"{energy_uj}\n")
    if max_range_uj is not None:
        (path / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    return path


def set_energy(zone: Path, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


def rapl_meter(root: Path, clock: ReplayClock) -> RaplMeter:
    return RaplMeter.from_sysfs(root, clock=clock, poll_interval_s=None)


def test_window_is_the_counter_difference(tmp_path):
    zone = make_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    clock = ReplayClock()
    meter = rapl_meter(tmp_path, clock)
    meter.begin_window("gen")
    set_energy(zone, 3_500_000)
    clock.now_s = 2.0
    m = meter.end_window("gen")
    assert m.source == "rapl"
    assert m.joules_by_device == {"cpu:0": pytest.approx(2.5)}
    assert m.seconds == 2.0
    assert m.notes == ()


def test_one_wrap_is_corrected_and_noted(tmp_path):
    zone = make_zone(tmp_path, "intel-rapl:0", "package-0", 9_000_000)
    meter = rapl_meter(tmp_path, ReplayClock())
    meter.begin_window("gen")
    set_energy(zone, 1_000_000)
    meter._clock.now_s = 1.0
    m = meter.end_window("gen")
    assert m.joules == pytest.approx(2.0)  # 1 J up to the wrap, 1 J after it
    assert any("wrapped" in note for note in m.notes)


def test_two_wraps_in_one_window_need_a_poll_between(tmp_path):
    zone = make_zone(tmp_path, "intel-rapl:0", "package-0", 9_000_000)
    clock = ReplayClock()
    meter = rapl_meter(tmp_path, clock)
    meter.begin_window("long")
    set_energy(zone, 5_000_000)  # wrapped once
    clock.now_s = 1.0
    meter.poll()  # what the wrap thread does
    set_energy(zone, 2_000_000)  # wrapped again
    clock.now_s = 2.0
    m = meter.end_window("long")
    assert m.joules == pytest.approx(1 + 5 + 5 + 2)
    assert sum("wrapped" in note for note in m.notes) == 2


def test_wrap_thread_catches_wraps_between_window_reads(tmp_path):
    zone = make_zone(tmp_path, "intel-rapl:0", "package-0", 9_000_000)
    meter = RaplMeter.from_sysfs(tmp_path, poll_interval_s=0.01)
    try:
        meter.begin_window("long")
        for value in (5_000_000, 2_000_000):  # two wraps, each seen only by the thread
            set_energy(zone, value)
            # wait (on a busy machine, up to seconds) until the thread has read the value, not a fixed time
            deadline = time.monotonic() + 10.0
            while meter.zones[0].last_raw_uj != value and time.monotonic() < deadline:
                time.sleep(0.005)
            assert meter.zones[0].last_raw_uj == value, "the wrap thread never read the counter"
        m = meter.end_window("long")
    finally:
        meter.close()
    assert m.joules == pytest.approx(13.0)
    assert meter.zones[0].wraps == 2


def test_default_poll_interval_cannot_miss_a_wrap(tmp_path):
    make_zone(tmp_path, "intel-rapl:0", "package-0", 0, max_range_uj=262_143_328_850)
    meter = RaplMeter.from_sysfs(tmp_path)
    # 262 kJ at 1 kW wraps after 262 s; reading every quarter of that sees every wrap
    assert meter.poll_interval_s == pytest.approx(262.143328850 / 4)


def test_backwards_counter_without_max_range_is_an_error(tmp_path):
    zone = make_zone(tmp_path, "intel-rapl:0", "package-0", 9_000_000, max_range_uj=None)
    meter = rapl_meter(tmp_path, ReplayClock())
    meter.begin_window("gen")
    set_energy(zone, 1_000_000)
    with pytest.raises(CounterError, match="max_energy_range_uj is unknown"):
        meter.end_window("gen")


def test_counter_above_its_range_is_an_error(tmp_path):
    zone = make_zone(tmp_path, "intel-rapl:0", "package-0", 20_000_000)
    meter = rapl_meter(tmp_path, ReplayClock())
    meter.begin_window("gen")
    set_energy(zone, 1_000_000)
    with pytest.raises(CounterError, match="above max_energy_range_uj"):
        meter.end_window("gen")


def test_counter_file_vanishing_mid_window_is_an_error(tmp_path):
    zone = make_zone(tmp_path, "intel-rapl:0", "package-0", 1_000)
    meter = rapl_meter(tmp_path, ReplayClock())
    meter.begin_window("gen")
    (zone / "energy_uj").unlink()
    with pytest.raises(CounterError, match="disappeared"):
        meter.end_window("gen")


def test_packages_are_devices_and_subzones_and_psys_are_skipped(tmp_path):
    p0 = make_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    p1 = make_zone(tmp_path, "intel-rapl:1", "package-1", 0)
    make_zone(tmp_path, "intel-rapl:0:0", "core", 0)  # inside package-0's figure: must not be added again
    make_zone(tmp_path, "intel-rapl:2", "psys", 0)  # whole platform: would double-count
    meter = rapl_meter(tmp_path, ReplayClock())
    assert meter.device_ids == ["cpu:0", "cpu:1"]
    meter.begin_window("w")
    set_energy(p0, 1_000_000)
    set_energy(p1, 3_000_000)
    m = meter.end_window("w")
    assert m.joules_by_device == {"cpu:0": pytest.approx(1.0), "cpu:1": pytest.approx(3.0)}
    assert m.joules == pytest.approx(4.0)


def test_missing_tree_falls_back_to_the_estimate_with_the_reason(tmp_path):
    zones, reason = probe_rapl(tmp_path / "nope")
    assert zones == [] and "does not exist" in reason
    meter = get_meter(rapl_root=tmp_path / "nope")
    if meter.source != "nvml":  # a machine with a GPU prefers NVML
        assert isinstance(meter, EstimateMeter)
        assert "rapl:" in meter.reason and "does not exist" in meter.reason
    with pytest.raises(MeterError, match="RAPL meter asked for but unavailable"):
        get_meter(prefer="rapl", rapl_root=tmp_path / "nope")


def test_zone_without_energy_file_is_skipped_with_reason(tmp_path):
    make_zone(tmp_path, "intel-rapl:0", "package-0", None)
    zones, reason = probe_rapl(tmp_path)
    assert zones == [] and "energy_uj unreadable" in reason


def test_get_meter_picks_rapl_when_readable(tmp_path):
    make_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    meter = get_meter(rapl_root=tmp_path)
    assert meter.source in ("nvml", "rapl")  # NVML first where a GPU is present
    assert get_meter(prefer="rapl", rapl_root=tmp_path).source == "rapl"
    with pytest.raises(MeterError, match="unknown meter"):
        get_meter(prefer="joulemeter")


def _probe_as_nobody(root: str, queue: multiprocessing.Queue) -> None:
    os.setgid(65534)
    os.setuid(65534)
    zones, reason = probe_rapl(Path(root))
    queue.put((len(zones), reason))


def test_root_only_counter_falls_back_with_reason(tmp_path):
    # Kernels make energy_uj root-only (CVE-2020-8694). Root reads anything, so as root the probe runs in a child
    # that drops to `nobody`, in a tree that nobody may traverse but whose counter only root may read.
    base = Path(tempfile.mkdtemp(dir="/tmp" if os.geteuid() == 0 else tmp_path))
    try:
        os.chmod(base, 0o755)
        zone = make_zone(base, "intel-rapl:0", "package-0", 123)
        os.chmod(zone, 0o755)
        for f in zone.iterdir():
            os.chmod(f, 0o444)
        os.chmod(zone / "energy_uj", stat.S_IRUSR)  # 0400: owner only
        if os.geteuid() == 0:
            queue: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()
            child = multiprocessing.get_context("fork").Process(target=_probe_as_nobody, args=(str(base), queue))
            child.start()
            child.join(10)
            n_zones, reason = queue.get(timeout=5)
        else:
            os.chmod(zone / "energy_uj", 0)
            zones, reason = probe_rapl(base)
            n_zones = len(zones)
        assert n_zones == 0
        assert "root-only" in reason
    finally:
        for path in sorted(base.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        base.rmdir()

import os
import subprocess
import sys
import time

import pytest

from garrison.core.types import Device
from garrison.hardware.cpu import CpuPowerModel, process_cpu_s
from garrison.hardware.power_limit import CpuSlotLimiter, PowerLimitError

MODEL = CpuPowerModel(active_w_per_core=10.0, idle_w_per_core=2.0, cores=1)
CORE = Device(id="core:0", kind="cpu-core", index=0, name="cpu", chip="cpu", cores=1)


def test_without_a_cgroup_controller_slots_say_why(tmp_path):
    limiter = CpuSlotLimiter(MODEL, owner="t", root=tmp_path)
    assert not limiter.available
    info = limiter.info(CORE)
    assert not info.settable and "no writable CPU cgroup" in info.reason
    with pytest.raises(PowerLimitError, match="not settable"):
        limiter.set(CORE, 5.0)


def test_v1_limit_writes_the_quota_that_caps_utilisation(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    limiter = CpuSlotLimiter(MODEL, owner="t", root=tmp_path)
    assert limiter.available
    assert limiter.set(CORE, 6.0) == 6.0  # (6 - 2) / (10 - 2) = half the core
    slot = tmp_path / "cpu" / "garrison-t" / "core-0"
    assert (slot / "cpu.cfs_quota_us").read_text() == "50000"
    assert limiter.set(CORE, 1.0) == pytest.approx(2.8)  # clamped to the 10% floor
    assert limiter.set(CORE, 99.0) == 10.0 and (slot / "cpu.cfs_quota_us").read_text() == "-1"


def test_a_real_cgroup_limit_slows_a_busy_process():
    limiter = CpuSlotLimiter(MODEL, owner=f"test-{time.time_ns()}")
    if not limiter.available:
        message = f"this machine has no writable CPU cgroup: {limiter.reason}"
        if os.environ.get("CI"):  # CI runs as root on a machine of the project's kind, which has one
            pytest.fail(message)
        pytest.skip(message)
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        limiter.attach(CORE, spin.pid)
        limiter.set(CORE, 2.0 + 8.0 * 0.2)  # 20% of a core
        start = process_cpu_s(spin.pid)
        time.sleep(1.5)
        used = process_cpu_s(spin.pid) - start
        assert used < 0.5  # unlimited it would use ~1.5 CPU-s
    finally:
        spin.kill()
        spin.wait()
        limiter.close()

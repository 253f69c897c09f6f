"""CPU device: the power model's arithmetic, /proc parsing, and the measured-once, cached matmul peak."""

from __future__ import annotations

import json
import os
import time

import pytest

from garrison.hardware.cpu import (
    CLOCK_TICKS_PER_S,
    CpuPowerModel,
    bf16_is_fast,
    cached_cpu_peak,
    cpu_capability,
    cpu_chip,
    cpu_peak,
    cpu_peak_cache_path,
    process_cpu_s,
    read_cpu_times,
)


def test_linear_power_model_arithmetic():
    model = CpuPowerModel(active_w_per_core=5.0, idle_w_per_core=1.0, cores=2)
    assert model.tdp_w == 10.0 and model.idle_w == 2.0
    # 10 s, 5 CPU-seconds busy: 2 W x 10 s idle floor + (5 - 1) W x 5 s
    assert model.joules(10.0, 5.0) == pytest.approx(40.0)
    # not capped at cores x seconds: the meter flags real excess, and quantization must even out across windows
    assert model.joules(10.0, 21.0) == pytest.approx(2.0 * 10 + 4.0 * 21)
    with pytest.raises(ValueError):
        model.joules(-1.0, 0.0)


def test_power_model_refuses_idle_above_active():
    with pytest.raises(ValueError, match="idle"):
        CpuPowerModel(active_w_per_core=1.0, idle_w_per_core=2.0)


def test_power_model_from_env(monkeypatch):
    assert CpuPowerModel.from_env() == CpuPowerModel()
    monkeypatch.setenv("GARRISON_CPU_ACTIVE_W_PER_CORE", "8")
    monkeypatch.setenv("GARRISON_CPU_IDLE_W_PER_CORE", "2.5")
    model = CpuPowerModel.from_env()
    assert (model.active_w_per_core, model.idle_w_per_core) == (8.0, 2.5)
    monkeypatch.setenv("GARRISON_CPU_ACTIVE_W_PER_CORE", "lots")
    with pytest.raises(ValueError, match="must be numbers"):
        CpuPowerModel.from_env()


def test_read_cpu_times_from_a_written_proc(tmp_path):
    # user nice system idle iowait irq softirq steal guest guest_nice
    (tmp_path / "stat").write_text("cpu  1000 10 200 5000 50 5 15 70 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    times = read_cpu_times(tmp_path)
    assert times.busy_s == pytest.approx((1000 + 10 + 200 + 5 + 15) / CLOCK_TICKS_PER_S)
    assert times.idle_s == pytest.approx(5050 / CLOCK_TICKS_PER_S)
    assert times.steal_s == pytest.approx(70 / CLOCK_TICKS_PER_S)
    (tmp_path / "stat").write_text("intr 1 2 3\n")
    with pytest.raises(ValueError, match="unexpected"):
        read_cpu_times(tmp_path)


def test_process_cpu_s_parses_names_with_spaces_and_parens(tmp_path):
    (tmp_path / "4242").mkdir()
    fields = ["S"] + ["0"] * 10 + ["300", "50"] + ["0"] * 30  # state, ..., utime (14), stime (15), ...
    (tmp_path / "4242" / "stat").write_text("4242 (my (odd) worker) " + " ".join(fields) + "\n")
    assert process_cpu_s(4242, tmp_path) == pytest.approx(350 / CLOCK_TICKS_PER_S)


def test_process_cpu_s_sees_real_work():
    before = process_cpu_s(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert process_cpu_s(os.getpid()) - before >= 0.03  # /proc counts in 10 ms ticks


def test_cpu_peak_is_measured_once_then_cached(isolated_home):
    peak = cpu_peak(n=64, budget_s=0.005)
    assert set(peak.peak_flops_by_dtype) == {"fp32", "bf16"}
    for flops in peak.peak_flops_by_dtype.values():
        assert 1e6 < flops < 1e14  # a real CPU, not zero, not a datacenter GPU
    assert cpu_peak_cache_path() == isolated_home / "hardware" / "cpu_peak.json"
    again = cpu_peak(n=64, budget_s=0.005)
    assert again.measured_at_unix_s == peak.measured_at_unix_s  # from the cache
    assert cached_cpu_peak() == peak
    refreshed = cpu_peak(refresh=True, n=64, budget_s=0.005)
    assert refreshed.measured_at_unix_s > peak.measured_at_unix_s


def test_cpu_peak_cache_for_another_machine_or_corrupt_is_remeasured(isolated_home):
    path = cpu_peak_cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps(
            {
                "cpu_model": "Some Other CPU",
                "threads": 1,
                "torch_version": "0",
                "peak_flops_by_dtype": {"fp32": 1.0},
                "matrix_n": 1,
                "measured_at_unix_s": 0.0,
                "loadavg_1m": 0.0,
            }
        )
    )
    assert cached_cpu_peak() is None
    assert cpu_peak(n=64, budget_s=0.005).peak_flops_by_dtype["fp32"] > 1.0
    path.write_text("{not json")
    assert cpu_peak(n=64, budget_s=0.005).measured_at_unix_s > 0


def test_a_cache_from_a_host_of_the_same_name_with_another_vector_isa_is_remeasured(isolated_home, cpu_peak_cache):
    cpu_peak_cache(fp32_flops=1.0, bf16_flops=1.0)
    assert cached_cpu_peak() is not None
    path = cpu_peak_cache_path()
    entry = json.loads(path.read_text())
    path.write_text(json.dumps({**entry, "cpu_capability": "NOT-" + cpu_capability()}))
    assert cached_cpu_peak() is None
    assert cpu_peak(n=64, budget_s=0.005).peak_flops_by_dtype["fp32"] > 1.0


def test_bf16_is_the_default_only_where_it_is_at_least_as_fast_as_fp32(isolated_home, cpu_peak_cache):
    cpu_peak_cache(fp32_flops=119e9, bf16_flops=1.8e9)  # an AVX2-only EPYC: bf16 emulated
    assert bf16_is_fast("cpu") is False
    cpu_peak_cache(fp32_flops=164e9, bf16_flops=404e9)  # an AVX-512 BF16 part
    assert bf16_is_fast("cpu") is True
    assert bf16_is_fast("mps") is False


def test_cpu_chip_uses_measured_peak_and_assumed_watts():
    peak = cpu_peak(n=64, budget_s=0.005)
    chip = cpu_chip(peak, CpuPowerModel(active_w_per_core=4.0, idle_w_per_core=1.0, cores=2))
    assert chip.tdp_w == 8.0
    assert chip.flop_per_joule("fp32") == pytest.approx(peak.peak_flops_by_dtype["fp32"] / 8.0)
    assert "measured on this machine" in chip.source


def test_peak_is_timed_on_one_thread_and_scaled_to_the_thread_count():
    import torch

    from garrison.hardware.cpu import measure_matmul_peak

    threads = torch.get_num_threads()
    per_thread = measure_matmul_peak("fp32", n=64, budget_s=0.005)
    assert torch.get_num_threads() == threads  # the measurement gives the threads back
    peak = cpu_peak(n=64, budget_s=0.005)
    assert peak.threads == threads
    # the same measurement twice varies, but not by an order of magnitude
    assert 0.1 < peak.peak_flops_by_dtype["fp32"] / (threads * per_thread) < 10
    with pytest.raises(ValueError, match="dtype"):
        measure_matmul_peak("fp64")

"""Smoke test of benchmarks/diffusers_wan_gpu.py on a tiny random Wan config on the CPU: the GPU run's code path
(build, modes, equivalence check, FLOPs, energy window, ML.ENERGY lookup, JSON line) is known to work before a GPU
ever sees it. torch.compile modes are left to the GPU run: compiling on a 2-core CPU takes minutes."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "diffusers_wan_gpu.py"


def test_tiny_run_prints_one_json_line_with_every_figure(tmp_path, cpu_peak_cache):
    cpu_peak_cache(fp32_flops=1e11, bf16_flops=1e11)  # the subprocess shares GARRISON_HOME: no peak measuring
    out = tmp_path / "wan.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--modes", "stock,kernels,fbcache", "--steps", "3", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == line
    assert line["config"]["frames"] == 17 and line["config"]["steps"] == 3 and line["config"]["dtype"] == "fp32"
    assert line["flops_per_video"] > 3 * line["flops_per_step"] > 0
    stock, kernels, fbcache = (line["modes"][m] for m in ("stock", "kernels", "fbcache"))
    for mode in (stock, kernels, fbcache):
        assert mode["step_s"] > 0 and mode["joules"] > 0 and mode["efficiency_vs_limit"] > 1
        assert 0 < mode["mfu"] < 1 and mode["achieved_flop_per_s"] > 0
    assert kernels["applied"] == {"fuse_qkv": True} and kernels["equivalent"]
    assert kernels["forward_rel_l2_vs_stock"] <= line["forward_rel_tol"] == 1e-4
    assert "speedup_vs_stock" in kernels and "equivalent" not in fbcache  # output-changing: not held to equivalence
    assert fbcache["applied"]["first_block_cache"] == 0.05
    assert line["best_exact_mode"] == "kernels" and line["targets"]["all_exact_modes_equivalent"]
    assert line["mlenergy_reference"] is None  # no ML.ENERGY figure for a tiny config on a CPU


def test_modes_must_start_with_stock(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--modes", "kernels"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "must start with stock" in proc.stderr

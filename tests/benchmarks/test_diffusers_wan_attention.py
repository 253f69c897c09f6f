"""Smoke test of benchmarks/diffusers_wan_attention.py on a tiny random Wan config on the CPU: the backends this
build cannot run on a CPU are reported with their error, the others are timed and compared with native."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "diffusers_wan_attention.py"


def test_tiny_run_times_each_backend_and_reports_the_ones_that_cannot_run(tmp_path):
    out = tmp_path / "attention.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--no-compile", "--repeats", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == line
    rows = {r["attention"]: r for r in line["rows"]}
    assert set(rows) == {"native", "_native_flash", "_native_cudnn", "_native_efficient"}
    assert rows["native"]["rel_l2_vs_native"] == 0.0 and rows["native"]["forward_s"] > 0
    # On a CPU, SDPA's flash backend falls back to the CPU flash kernel; cuDNN and memory-efficient do not exist
    assert rows["_native_flash"]["rel_l2_vs_native"] < 1e-5
    assert "No viable backend" in rows["_native_cudnn"]["error"]
    assert line["fastest_forced_backend"] == "_native_flash" and not any(r["compiled"] for r in line["rows"])

"""`garrison energy info` and `garrison energy measure`, through typer's runner on the real commands."""

from __future__ import annotations

import json
import sys

import typer
from typer.testing import CliRunner

from garrison.cli.energy import register
from garrison.core.types import ENERGY_SOURCES


def app() -> typer.Typer:
    # The energy commands on their own app, as main.py registers them, so this test needs no other sub-command.
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        pass

    register(root)
    return root


def test_info_json_names_the_meter_and_the_assumptions(cpu_peak_cache):
    cpu_peak_cache(fp32_flops=50e9, bf16_flops=120e9)
    result = CliRunner().invoke(app(), ["energy", "info", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["meter"]["source"] in ENERGY_SOURCES and info["meter"]["reason"]
    est = info["estimate_assumptions"]
    assert est["active_w_per_core"] == 5.6 and est["idle_w_per_core"] == 1.7
    assert info["cpu_peak"]["peak_flops_by_dtype"] == {"fp32": 50e9, "bf16": 120e9}
    assert {c["key"] for c in info["catalog"]} >= {"h100-sxm", "b200"}


def test_info_text_and_env_assumptions(cpu_peak_cache, monkeypatch):
    cpu_peak_cache(fp32_flops=50e9, bf16_flops=120e9)
    monkeypatch.setenv("GARRISON_CPU_ACTIVE_W_PER_CORE", "9")
    result = CliRunner().invoke(app(), ["energy", "info"])
    assert result.exit_code == 0, result.output
    assert "9.0 W active" in result.stdout
    assert "h100-sxm" in result.stdout


def test_measure_a_command():
    cmd = [sys.executable, "-c", "sum(i * i for i in range(300000))"]
    result = CliRunner().invoke(app(), ["energy", "measure", "--json", "--region", "se", "--", *cmd])
    assert result.exit_code == 0, result.output
    fields = json.loads(result.stdout)
    assert fields["returncode"] == 0
    assert fields["energy_source"] in ENERGY_SOURCES
    assert fields["joules"] > 0 and fields["seconds"] > 0
    assert fields["co2_g"] == fields["joules"] / 3.6e6 * 40


def test_measure_passes_the_exit_code_and_reports_bad_options():
    result = CliRunner().invoke(app(), ["energy", "measure", "--", sys.executable, "-c", "raise SystemExit(3)"])
    assert result.exit_code == 3
    result = CliRunner().invoke(app(), ["energy", "measure", "--region", "moon", "--", "true"])
    assert result.exit_code == 2
    assert "unknown region" in result.output
    result = CliRunner().invoke(app(), ["energy", "measure", "--", "/no/such/program"])
    assert result.exit_code == 2
    assert "could not run" in result.output

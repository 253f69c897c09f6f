"""Shared fixtures. Tests run on the CPU with the checkpoint shipped inside the package, each test with its own
GARRISON_HOME (keys, registry, audit log, cached CPU peak) and none of the machine's GARRISON_* settings."""

from __future__ import annotations

import json
import os

import pytest
import torch

from garrison.hardware.cpu import cpu_model_name

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def skip_without_shared():
    """Skip a test that reads shared/ when a checkout has none beside it; in CI shared/ is always there, so fail."""

    def skip(path: object, what: str) -> None:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is missing in CI: {path}")
        pytest.skip(f"{what} not beside this checkout: {path}")

    return skip


@pytest.fixture(scope="session")
def pipeline():
    from garrison.video.pipelines.builtin import BuiltinPipeline

    return BuiltinPipeline.load()


@pytest.fixture(scope="session")
def text_encoder():
    from garrison.video.models.text_encoder import shared_text_encoder

    return shared_text_encoder()


ENV_VARS = (
    "GARRISON_CPU_ACTIVE_W_PER_CORE",
    "GARRISON_CPU_IDLE_W_PER_CORE",
    "GARRISON_METER",
    "GARRISON_TARIFF",
    "GARRISON_USD_PER_KWH",
    "GARRISON_REGION",
    "GARRISON_CO2_G_PER_KWH",
)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "garrison_home"
    monkeypatch.setenv("GARRISON_HOME", str(home))
    return home


@pytest.fixture
def cpu_peak_cache(isolated_home):
    """Write a cpu_peak.json for this machine, as cpu_peak() writes it, so tests need not spend seconds measuring."""

    def write(fp32_flops: float, bf16_flops: float) -> None:
        path = isolated_home / "hardware" / "cpu_peak.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "cpu_model": cpu_model_name(),
            "threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "peak_flops_by_dtype": {"fp32": fp32_flops, "bf16": bf16_flops},
            "matrix_n": 1024,
            "measured_at_unix_s": 0.0,
            "loadavg_1m": 0.0,
        }
        path.write_text(json.dumps(entry))

    return write

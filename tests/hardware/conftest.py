"""Isolate each hardware test from the machine's ~/.garrison and GARRISON_* settings."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    for var in ("GARRISON_CPU_ACTIVE_W_PER_CORE", "GARRISON_CPU_IDLE_W_PER_CORE", "GARRISON_METER"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "garrison_home"
    monkeypatch.setenv("GARRISON_HOME", str(home))
    return home

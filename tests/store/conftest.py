"""Store test helpers: a tenant, a video factory, and a runner for the helper processes in `processes.py`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROCESSES = Path(__file__).with_name("processes.py")

REQUEST = {"prompt": "a red circle moving right", "model": "garrison-builtin", "seconds": 2, "size": "64x64",
           "steps": 12, "guidance": 4.0, "seed": 0}  # fmt: skip


@pytest.fixture
def tenant(store):
    created, _key = store.create_tenant("acme")
    return created


@pytest.fixture
def make_video(store, tenant):
    """Queue a video for `tenant` (or another tenant id); keyword arguments override the request."""

    def make(tenant_id: str | None = None, **overrides):
        video, created = store.create_video(tenant_id or tenant.id, **(REQUEST | overrides))
        assert created
        return video

    return make


@pytest.fixture
def spawn():
    """Start `python tests/store/processes.py MODE ARGS...` (a real, separate interpreter); killed if still running."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, str(PROCESSES), *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)

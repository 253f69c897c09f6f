"""Fixtures for the server's tests: the app (in process, through Starlette's TestClient) over the `store` fixture of
tests/conftest.py (a real SQLite file and a real PostgreSQL schema: every test runs on both backends), and a real
server process on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from garrison.server.app import create_app


@pytest.fixture
def content_dir(tmp_path):
    path = tmp_path / "content"
    path.mkdir()
    return path


@pytest.fixture
def api_key(store):
    return store.create_tenant("acme")[1]


@pytest.fixture
def auth(api_key):
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def client(store, content_dir):
    # raise_server_exceptions=False: a bug must show up as the 500 a real client would see, so tests can assert on it.
    app = create_app(store, content_dir=content_dir, key_cache_ttl_s=0.0)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout_s} s")


def stop(proc: subprocess.Popen, timeout_s: float = 30.0) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture
def live_server(store_url, content_dir, tmp_path):
    """A real `python -m garrison.server.app` on a free loopback port; yields its base URL."""
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "garrison.server.app", "--host", "127.0.0.1", "--port", str(port),
             "--store", store_url, "--content-dir", str(content_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )  # fmt: skip
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(proc)


def start_worker(store_url: str, content_dir: Path, worker_id: str, log_path: Path, *extra: str) -> subprocess.Popen:
    """A real serving worker process over the store."""
    log = open(log_path, "ab")  # noqa: SIM115 - the process owns it until it ends
    return subprocess.Popen(
        [sys.executable, "-m", "garrison.governor.executors.serving_worker", "--store", store_url,
         "--worker-id", worker_id, "--device", "cpu:0", "--content-dir", str(content_dir), *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )  # fmt: skip

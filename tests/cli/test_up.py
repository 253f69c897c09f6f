"""`garrison up`: API, governor and dashboard in one command, driven by the official openai SDK, stopped cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import openai

from garrison.store import open_store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children_running(parent_pid: int, module: str) -> list[int]:
    """Pids of the direct children of `parent_pid` whose command line names `module`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent_pid and module in cmdline:
            found.append(int(entry))
    return found


def test_up_serves_the_sdk_runs_the_governor_and_stops_on_sigterm(tmp_path):
    port = _free_port()
    env = {**os.environ, "GARRISON_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "garrison.cli.main", "up", "--port", str(port), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        info = json.loads(proc.stdout.readline())
        assert info["dashboard"] == f"http://127.0.0.1:{port}/dashboard"
        key = info["admin_api_key"]
        client = openai.OpenAI(base_url=info["api"], api_key=key, max_retries=0)
        deadline = time.monotonic() + 60
        while True:  # uvicorn starts right after the URLs are printed
            try:
                httpx.get(f"http://127.0.0.1:{port}/dashboard", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.2)
        video = client.videos.create_and_poll(
            prompt="a red circle moving right on a black background", seconds="4", size="1280x720",
            poll_interval_ms=300,
        )  # fmt: skip
        assert video.status == "completed", video
        assert len(client.videos.download_content(video.id).content) > 1000
        fleet = httpx.get(f"{info['api']}/fleet", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
        assert {d["id"] for d in fleet["devices"]} == set(info["devices"])
        store = open_store(info["store"])
        assert store.get_setting("executor.pids")  # the governor runs workers
        pids = list(store.get_setting("executor.pids").values())
        policy_pids = _children_running(proc.pid, "garrison.server.policy_pool")
        assert len(policy_pids) == 1  # prompts are screened in their own process (server/policy_pool.py)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0
    for pid in pids + policy_pids:  # every worker it started, and the policy process, is gone
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
    assert store.get_setting("executor.pids") == {}

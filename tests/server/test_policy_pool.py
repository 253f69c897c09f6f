"""The prompt policy's child process: same decisions as in process, survives its child being killed, and the app
answers 503 (nothing stored) when no child can decide."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
from fastapi.testclient import TestClient

from garrison.server import policy_pool
from garrison.server.app import create_app
from garrison.server.policy_pool import PolicyChildDied, PolicyPool, PolicyUnavailable, policy_processes_from_env
from garrison.shield.policy import Policy, PolicyConfig

PROMPTS = [
    "a red circle moving right on a black background",
    "Lincoln Park at sunset",
    "Mickey Mouse dancing on a table",
    "the president of an imaginary country waving",
]


@pytest.fixture(scope="module")
def pool():
    p = PolicyPool(1)
    p.start()
    yield p
    p.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0 until its parent reaps it; the pool's reader thread reaps it.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_decisions_match_the_policy_in_process(pool):
    local = Policy(PolicyConfig())
    for prompt in PROMPTS:
        assert asyncio.run(pool.check(prompt)) == local.check(prompt)

    # And through the asyncio path the server uses, concurrently.
    async def all_at_once():
        return await asyncio.gather(*(pool.check(p) for p in PROMPTS))

    assert asyncio.run(all_at_once()) == [local.check(p) for p in PROMPTS]
    assert [d.refused for d in asyncio.run(all_at_once())] == [False, False, True, False]


def test_the_child_imports_the_policy_and_not_the_server(pool):
    (pid,) = pool.child_pids()
    cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    assert b"garrison.server.policy_pool" in cmdline
    maps = open(f"/proc/{pid}/maps").read()
    assert "fastapi" not in maps and "torch" not in maps  # a child is the policy, not a copy of the server


def test_a_killed_child_is_replaced_and_its_pending_prompt_still_decided(pool):
    (pid,) = pool.child_pids()
    restarts = pool.restarts
    # Stopped first, so the prompt is still in flight when the child dies (a list match answers in well under a
    # millisecond: sent and killed back to back, the answer sometimes came first).
    os.kill(pid, signal.SIGSTOP)
    future = pool._least_busy().submit(PROMPTS[2])
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(PolicyChildDied):
        future.result(timeout=30)
    # The next check starts a new child and decides.
    assert asyncio.run(pool.check(PROMPTS[2])).refused
    (new_pid,) = pool.child_pids()
    assert new_pid != pid and pool.restarts == restarts + 1
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_an_awaited_check_survives_its_child_dying_mid_request():
    p = PolicyPool(1)
    try:
        p.start()
        (pid,) = p.child_pids()

        async def check_while_killing():
            task = asyncio.ensure_future(p.check(PROMPTS[0]))
            await asyncio.sleep(0)  # submitted
            os.kill(pid, signal.SIGKILL)
            return await task

        assert asyncio.run(check_while_killing()).decision == "allow"
        assert p.child_pids() and p.child_pids()[0] != pid
    finally:
        p.close()


def test_a_stuck_child_is_killed_and_the_prompt_decided_by_a_new_one():
    p = PolicyPool(1, timeout_s=1.0)
    try:
        p.start()
        (pid,) = p.child_pids()
        os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
        started = time.monotonic()
        assert asyncio.run(p.check(PROMPTS[2])).refused
        assert 1.0 <= time.monotonic() - started < 60
        assert p.child_pids()[0] != pid and p.restarts == 1
        assert asyncio.run(p.check(PROMPTS[1])).decision == "allow"
    finally:
        p.close()


def test_close_ends_the_children():
    p = PolicyPool(2)
    p.start()
    pids = p.child_pids()
    assert len(pids) == 2
    p.close()
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(PolicyUnavailable):
        asyncio.run(p.check(PROMPTS[0]))


def test_policy_processes_from_env(monkeypatch):
    monkeypatch.delenv("GARRISON_POLICY_PROCESSES", raising=False)
    assert policy_processes_from_env() == 1
    monkeypatch.setenv("GARRISON_POLICY_PROCESSES", "0")
    assert policy_processes_from_env() == 0
    for bad in ("two", "-1", "1.5"):
        monkeypatch.setenv("GARRISON_POLICY_PROCESSES", bad)
        with pytest.raises(ValueError, match="GARRISON_POLICY_PROCESSES"):
            policy_processes_from_env()
    with pytest.raises(ValueError, match="at least one"):
        PolicyPool(0)


def test_app_screens_in_the_child_and_audits_in_the_server(store, content_dir, auth):
    app = create_app(store, content_dir=content_dir, key_cache_ttl_s=0.0, policy_processes=1)
    with TestClient(app, raise_server_exceptions=False) as client:
        pool = app.state.policy_pool
        (pid,) = pool.child_pids()  # started by the app's lifespan, before the first request
        ok = client.post("/v1/videos", headers=auth, json={"prompt": PROMPTS[0]})
        assert ok.status_code == 200, ok.text
        refused = client.post("/v1/videos", headers=auth, json={"prompt": PROMPTS[2]})
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "content_policy_violation"
        from garrison.shield.verify import default_shield

        kinds = [r["event"] for r in default_shield().audit.records()][-2:]
        assert kinds == ["policy_decision", "policy_decision"]
    assert not _alive(pid)  # the lifespan's shutdown closed the pool


def test_app_answers_503_and_stores_nothing_when_no_child_can_decide(store, content_dir, auth, monkeypatch):
    class DyingChild:
        dead = False
        pending = 0
        ready = threading.Event()

        def __init__(self, use_embeddings: bool) -> None:
            pass

        def submit(self, prompt):
            raise PolicyChildDied("policy process 0 exited with -9")

    monkeypatch.setattr(policy_pool, "_Child", DyingChild)
    app = create_app(store, content_dir=content_dir, key_cache_ttl_s=0.0, policy_processes=1)
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: the pool would fail to warm up
    r = client.post("/v1/videos", headers=auth, json={"prompt": PROMPTS[0]})
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "policy_unavailable"
    assert client.get("/v1/videos", headers=auth).json()["data"] == []

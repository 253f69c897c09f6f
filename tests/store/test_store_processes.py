"""The Store shared by real processes, on both backends: claims are exclusive across interpreters, and a writer
killed with SIGKILL in the middle of a transaction leaves the database consistent and unlocked."""

from __future__ import annotations

import os
import signal

import sqlalchemy as sa
from tests.store.conftest import REQUEST

from garrison.core.fleet import VideoStatus


def test_four_processes_claim_each_of_200_videos_exactly_once(store, tenant, spawn):
    made = {store.create_video(tenant.id, **(REQUEST | {"seed": i}))[0].id for i in range(200)}
    claimers = [spawn("claim", store.url, f"p{i}") for i in range(4)]
    for process in claimers:
        assert process.stdout.readline().strip() == "ready", process.stderr.read()
    for process in claimers:  # all four are open and waiting: let them go together
        process.stdin.write("go\n")
        process.stdin.flush()
    claimed: dict[str, list[str]] = {}
    for i, process in enumerate(claimers):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        claimed[f"p{i}"] = out.split()
    every = [video_id for ids in claimed.values() for video_id in ids]
    assert len(every) == len(made) and set(every) == made  # each exactly once
    assert sum(1 for ids in claimed.values() if ids) >= 2  # they did run side by side
    for worker, ids in claimed.items():
        for video_id in ids[:5]:
            assert store.get_video(video_id).worker_id == worker
    assert store.queue_stats().queued == 0 and store.queue_stats().in_progress == 200


def test_a_writer_killed_mid_transaction_leaves_the_database_consistent(store, make_video, spawn):
    video = make_video()
    holder = spawn("hold", store.url, video.id)
    assert holder.stdout.readline().strip() == "inside", holder.stderr.read()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)

    # Nothing of the open transaction is visible, and the database takes writes again.
    assert store.get_video(video.id).status == VideoStatus.QUEUED
    assert store.list_events(kind="ghost") == []
    assert store.get_setting("ghost") is None
    claimed = store.claim_video("w1", "cpu:0", 30.0, 0)
    assert claimed.id == video.id and claimed.worker_id == "w1"
    store.set_setting("ghost", 2)
    assert store.get_setting("ghost") == 2
    _check_integrity(store)


def test_a_writer_killed_in_a_loop_of_creates_loses_nothing_it_reported(store, tenant, spawn):
    writer = spawn("create", store.url, tenant.id)
    reported: list[str] = []
    while len(reported) < 30:
        line = writer.stdout.readline()
        assert line, writer.stderr.read()
        reported.append(line.strip())
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    # The writer ran on while we read: what it printed (after each commit) before the kill is still in the pipe.
    reported += [line.strip() for line in writer.stdout.read().splitlines() if line.strip()]
    stored, _ = store.list_videos(tenant.id, limit=1000, order="asc")
    ids = [video.id for video in stored]
    # Every create the writer saw commit is there, whole; at most the one in flight is (or is not) there too.
    assert ids[: len(reported)] == reported and len(ids) - len(reported) in (0, 1)
    for n, video in enumerate(stored):
        assert (video.prompt, video.seed, video.idempotency_key) == (f"clip {n}", n, f"key-{n}")
        assert video.policy == {"n": n, "padding": "x" * 2000}
    store.create_video(tenant.id, **REQUEST)  # not locked
    _check_integrity(store)


def _check_integrity(store) -> None:
    engine = sa.create_engine(store.url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if store.dialect == "sqlite":
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            orphans = conn.execute(
                sa.text("SELECT count(*) FROM videos v LEFT JOIN tenants t ON t.id = v.tenant_id WHERE t.id IS NULL")
            ).scalar()
            assert orphans == 0
    finally:
        engine.dispose()


def test_a_forked_child_gets_its_own_connections(store, tenant, make_video):
    import multiprocessing

    make_video(seed=1)  # the parent's pool now holds a connection
    child = multiprocessing.get_context("fork").Process(target=_child_creates, args=(store, tenant.id))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    page, _ = store.list_videos(tenant.id, order="asc")
    assert [video.seed for video in page] == [1, 2]  # and the parent's own connections still work


def _child_creates(store, tenant_id: str) -> None:
    store.create_video(tenant_id, **(REQUEST | {"seed": 2}))


def test_dropped_connections_are_replaced(store, tenant):
    if store.dialect != "postgresql":
        return  # SQLite has no server to drop them
    with store._engine.connect() as conn:  # the pooled connection the next call will get back
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    engine = sa.create_engine(store.url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:  # what a server restart or an idle-connection reaper does to it
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    engine.dispose()
    assert store.get_tenant(tenant.id) == tenant

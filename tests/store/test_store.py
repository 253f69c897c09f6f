"""The Store on both backends (SQLite file, PostgreSQL schema): tenants and keys, idempotency, the queue's leases and
fencing, deletion, pagination, verbatim strings, usage, jobs, and the governor's history."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
import time

import pytest
import sqlalchemy as sa
from tests.store.conftest import REQUEST

from garrison.core.fleet import Cost, JobStatus, VideoStatus
from garrison.store import CANCELLED, WORKER_LOST, Conflict, NotFound, Video

DONE = {
    "path": "/videos/v.mp4",
    "thumbnail_path": "/videos/v.webp",
    "seconds_wall": 1.5,
    "joules": 42.0,
    "energy_source": "estimate",
    "cost_usd": 0.001,
    "co2_g": 0.2,
    "flops": 8.4e10,
    "steps_used": 12,
    "native_size": "64x64",
    "scaled": False,
    "provenance": {"c2pa": "signed"},
}


def _raw(store, query: str, **params):
    """Read the database behind the Store's back, as an operator with psql would."""
    engine = sa.create_engine(store.url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(query), params).all()
    finally:
        engine.dispose()


# --- tenants ------------------------------------------------------------------------------------------------------


def test_tenant_create_authenticate_revoke(store):
    tenant, key = store.create_tenant("acme", videos_per_day=10, joules_per_day=5e4, requests_per_minute=60)
    assert key.startswith("gk-") and len(key) >= 40
    assert tenant.id.startswith("ten_") and tenant.name == "acme" and not tenant.admin
    assert (tenant.videos_per_day, tenant.joules_per_day, tenant.requests_per_minute) == (10, 5e4, 60)
    assert tenant.key_prefix == key[:8] and tenant.revoked_at is None
    assert store.authenticate(key) == tenant
    assert store.get_tenant(tenant.id) == tenant == store.tenant_by_name("acme")
    assert store.authenticate(key + "x") is None
    assert store.authenticate("not-a-key") is None
    assert store.authenticate("") is None

    revoked = store.revoke_tenant("acme")
    assert revoked.revoked_at is not None and revoked.revoked
    assert store.authenticate(key) is None
    assert store.revoke_tenant("acme").revoked_at == revoked.revoked_at  # idempotent
    assert store.list_tenants() == [revoked]


def test_key_is_stored_hashed_never_in_plaintext(store):
    _, key = store.create_tenant("acme", admin=True)
    rows = _raw(store, "SELECT * FROM tenants")
    assert len(rows) == 1
    stored = [str(value) for value in rows[0]]
    assert not any(key in value for value in stored)
    assert hashlib.sha256(key.encode()).hexdigest() in stored


def test_tenant_errors(store):
    store.create_tenant("acme")
    with pytest.raises(Conflict, match="exists already"):
        store.create_tenant("acme")
    with pytest.raises(ValueError, match="videos_per_day must be >= 0"):
        store.create_tenant("b", videos_per_day=-1)
    with pytest.raises(ValueError, match="joules_per_day must be >= 0"):
        store.create_tenant("b", joules_per_day=-0.5)
    with pytest.raises(ValueError, match="requests_per_minute must be an integer"):
        store.create_tenant("b", requests_per_minute=1.5)
    with pytest.raises(ValueError, match="tenant name is empty"):
        store.create_tenant("  ")
    with pytest.raises(NotFound):
        store.get_tenant("ten_missing")
    with pytest.raises(NotFound):
        store.tenant_by_name("nobody")
    with pytest.raises(NotFound):
        store.revoke_tenant("nobody")
    with pytest.raises(NotFound):
        store.set_quotas("nobody", videos_per_day=1)


def test_set_quotas_changes_only_what_is_given(store):
    store.create_tenant("acme", videos_per_day=10, joules_per_day=100.0)
    tenant = store.set_quotas("acme", joules_per_day=None, requests_per_minute=5)
    assert (tenant.videos_per_day, tenant.joules_per_day, tenant.requests_per_minute) == (10, None, 5)
    assert store.set_quotas("acme") == tenant
    with pytest.raises(ValueError, match="must be >= 0"):
        store.set_quotas("acme", videos_per_day=-3)
    assert store.tenant_by_name("acme") == tenant


# --- idempotency --------------------------------------------------------------------------------------------------


def test_same_idempotency_key_returns_the_same_video(store, tenant):
    first, created = store.create_video(tenant.id, **REQUEST, idempotency_key="retry-1")
    again, created_again = store.create_video(tenant.id, **REQUEST, idempotency_key="retry-1")
    assert created and not created_again and again == first
    other, _ = store.create_tenant("other")
    theirs, created_theirs = store.create_video(other.id, **REQUEST, idempotency_key="retry-1")
    assert created_theirs and theirs.id != first.id  # keys are per tenant
    assert _raw(store, "SELECT count(*) FROM videos")[0][0] == 2


def test_idempotency_key_with_other_parameters_is_a_conflict(store, tenant):
    store.create_video(tenant.id, **REQUEST, idempotency_key="k")
    with pytest.raises(Conflict, match="different steps, seed"):
        store.create_video(tenant.id, **(REQUEST | {"seed": 1, "steps": 3}), idempotency_key="k")


def test_idempotency_key_of_a_deleted_video_is_a_conflict(store, tenant):
    video, _ = store.create_video(tenant.id, **REQUEST, idempotency_key="k")
    store.delete_video(video.id, tenant.id)
    with pytest.raises(Conflict, match="since deleted"):
        store.create_video(tenant.id, **REQUEST, idempotency_key="k")


def test_idempotency_from_eight_threads_at_once_makes_one_row(store, tenant):
    barrier = threading.Barrier(8)
    results: list[tuple[Video, bool]] = []
    errors: list[BaseException] = []

    def create() -> None:
        barrier.wait()
        try:
            results.append(store.create_video(tenant.id, **REQUEST, idempotency_key="same"))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({video.id for video, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert _raw(store, "SELECT count(*) FROM videos")[0][0] == 1


# --- the queue: claims, leases, fencing ---------------------------------------------------------------------------


def test_claim_takes_the_oldest_queued_video(store, make_video):
    first, second = make_video(seed=1), make_video(seed=2)
    claimed = store.claim_video("w1", "cpu:0", 30.0, 2)
    assert claimed.id == first.id
    assert claimed.status == VideoStatus.IN_PROGRESS and claimed.attempts == 1 and claimed.quality_level == 2
    assert (claimed.worker_id, claimed.device_id) == ("w1", "cpu:0")
    assert claimed.started_at is not None and claimed.lease_expires_at == pytest.approx(claimed.started_at + 30.0)
    assert store.claim_video("w2", "cpu:1", 30.0, 0).id == second.id
    assert store.claim_video("w3", "cpu:2", 30.0, 0) is None


def test_claim_is_exclusive_across_threads(store, make_video):
    made = {make_video(seed=i).id for i in range(60)}
    claims: list[list[str]] = [[] for _ in range(6)]
    barrier = threading.Barrier(6)

    def claim(i: int) -> None:
        barrier.wait()
        while (video := store.claim_video(f"t{i}", "cpu:0", 60.0, 0)) is not None:
            claims[i].append(video.id)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [video_id for ids in claims for video_id in ids]
    assert sorted(every) == sorted(made)  # each exactly once


def test_full_life_of_a_video(store, make_video):
    video = make_video()
    store.claim_video("w1", "cpu:0", 30.0, 0)
    assert store.heartbeat(video.id, "w1", 40, 30.0)
    assert store.get_video(video.id).progress == 40
    assert store.complete_video(video.id, "w1", **DONE)
    done = store.get_video(video.id)
    assert done.status == VideoStatus.COMPLETED and done.progress == 100 and done.completed_at is not None
    assert {name: getattr(done, name) for name in DONE} == DONE
    assert done.lease_expires_at is None
    assert not store.heartbeat(video.id, "w1", 50, 30.0)  # done: the worker has nothing left to renew


def test_lease_expiry_requeues_then_fails_at_max_attempts(store, make_video):
    video = make_video()
    for attempt in (1, 2):
        claimed = store.claim_video(f"w{attempt}", "cpu:0", 0.01, 0)
        assert claimed.id == video.id and claimed.attempts == attempt
        assert store.recover_expired(now=time.time() + 5, max_attempts=3) == [(video.id, "requeued")]
        back = store.get_video(video.id)
        assert back.status == VideoStatus.QUEUED and back.worker_id is None and back.attempts == attempt
    store.claim_video("w3", "cpu:0", 0.01, 0)
    assert store.recover_expired(now=time.time() + 5, max_attempts=3) == [(video.id, "failed")]
    lost = store.get_video(video.id)
    assert lost.status == VideoStatus.FAILED and lost.error_code == WORKER_LOST and "3 attempts" in lost.error_message
    assert store.claim_video("w4", "cpu:0", 30.0, 0) is None
    kinds = [event.kind for event in store.list_events(subject_id=video.id)]
    assert kinds == ["video.requeued", "video.requeued", "video.worker_lost"]


def test_a_live_lease_is_not_recovered(store, make_video):
    video = make_video()
    store.claim_video("w1", "cpu:0", 60.0, 0)
    assert store.recover_expired() == []
    assert store.heartbeat(video.id, "w1", 10, 60.0)
    assert store.recover_expired(now=time.time() + 30) == []
    assert store.recover_expired(now=time.time() + 61) == [(video.id, "requeued")]


def test_fencing_a_stale_worker_cannot_heartbeat_or_complete_after_requeue(store, make_video):
    video = make_video()
    store.claim_video("stale", "cpu:0", 0.01, 0)
    store.recover_expired(now=time.time() + 5)
    assert not store.heartbeat(video.id, "stale", 90, 30.0)
    assert not store.complete_video(video.id, "stale", **DONE)
    assert not store.fail_video(video.id, "stale", "generation_error", "boom")
    assert store.get_video(video.id).status == VideoStatus.QUEUED

    successor = store.claim_video("fresh", "cpu:1", 30.0, 0)
    assert successor.id == video.id and successor.attempts == 2
    assert not store.heartbeat(video.id, "stale", 90, 30.0)
    assert not store.complete_video(video.id, "stale", **DONE)
    assert store.get_video(video.id).worker_id == "fresh"
    assert store.complete_video(video.id, "fresh", **(DONE | {"path": "/fresh.mp4"}))
    assert store.get_video(video.id).path == "/fresh.mp4"


def test_requeue_keeps_attempts_and_the_place_in_line(store, make_video):
    older, newer = make_video(seed=1), make_video(seed=2)
    store.claim_video("w1", "cpu:0", 30.0, 0)
    assert store.requeue_video(older.id, "cpu:0 reclaimed for training")
    assert not store.requeue_video(older.id, "again")  # queued now, nothing to requeue
    assert not store.heartbeat(older.id, "w1", 10, 30.0)
    again = store.claim_video("w2", "cpu:1", 30.0, 0)
    assert again.id == older.id and again.attempts == 2
    assert store.list_events(kind="video.requeued")[0].data["reason"] == "cpu:0 reclaimed for training"
    assert store.claim_video("w3", "cpu:2", 30.0, 0).id == newer.id


def test_fail_video_by_the_system_and_by_its_worker(store, make_video):
    refused, running = make_video(seed=1), make_video(seed=2)
    assert store.fail_video(refused.id, None, "content_policy_violation", "a real person")
    store.claim_video("w1", "cpu:0", 30.0, 0)
    assert not store.fail_video(running.id, "someone-else", "generation_error", "no")
    assert store.fail_video(running.id, "w1", "generation_error", "out of memory")
    failed = store.get_video(running.id)
    assert (failed.status, failed.error_code, failed.error_message) == ("failed", "generation_error", "out of memory")
    assert not store.fail_video(running.id, None, "x", "failed already")


def test_deleting_an_in_progress_video_cancels_it(store, tenant, make_video):
    video = make_video()
    store.claim_video("w1", "cpu:0", 30.0, 0)
    deleted = store.delete_video(video.id, tenant.id)
    assert deleted.deleted_at is not None
    assert deleted.status == VideoStatus.FAILED and deleted.error_code == CANCELLED
    assert not store.heartbeat(video.id, "w1", 50, 30.0)
    assert not store.complete_video(video.id, "w1", **DONE)
    assert store.recover_expired(now=time.time() + 100) == []
    with pytest.raises(NotFound):
        store.get_video(video.id)
    with pytest.raises(NotFound):
        store.delete_video(video.id, tenant.id)


def test_deleting_a_queued_video_takes_it_out_of_the_queue(store, tenant, make_video):
    video = make_video()
    store.delete_video(video.id, tenant.id)
    assert store.claim_video("w1", "cpu:0", 30.0, 0) is None
    assert store.queue_stats().queued == 0


def test_deleting_a_completed_video_keeps_its_result(store, tenant, make_video):
    video = make_video()
    store.claim_video("w1", "cpu:0", 30.0, 0)
    store.complete_video(video.id, "w1", **DONE)
    deleted = store.delete_video(video.id, None)
    assert deleted.status == VideoStatus.COMPLETED and deleted.path == DONE["path"]  # the caller removes the file


def test_videos_are_visible_to_their_tenant_only(store, tenant, make_video):
    video = make_video()
    other, _ = store.create_tenant("other")
    assert store.get_video(video.id, tenant.id) == video == store.get_video(video.id)
    with pytest.raises(NotFound):
        store.get_video(video.id, other.id)
    with pytest.raises(NotFound):
        store.delete_video(video.id, other.id)
    assert store.list_videos(other.id) == ([], False)


def test_create_video_keeps_estimate_and_policy(store, tenant):
    video, _ = store.create_video(
        tenant.id, **REQUEST, estimated_cost=Cost(2.5, 300.0, 8e10), policy={"decision": "allow", "score": 0.1}
    )
    again = store.get_video(video.id)
    assert again == video
    assert again.estimated_cost == Cost(2.5, 300.0, 8e10)
    assert again.policy == {"decision": "allow", "score": 0.1} and again.provenance == {}
    assert again.status == "queued" and again.progress == 0 and again.attempts == 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": "nul\x00byte"}, "NUL"),
        ({"seconds": 0}, "seconds must be >= 1"),
        ({"seconds": True}, "seconds must be an integer"),
        ({"size": "big"}, "WIDTHxHEIGHT"),
        ({"size": "0x64"}, "WIDTHxHEIGHT"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"guidance": -1.0}, "guidance must be >= 0"),
        ({"guidance": math.nan}, "guidance must be finite"),
        ({"seed": 2**64}, "seed must be <="),
        ({"seconds": 2**40}, "seconds must be <= 2147483647"),
        ({"idempotency_key": "k" * 256}, "the limit is 255"),
        ({"policy": {"x": object()}}, "policy must be JSON"),
        ({"policy": {"x": ["a\x00b"]}}, "policy contains a NUL"),
        ({"estimated_cost": (1.0, 2.0)}, "estimated_cost must be"),
    ],
)
def test_create_video_rejects_bad_input(store, tenant, override, message):
    with pytest.raises(ValueError, match=message):
        store.create_video(tenant.id, **(REQUEST | override))


def test_create_video_for_an_unknown_tenant(store):
    with pytest.raises(NotFound, match="no tenant"):
        store.create_video("ten_nobody", **REQUEST)


def test_worker_calls_reject_bad_input(store, make_video):
    video = make_video()
    store.claim_video("w1", "cpu:0", 30.0, 0)
    with pytest.raises(ValueError, match="progress must be <= 100"):
        store.heartbeat(video.id, "w1", 101, 30.0)
    with pytest.raises(ValueError, match="lease_s must be > 0"):
        store.heartbeat(video.id, "w1", 10, 0)
    with pytest.raises(ValueError, match="quality_level must be <= 5"):
        store.claim_video("w1", "cpu:0", 30.0, 6)
    with pytest.raises(ValueError, match="energy_source must be one of"):
        store.complete_video(video.id, "w1", **(DONE | {"energy_source": "guess"}))
    with pytest.raises(ValueError, match="joules must be finite"):
        store.complete_video(video.id, "w1", **(DONE | {"joules": math.inf}))
    with pytest.raises(ValueError, match="max_attempts must be >= 1"):
        store.recover_expired(max_attempts=0)
    assert store.get_video(video.id).status == VideoStatus.IN_PROGRESS  # nothing above changed it


# --- pagination ---------------------------------------------------------------------------------------------------


def _pages(store, tenant_id: str, order: str, limit: int) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page, has_more = store.list_videos(tenant_id, after=after, limit=limit, order=order)
        seen += [video.id for video in page]
        if not has_more:
            assert len(page) <= limit
            return seen
        assert len(page) == limit
        after = page[-1].id


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_pagination_has_no_duplicates_or_gaps_when_rows_share_a_created_at(store, tenant, make_video, order):
    made = [make_video(seed=i) for i in range(23)]
    # Give most rows one timestamp, as a burst of requests within a clock tick would.
    engine = sa.create_engine(store.url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE videos SET created_at = 1000.0 WHERE seed >= 3"))
        conn.execute(sa.text("UPDATE videos SET created_at = 999.0 + seed * 0.0 WHERE seed < 3"))
    engine.dispose()
    expected = sorted((store.get_video(v.id) for v in made), key=lambda v: (v.created_at, v.id))
    expected_ids = [v.id for v in expected]
    if order == "desc":
        expected_ids.reverse()
    for limit in (1, 4, 5, 23, 50):
        assert _pages(store, tenant.id, order, limit) == expected_ids


def test_pagination_defaults_and_deleted_rows(store, tenant, make_video):
    made = [make_video(seed=i) for i in range(5)]
    page, has_more = store.list_videos(tenant.id)
    assert [v.id for v in page] == [v.id for v in reversed(made)] and not has_more  # newest first
    store.delete_video(made[2].id, tenant.id)
    page, has_more = store.list_videos(tenant.id, limit=2, order="asc")
    assert [v.id for v in page] == [made[0].id, made[1].id] and has_more
    # The cursor may be a video deleted since the previous page was read.
    store.delete_video(made[1].id, tenant.id)
    page, has_more = store.list_videos(tenant.id, after=made[1].id, limit=2, order="asc")
    assert [v.id for v in page] == [made[3].id, made[4].id] and not has_more


def test_pagination_rejects_bad_arguments(store, tenant, make_video):
    make_video()
    other, _ = store.create_tenant("other")
    theirs, _ = store.create_video(other.id, **REQUEST)
    with pytest.raises(ValueError, match="limit must be >= 1"):
        store.list_videos(tenant.id, limit=0)
    with pytest.raises(ValueError, match="limit must be <= 1000"):
        store.list_videos(tenant.id, limit=1001)
    with pytest.raises(ValueError, match="order must be"):
        store.list_videos(tenant.id, order="sideways")
    with pytest.raises(ValueError, match="not one of this tenant's videos"):
        store.list_videos(tenant.id, after=theirs.id)
    with pytest.raises(ValueError, match="not one of this tenant's videos"):
        store.list_videos(tenant.id, after="video_nope")


# --- strings are data, never SQL ----------------------------------------------------------------------------------

NASTY = [
    "'; DROP TABLE videos; --",
    'Robert"); DELETE FROM tenants WHERE ("1"="1',
    "1' OR '1'='1",
    "%s %(x)s :name ? $1 \\x00 \\' \\\\",
    "ünïcödé 🎬 — 漢字 \u202e right-to-left",
    "line\nbreak\ttab\r",
    "\\u0000 is six characters here, not a NUL",
]


@pytest.mark.parametrize("nasty", NASTY)
def test_sql_in_every_string_field_is_stored_verbatim(store, nasty):
    tenant, key = store.create_tenant(nasty)
    assert store.authenticate(key).name == nasty
    video, _ = store.create_video(
        tenant.id, **(REQUEST | {"prompt": nasty, "model": nasty}), idempotency_key=nasty, policy={nasty: nasty}
    )
    again, created = store.create_video(
        tenant.id, **(REQUEST | {"prompt": nasty, "model": nasty}), idempotency_key=nasty
    )
    assert not created and again.id == video.id
    store.claim_video(nasty, nasty, 30.0, 0)
    assert store.heartbeat(video.id, nasty, 5, 30.0)
    done = DONE | {"path": nasty, "thumbnail_path": nasty, "native_size": nasty, "provenance": {nasty: [nasty]}}
    assert store.complete_video(video.id, nasty, **done)
    stored = store.get_video(video.id, tenant.id)
    assert (stored.prompt, stored.model, stored.idempotency_key, stored.worker_id, stored.device_id) == (nasty,) * 5
    assert (stored.path, stored.thumbnail_path, stored.native_size) == (nasty,) * 3
    assert stored.policy == {nasty: nasty} and stored.provenance == {nasty: [nasty]}

    job = store.create_job(nasty, command=[nasty, nasty], devices=1, tenant_id=tenant.id)
    job = store.update_job(job.id, error=nasty, devices_held=[nasty])
    assert (job.name, job.command, job.error, job.devices_held) == (nasty, [nasty, nasty], nasty, [nasty])
    store.record_decision(1, nasty, nasty, nasty, {nasty: nasty})
    store.record_sample(time.time(), 1.0, 2.0, {nasty: 1}, 0, nasty, {nasty: nasty})
    store.set_setting(nasty, nasty)
    store.record_event(nasty, nasty, {nasty: nasty})
    assert store.list_decisions()[-1].action == nasty and store.list_decisions()[-1].reading == {nasty: nasty}
    assert store.list_samples()[-1].gate == nasty
    assert store.get_setting(nasty) == nasty
    assert store.list_events(kind=nasty, subject_id=nasty)[-1].data == {nasty: nasty}
    assert store.tenant_by_name(nasty).id == tenant.id
    assert store.revoke_tenant(nasty).revoked
    # Every table is still there with its rows.
    assert _raw(store, "SELECT count(*) FROM videos")[0][0] == 1
    assert _raw(store, "SELECT count(*) FROM tenants")[0][0] == 1


# --- usage and queue statistics -----------------------------------------------------------------------------------


def test_tenant_usage_counts_videos_and_joules_since(store, tenant, make_video):
    before = time.time() - 1
    done, running, refused, cancelled, queued = (make_video(seed=i) for i in range(5))
    store.claim_video("w1", "cpu:0", 30.0, 0)
    store.complete_video(done.id, "w1", **(DONE | {"joules": 100.0}))
    store.claim_video("w1", "cpu:0", 30.0, 0)
    store.fail_video(refused.id, None, "content_policy_violation", "refused")
    store.delete_video(cancelled.id, tenant.id)
    other, _ = store.create_tenant("other")
    store.create_video(other.id, **REQUEST)

    usage = store.tenant_usage(tenant.id, before)
    # done, running, cancelled (the tenant's own choice) and queued count; the refusal does not.
    assert usage.videos == 4 and usage.joules == 100.0
    assert store.tenant_usage(tenant.id, time.time() + 10).videos == 0
    assert store.tenant_usage(other.id, before).videos == 1
    assert queued.id and running.id


def test_queue_stats(store, make_video):
    assert store.queue_stats().queued == 0 and store.queue_stats().oldest_queued_age_s is None
    first = make_video(seed=1)
    make_video(seed=2)
    make_video(seed=3)
    store.claim_video("w1", "cpu:0", 30.0, 0)
    store.complete_video(first.id, "w1", **(DONE | {"joules": 7.0}))
    store.claim_video("w1", "cpu:0", 30.0, 0)
    stats = store.queue_stats()
    assert (stats.queued, stats.in_progress, stats.completed_last_minute, stats.failed_last_minute) == (1, 1, 1, 0)
    assert stats.oldest_queued_age_s >= 0 and stats.joules_last_minute == 7.0


# --- training jobs ------------------------------------------------------------------------------------------------


def test_job_life(store, tenant):
    job = store.create_job("finetune", command=["garrison", "train", "--steps", "10"], devices=2, tenant_id=tenant.id)
    assert job.id.startswith("job_") and job.status == JobStatus.WAITING and job.devices_held == []
    assert job.devices_requested == 2 and job.steps_done == 0 and job.joules == 0.0
    started = time.time()
    job = store.update_job(
        job.id, status=JobStatus.RUNNING, started_at=started, devices_held=["gpu:0", "gpu:1"], pid=4242
    )
    assert (job.status, job.started_at, job.devices_held, job.pid) == ("running", started, ["gpu:0", "gpu:1"], 4242)
    job = store.update_job(job.id, steps_done=500, throughput=12.5, joules=9e5)
    assert store.get_job(job.id) == job
    assert store.list_jobs(status="running") == [job] and store.list_jobs(status="waiting") == []
    cancelled = store.cancel_job(job.id)
    assert cancelled.status == JobStatus.CANCELLED and cancelled.finished_at is not None
    assert store.cancel_job(job.id) == cancelled  # finished already: unchanged
    assert store.list_jobs() == [cancelled]


def test_job_errors(store):
    with pytest.raises(ValueError, match="command must be"):
        store.create_job("j", command=[], devices=1)
    with pytest.raises(ValueError, match="devices must be >= 1"):
        store.create_job("j", command=["x"], devices=0)
    with pytest.raises(NotFound, match="no tenant"):
        store.create_job("j", command=["x"], devices=1, tenant_id="ten_nobody")
    job = store.create_job("j", command=["x"], devices=1)
    with pytest.raises(ValueError, match="cannot set throttled"):
        store.update_job(job.id, throttled=True)
    with pytest.raises(ValueError, match="job status must be one of"):
        store.update_job(job.id, status="exploded")
    with pytest.raises(ValueError, match="pid must be <="):
        store.update_job(job.id, pid=2**40)
    assert store.update_job(job.id, steps_done=2**40).steps_done == 2**40  # a 64-bit counter
    with pytest.raises(ValueError, match="job status must be one of"):
        store.list_jobs(status="exploded")
    with pytest.raises(NotFound):
        store.update_job("job_nope", pid=1)
    with pytest.raises(NotFound):
        store.get_job("job_nope")
    with pytest.raises(NotFound):
        store.cancel_job("job_nope")


# --- governor history and state -----------------------------------------------------------------------------------


def test_decisions_round_trip_in_time_order(store):
    for tick in range(5):
        store.record_decision(tick, "set_quality", "serving", f"tick {tick}", {"power_w": 100.0 + tick, "ok": True})
    decisions = store.list_decisions()
    assert [d.tick for d in decisions] == [0, 1, 2, 3, 4]
    assert decisions[2].reading == {"power_w": 102.0, "ok": True} and decisions[2].target == "serving"
    assert [d.tick for d in store.list_decisions(limit=2)] == [3, 4]  # the latest two
    assert [d.tick for d in store.list_decisions(since=decisions[1].ts, limit=2)] == [2, 3]  # the next two


def test_a_reading_without_a_number_is_stored_as_null(store):
    store.record_decision(1, "alert", None, "no meter", {"power_w": math.nan, "per": [math.inf, 1.0]})
    assert store.list_decisions()[0].reading == {"power_w": None, "per": [None, 1.0]}
    with pytest.raises(ValueError, match="reading must be a dict"):
        store.record_decision(1, "alert", None, "x", [1, 2])


def test_samples_round_trip(store):
    for i in range(4):
        store.record_sample(1000.0 + i, 250.0 + i, 300.0, {"serving": 2, "training": 1}, i, "open", {"quality": 1})
    samples = store.list_samples()
    assert [s.ts for s in samples] == [1000.0, 1001.0, 1002.0, 1003.0]
    first = samples[0]
    assert (first.power_w, first.power_cap_w, first.queue_depth, first.gate) == (250.0, 300.0, 0, "open")
    assert first.allocation == {"serving": 2, "training": 1} and first.extra == {"quality": 1}
    assert [s.ts for s in store.list_samples(since=1001.0)] == [1002.0, 1003.0]
    assert [s.ts for s in store.list_samples(limit=1)] == [1003.0]
    with pytest.raises(ValueError, match="queue_depth must be >= 0"):
        store.record_sample(1.0, 1.0, 1.0, {}, -1, "open", {})


def test_settings_round_trip_json_values(store):
    assert store.get_setting("serving.quality_level") is None
    assert store.get_setting("serving.quality_level", 0) == 0
    values = {"serving.quality_level": 3, "admission.mode": "shed", "gate.state": {"open": False, "why": ["power"]},
              "gate.reason": None, "ratio": 0.25, "flag": True, "list": [1, "two", None]}  # fmt: skip
    for key, value in values.items():
        store.set_setting(key, value)
    for key, value in values.items():
        assert store.get_setting(key, "default") == value
    store.set_setting("serving.quality_level", 4)
    assert store.get_setting("serving.quality_level") == 4
    with pytest.raises(ValueError, match="must be JSON"):
        store.set_setting("bad", math.nan)
    with pytest.raises(ValueError, match="must be JSON"):
        store.set_setting("bad", {1, 2})


def test_events_round_trip_and_filter(store):
    store.record_event("job.started", "job_1", {"pid": 1})
    store.record_event("job.finished", "job_1", {"returncode": 0})
    store.record_event("alert", None, {"severity": "warning"})
    every = store.list_events()
    assert [e.kind for e in every] == ["job.started", "job.finished", "alert"]
    assert [e.kind for e in store.list_events(subject_id="job_1")] == ["job.started", "job.finished"]
    assert store.list_events(kind="alert")[0].data == {"severity": "warning"}
    assert store.list_events(kind="alert")[0].subject_id is None
    assert [e.kind for e in store.list_events(since=every[0].ts, limit=1)] == ["job.finished"]


def test_rows_are_frozen_plain_dataclasses(store, make_video):
    video = make_video()
    assert dataclasses.is_dataclass(video)
    with pytest.raises(dataclasses.FrozenInstanceError):
        video.status = "completed"  # type: ignore[misc]


def test_workers_reaper_and_deleter_at_once_never_deadlock_or_double_complete(store, tenant, make_video):
    made = [make_video(seed=i).id for i in range(80)]
    completions: dict[str, list[str]] = {video_id: [] for video_id in made}
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker(name: str) -> None:
        while (video := store.claim_video(name, "cpu:0", 0.05, 0)) is not None:
            if not store.heartbeat(video.id, name, 50, 0.05):
                continue
            if video.seed % 3 == 0 and video.attempts == 1:
                # Outlive the lease: if the reaper requeued the video meanwhile, this completion must be refused.
                time.sleep(0.1)
            if store.complete_video(video.id, name, **DONE):
                completions[video.id].append(name)

    def reaper() -> None:
        while not stop.wait(0.005):
            store.recover_expired(max_attempts=5)

    def deleter() -> None:
        for video_id in made[::7]:
            store.delete_video(video_id, tenant.id)

    def guard(target, *args) -> None:
        try:
            target(*args)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=guard, args=(worker, f"w{i}")) for i in range(4)]
    threads += [threading.Thread(target=guard, args=(reaper,)), threading.Thread(target=guard, args=(deleter,))]
    for thread in threads:
        thread.start()
    for thread in threads[:4] + threads[5:]:
        thread.join(timeout=120)
    # Whatever the reaper put back after the workers left: finish it here.
    stop.set()
    threads[4].join(timeout=60)
    assert errors == []
    for video_id in made:
        assert len(completions[video_id]) <= 1  # never completed twice
    engine = sa.create_engine(store.url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, status, deleted_at FROM videos")).all()
    engine.dispose()
    for video_id, status, deleted_at in rows:
        if completions[video_id]:
            assert status == "completed"
        elif deleted_at is not None:
            assert status in ("failed", "completed")
        else:
            assert status in ("queued", "in_progress", "failed")

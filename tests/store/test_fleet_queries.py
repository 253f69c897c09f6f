"""The store's cross-tenant queries the governor reads each tick."""

import time


def _video(store, tenant_id, n):
    video, _ = store.create_video(
        tenant_id, prompt=f"a red circle {n}", model="m", seconds=2, size="64x64", steps=4, guidance=4.0, seed=n
    )
    return video


def test_in_progress_held_by_and_recent_span_tenants(store):
    a, _ = store.create_tenant("a")
    b, _ = store.create_tenant("b")
    start = time.time()
    ids = [_video(store, a.id, 0).id, _video(store, b.id, 1).id, _video(store, b.id, 2).id]
    first = store.claim_video("w1", "core:0", 30, 0)
    second = store.claim_video("w2", "core:1", 30, 0)
    assert {v.id for v in store.videos_in_progress()} == {first.id, second.id}
    assert [v.id for v in store.videos_held_by("w1")] == [first.id]
    assert store.videos_held_by("nobody") == []
    assert store.requeue_video(first.id, "test")
    assert store.videos_held_by("w1") == []
    assert [v.id for v in store.recent_videos(start - 1)] == ids  # oldest first, both tenants
    assert store.recent_videos(time.time() + 60) == []


def _complete(store, video_id, worker):
    assert store.complete_video(
        video_id, worker, path="x.mp4", thumbnail_path=None, seconds_wall=1.0, joules=5.0, energy_source="estimate",
        cost_usd=None, co2_g=None, flops=1e9, steps_used=4, native_size="64x64", scaled=False, provenance={},
    )  # fmt: skip


def test_completed_videos_are_the_last_ones_completed_oldest_first(store):
    a, _ = store.create_tenant("a")
    b, _ = store.create_tenant("b")
    start = time.time()
    first, second, third = _video(store, a.id, 0), _video(store, b.id, 1), _video(store, a.id, 2)
    _video(store, b.id, 3)  # stays queued: never among the completed
    assert store.claim_video("w1", "core:0", 30, 0).id == first.id
    assert store.claim_video("w2", "core:1", 30, 0).id == second.id
    assert store.claim_video("w3", "core:2", 30, 0).id == third.id
    _complete(store, second.id, "w2")
    time.sleep(0.01)
    _complete(store, first.id, "w1")  # third stays in progress
    assert [v.id for v in store.completed_videos(start - 1)] == [second.id, first.id]  # by completion, both tenants
    assert [v.id for v in store.completed_videos(start - 1, limit=1)] == [first.id]  # the most recent
    assert store.completed_videos(time.time() + 60) == []

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

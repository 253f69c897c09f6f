"""API keys: a verified key is trusted for the cache's TTL without a store read, and never past it."""

import time

from fastapi.testclient import TestClient

from garrison.server.app import create_app


def test_a_cached_key_costs_no_store_read_and_a_revoked_one_expires(store, content_dir, monkeypatch):
    tenant, key = store.create_tenant("acme")
    video, _ = store.create_video(
        tenant.id, prompt="a red circle", model="m", seconds=2, size="64x64", steps=4, guidance=4.0, seed=0
    )
    reads = []
    authenticate = store.authenticate
    monkeypatch.setattr(store, "authenticate", lambda k: reads.append(k) or authenticate(k))
    app = create_app(store, content_dir=content_dir, key_cache_ttl_s=0.5)
    with TestClient(app) as client:
        auth = {"Authorization": f"Bearer {key}"}
        for _ in range(5):
            assert client.get(f"/v1/videos/{video.id}", headers=auth).status_code == 200
        assert reads == [key]  # read once, then served from the cache
        bad = {"Authorization": "Bearer not-a-key"}
        assert client.get(f"/v1/videos/{video.id}", headers=bad).status_code == 401
        assert client.get(f"/v1/videos/{video.id}", headers=bad).status_code == 401
        assert reads == [key, "not-a-key", "not-a-key"]  # unknown keys are never cached
        store.revoke_tenant("acme")
        time.sleep(0.6)
        assert client.get(f"/v1/videos/{video.id}", headers=auth).status_code == 401

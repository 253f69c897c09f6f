"""The /v1/videos routes in process (Starlette's TestClient over the real app and a real SQLite store): shapes the
SDK parses, validation, auth, quotas, idempotency, pagination, deletion and the content folder."""

from __future__ import annotations

import pytest

from garrison.core.fleet import VideoStatus
from garrison.governor.executors.serving_worker import content_path

PROMPT = "a red circle moving right on a black background"


def create(client, auth, **fields):
    return client.post("/v1/videos", headers=auth, json={"prompt": PROMPT, **fields})


def test_create_json_and_multipart_give_openai_video_objects(client, auth, store):
    r = create(client, auth, seconds="8", size="1280x720")
    assert r.status_code == 200, r.text
    video = r.json()
    assert video["object"] == "video" and video["status"] == "queued" and video["progress"] == 0
    assert video["seconds"] == "8" and video["size"] == "1280x720" and video["model"] == "sora-2"
    assert isinstance(video["created_at"], int) and video["error"] is None
    g = video["garrison"]
    assert g["native_size"] == "112x64" and g["scaled"] is True and g["model_used"] == "garrison-builtin-dit"
    form = client.post("/v1/videos", headers=auth, data={"prompt": PROMPT, "seconds": "2", "size": "64x64"})
    assert form.status_code == 200, form.text
    assert form.json()["garrison"]["native_size"] == "64x64" and form.json()["garrison"]["scaled"] is False
    row = store.get_video(form.json()["id"])
    assert row.seconds == 2 and row.size == "64x64" and row.status == VideoStatus.QUEUED
    assert row.policy["decision"] == "allow"


def test_sdk_defaults_and_numeric_seconds(client, auth):
    r = client.post("/v1/videos", headers=auth, json={"prompt": PROMPT, "seconds": 12})
    assert r.status_code == 200 and r.json()["seconds"] == "12"
    d = client.post("/v1/videos", headers=auth, json={"prompt": PROMPT}).json()
    assert d["seconds"] == "4" and d["size"] == "720x1280" and d["garrison"]["native_size"] == "64x112"


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"prompt": "x" * 1001}, "prompt", "1000"),
        ({"prompt": "   "}, "prompt", "blank"),
        ({}, "prompt", "required"),
        ({"prompt": PROMPT, "size": "1920x1080"}, "size", "unsupported size"),
        ({"prompt": PROMPT, "size": "64x64/../../x"}, "size", "unsupported size"),
        ({"prompt": PROMPT, "seconds": "four"}, "seconds", "whole number"),
        ({"prompt": PROMPT, "seconds": "5"}, "seconds", "one of 2, 4, 8, 12"),
        ({"prompt": PROMPT, "seconds": 4.5}, "seconds", "one of"),
        ({"prompt": PROMPT, "seconds": True}, "seconds", "one of"),
        ({"prompt": PROMPT, "model": "sora-3"}, "model", "unknown model"),
        ({"prompt": PROMPT, "steps": 0}, "steps", "greater than"),
        ({"prompt": PROMPT, "surprise": 1}, "surprise", "unknown parameter"),
        ({"prompt": "nul\x00byte"}, "prompt", "control characters"),
        ({"prompt": 42}, "prompt", "string"),
    ],
)
def test_bad_parameters_are_400_with_the_param_and_a_reason(client, auth, body, param, words):
    r = client.post("/v1/videos", headers=auth, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert words in err["message"]


@pytest.mark.parametrize(
    ("content", "ctype", "status", "code"),
    [
        (b'{"prompt": "a red', "application/json", 400, "invalid_json"),
        (b"[1, 2]", "application/json", 400, "invalid_json"),
        (b"\xff\xfe", "application/json", 400, "invalid_json"),
        (b"prompt=hi", "text/plain", 415, "unsupported_media_type"),
        (b"--x\r\nbroken", "multipart/form-data; boundary=x", 400, None),
    ],
)
def test_malformed_bodies(client, auth, content, ctype, status, code):
    r = client.post("/v1/videos", headers={**auth, "content-type": ctype}, content=content)
    assert r.status_code == status, r.text
    if code:
        assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]


def test_oversized_body_is_413_declared_or_streamed(client, auth):
    big = b'{"prompt": "' + b"a" * (2 << 20) + b'"}'
    r = client.post("/v1/videos", headers={**auth, "content-type": "application/json"}, content=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: the limit is enforced on the bytes as they arrive
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    r = client.post("/v1/videos", headers={**auth, "content-type": "application/json"}, content=chunks())
    assert r.status_code == 413 and r.json()["error"]["message"]


def test_input_reference_upload_is_refused_with_a_reason(client, auth):
    r = client.post(
        "/v1/videos",
        headers=auth,
        data={"prompt": PROMPT},
        files={"input_reference": ("a.png", b"\x89PNG", "image/png")},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_reference"


def test_policy_refusal_is_a_content_policy_error(client, auth, store):
    r = create(client, auth, prompt="Mickey Mouse dancing on a stage")
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "content_policy_violation" and err["category"] == "copyright" and err["reason"]
    assert store.queue_stats().queued == 0


def test_sql_in_every_string_field_is_data_or_a_4xx(client, auth, store):
    sql = "'; DROP TABLE videos; --"
    ok = create(client, auth, prompt=f"a red circle {sql}")
    assert ok.status_code == 200 and store.get_video(ok.json()["id"]).prompt == f"a red circle {sql}"
    for field in ("model", "seconds", "size"):
        r = create(client, auth, **{field: sql})
        assert r.status_code == 400 and r.json()["error"]["param"] == field
    for path in (
        f"/v1/videos/{sql}",
        f"/v1/videos/{sql}/content",
        f"/v1/videos?after={sql}",
        f"/v1/videos?order={sql}",
    ):
        r = client.get(path, headers=auth)
        assert 400 <= r.status_code < 500, (path, r.status_code)
    r = client.post("/v1/videos", headers={**auth, "Idempotency-Key": "x' OR '1'='1"}, json={"prompt": PROMPT})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_idempotency_key"
    r = client.post("/v1/videos", headers={"Authorization": "Bearer gk-' OR '1'='1"}, json={"prompt": PROMPT})
    assert r.status_code == 401
    assert store.queue_stats().queued == 1  # the tables are all still there


def test_auth_401_and_other_tenants_video_is_404(client, auth, store):
    vid = create(client, auth).json()["id"]
    assert client.get(f"/v1/videos/{vid}").status_code == 401
    assert client.get(f"/v1/videos/{vid}", headers={"Authorization": "Basic abc"}).status_code == 401
    r = client.get(f"/v1/videos/{vid}", headers={"Authorization": "Bearer gk-not-a-key"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    _, other = store.create_tenant("rival")
    theirs = {"Authorization": f"Bearer {other}"}
    for method, path in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
        r = client.request(method, f"/v1/videos/{vid}{path}", headers=theirs)
        assert r.status_code == 404, (method, path)
    assert client.get("/v1/videos", headers=theirs).json()["data"] == []
    store.revoke_tenant("acme")
    assert client.get(f"/v1/videos/{vid}", headers=auth).status_code == 401


def test_daily_video_quota_is_429_with_retry_after(client, store):
    _, key = store.create_tenant("small", videos_per_day=2)
    h = {"Authorization": f"Bearer {key}"}
    assert create(client, h).status_code == 200 and create(client, h).status_code == 200
    r = create(client, h)
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
    assert 1 <= int(r.headers["retry-after"]) <= 86_400
    assert client.get("/v1/videos", headers=h).status_code == 200  # reads are not counted against the quota


def test_rate_limit_is_429_with_retry_after(client, store):
    _, key = store.create_tenant("chatty", requests_per_minute=3)
    h = {"Authorization": f"Bearer {key}"}
    assert [client.get("/v1/videos", headers=h).status_code for _ in range(3)] == [200, 200, 200]
    r = client.get("/v1/videos", headers=h)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(r.headers["retry-after"]) <= 60


def test_idempotency_key_returns_the_same_video_and_conflicts_on_other_params(client, auth, store):
    h = {**auth, "Idempotency-Key": "order-42"}
    first = client.post("/v1/videos", headers=h, json={"prompt": PROMPT})
    again = client.post("/v1/videos", headers=h, json={"prompt": PROMPT})
    assert first.status_code == again.status_code == 200 and first.json()["id"] == again.json()["id"]
    assert again.headers.get("idempotent-replayed") == "true"
    other = client.post("/v1/videos", headers=h, json={"prompt": PROMPT, "seconds": "8"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    assert store.queue_stats().queued == 1


def test_list_paginates_with_a_cursor_in_both_orders(client, auth):
    ids = [create(client, auth, seed=i).json()["id"] for i in range(5)]
    seen, after = [], None
    while True:
        page = client.get("/v1/videos", headers=auth, params={"limit": 2, **({"after": after} if after else {})}).json()
        assert page["object"] == "list" and len(page["data"]) <= 2
        seen += [v["id"] for v in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids[::-1]
    asc = client.get("/v1/videos", headers=auth, params={"order": "asc", "limit": 100}).json()
    assert [v["id"] for v in asc["data"]] == ids and asc["first_id"] == ids[0] and asc["has_more"] is False
    for bad in ({"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"order": "sideways"}, {"after": "video_" + "0" * 32}):
        r = client.get("/v1/videos", headers=auth, params=bad)
        assert r.status_code == 400 and r.json()["error"]["message"], bad


def test_retrieve_tells_the_sdk_when_to_poll_again(client, auth):
    vid = create(client, auth).json()["id"]
    r = client.get(f"/v1/videos/{vid}", headers=auth)
    assert r.status_code == 200 and r.json()["id"] == vid
    assert int(r.headers["openai-poll-after-ms"]) > 0


def test_delete_cancels_a_queued_video_and_removes_its_files(client, auth, store, content_dir):
    vid = create(client, auth).json()["id"]
    for variant in ("video", "thumbnail", "spritesheet"):
        content_path(content_dir, vid, variant).write_bytes(b"x")
    r = client.delete(f"/v1/videos/{vid}", headers=auth)
    assert r.status_code == 200 and r.json() == {"id": vid, "object": "video.deleted", "deleted": True}
    assert list(content_dir.iterdir()) == []
    assert client.get(f"/v1/videos/{vid}", headers=auth).status_code == 404
    assert client.delete(f"/v1/videos/{vid}", headers=auth).status_code == 404
    assert store.claim_video("w", "cpu:0", 10, 0) is None  # no worker can pick it up any more


def test_content_is_409_until_completed_and_ids_cannot_escape(client, auth, content_dir, tmp_path):
    vid = create(client, auth).json()["id"]
    r = client.get(f"/v1/videos/{vid}/content", headers=auth)
    assert r.status_code == 409 and r.json()["error"]["code"] == "video_not_ready"
    (tmp_path / "secret.mp4").write_bytes(b"TOP-SECRET-BYTES")
    for crafted in ("..%2Fsecret", "video_..%2F..%2Fsecret", "%2E%2E", "video_" + "a" * 31 + "%00", "..", "video_ABC"):
        for suffix in ("", "/content", "/content?variant=thumbnail"):
            r = client.get(f"/v1/videos/{crafted}{suffix}", headers=auth)
            assert 400 <= r.status_code < 500, (crafted, suffix, r.status_code)
            assert b"TOP-SECRET-BYTES" not in r.content
    r = client.get(f"/v1/videos/{vid}/content", headers=auth, params={"variant": "../../secret"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "variant"


def test_unknown_routes_and_methods_use_the_error_object(client, auth):
    r = client.get("/v1/nothing", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.put("/v1/videos", headers=auth, json={})
    assert r.status_code == 405 and r.json()["error"]["message"]


def test_cors_is_off_unless_configured(store, content_dir):
    from fastapi.testclient import TestClient

    from garrison.server.app import create_app

    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(store, content_dir=content_dir)) as c:
        r = c.options("/v1/videos", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
        assert (
            "access-control-allow-origin" not in c.get("/healthz", headers={"Origin": "https://evil.example"}).headers
        )
    with TestClient(create_app(store, content_dir=content_dir, cors_origins=["https://ops.example"])) as c:
        r = c.options("/v1/videos", headers={**preflight, "Origin": "https://ops.example"})
        assert r.headers["access-control-allow-origin"] == "https://ops.example"

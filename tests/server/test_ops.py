"""Operations routes in process over a real store: /v1/fleet, /metrics, /v1/jobs, /v1/verify, admission against
what the governor wrote, and the structured log format."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest
from fastapi.testclient import TestClient

from garrison.server.app import create_app
from garrison.server.logs import JsonFormatter

PROMPT = "a red circle moving right on a black background"


@pytest.fixture
def admin(store):
    return {"Authorization": f"Bearer {store.create_tenant('ops', admin=True)[1]}"}


def complete_one(store, tenant_id, seconds_wall=2.0, joules=20.0, flops=4e11):
    video, _ = store.create_video(
        tenant_id, prompt=PROMPT, model="sora-2", seconds=4, size="112x64", steps=12, guidance=4.0, seed=0
    )
    store.claim_video("w", "cpu:0", 30, 0)
    assert store.complete_video(
        video.id, "w", path="x.mp4", thumbnail_path=None, seconds_wall=seconds_wall, joules=joules,
        energy_source="estimate", cost_usd=1e-6, co2_g=0.01, flops=flops, steps_used=12, native_size="112x64",
        scaled=False, provenance={},
    )  # fmt: skip
    return video.id


def test_fleet_says_offline_until_the_governor_reports(client, auth, store):
    fleet = client.get("/v1/fleet", headers=auth).json()
    assert fleet["governor"] == "offline" and fleet["gate"] == {
        "state": "offline",
        "reason": "the governor has not reported",
    }
    assert fleet["devices"] == [] and fleet["power"]["power_w"] is None
    store.record_sample(time.time(), 180.0, 250.0, {"serving": 1, "training": 1}, 3, "online", {})
    store.set_setting("gate.state", "degraded")
    store.set_setting("gate.reason", "SLO attainment 0.80 under 0.95")
    store.set_setting("fleet.devices", [{"id": "core:0", "assignment": "serving", "healthy": True}])
    store.record_decision(7, "set_quality", "serving", "power over cap", {"power_w": 260})
    fleet = client.get("/v1/fleet", headers=auth).json()
    assert (
        fleet["governor"] == "reporting" and fleet["gate"]["state"] == "degraded" and "SLO" in fleet["gate"]["reason"]
    )
    assert fleet["power"]["power_w"] == 180.0 and fleet["power"]["headroom_w"] == 70.0
    assert fleet["devices"][0]["id"] == "core:0" and fleet["decisions"][0]["action"] == "set_quality"
    assert fleet["serving"]["allocation"] == {"serving": 1, "training": 1}
    assert client.get("/v1/fleet").status_code == 401


def test_metrics_expose_queue_latency_power_and_gate(client, auth, store):
    client.post("/v1/videos", headers=auth, json={"prompt": PROMPT})
    client.get("/v1/videos/video_" + "0" * 32, headers=auth)
    text = client.get("/metrics").text
    assert "garrison_queue_depth 1.0" in text and 'garrison_gate_state{state="offline"} 1.0' in text
    assert 'garrison_http_request_duration_seconds_count{method="POST",route="/v1/videos",status="200"} 1.0' in text
    assert 'route="/v1/videos/{video_id}",status="404"' in text  # by template: ids never become labels
    assert "garrison_fleet_power_watts" not in text  # no governor sample: absent, not zero
    store.record_sample(time.time(), 180.0, 250.0, {}, 0, "online", {})
    store.set_setting("gate.state", "online")
    text = client.get("/metrics").text
    assert "garrison_fleet_power_watts 180.0" in text and "garrison_fleet_power_cap_watts 250.0" in text
    assert 'garrison_gate_state{state="online"} 1.0' in text and "garrison_governor_reporting 1.0" in text


def test_jobs_admin_only_submit_list_cancel(client, auth, admin, store):
    body = {"name": "finetune", "command": ["python", "-c", "print(1)"], "devices": 2}
    assert client.post("/v1/jobs", headers=auth, json=body).status_code == 403
    job = client.post("/v1/jobs", headers=admin, json=body).json()
    assert job["object"] == "training.job" and job["status"] == "waiting" and job["devices_requested"] == 2
    preset = client.post("/v1/jobs", headers=admin, json={"name": "builtin", "preset": "train", "steps": 50}).json()
    assert preset["command"][1:5] == ["-m", "garrison.cli.main", "train", "--steps"] and "50" in preset["command"]
    assert {j["id"] for j in client.get("/v1/jobs", headers=admin).json()["data"]} == {job["id"], preset["id"]}
    assert client.get(f"/v1/jobs/{job['id']}", headers=admin).json()["name"] == "finetune"
    assert client.delete(f"/v1/jobs/{job['id']}", headers=admin).json()["status"] == "cancelled"
    assert [j["id"] for j in client.get("/v1/jobs?status=cancelled", headers=admin).json()["data"]] == [job["id"]]
    for bad in (
        {"name": "x"},
        {"name": "x", "command": ["a"], "preset": "train"},
        {"name": "x", "command": []},
        {"name": "x", "command": ["a"], "devices": 0},
        {"name": "x", "command": ["a"], "steps": 5},
        {"name": "x\x00", "command": ["a"]},
        {"name": "x", "preset": "rm -rf /"},
    ):
        r = client.post("/v1/jobs", headers=admin, json=bad)
        assert r.status_code == 400 and r.json()["error"]["message"], bad
    assert client.get("/v1/jobs/job_" + "0" * 32, headers=admin).status_code == 404
    assert client.get("/v1/jobs/../../etc", headers=admin).status_code in (400, 404)
    assert client.get("/v1/jobs?status=bogus", headers=admin).status_code == 400


def test_verify_answers_like_the_cli(client, auth, pipeline, content_dir, cpu_peak_cache):
    from garrison.core.types import VideoSpec
    from garrison.energy.meters import get_meter
    from garrison.governor.executors.serving_worker import render_signed_clip
    from garrison.hardware.devices import cpu_device

    cpu_peak_cache(fp32_flops=50e9, bf16_flops=120e9)
    spec = VideoSpec(PROMPT, seconds=2, width=64, height=64, steps=2)
    clip = render_signed_clip(pipeline, spec, get_meter(), cpu_device(), content_dir, "video_" + "1" * 32)
    r = client.post("/v1/verify", headers=auth, files={"file": ("clip.mp4", clip.tmp_path.read_bytes(), "video/mp4")})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["c2pa"] == "trusted" and result["registry"]["request_id"] == "video_" + "1" * 32
    assert result["file"] == "clip.mp4"
    junk = client.post("/v1/verify", headers=auth, files={"file": ("x.mp4", b"not a video", "video/mp4")}).json()
    assert junk["c2pa"] == "absent" and "error" in junk
    empty = client.post("/v1/verify", headers=auth, files={"file": ("x.mp4", b"", "video/mp4")})
    assert empty.status_code == 400
    assert client.post("/v1/verify", headers=auth).status_code == 400


def test_admission_follows_what_the_governor_wrote(client, auth, store):
    store.set_setting("fleet.devices", [{"id": "core:0", "assignment": "training", "healthy": True}])
    app_client = TestClient(create_app(store, content_dir=client.app.state.content_dir), raise_server_exceptions=False)
    r = app_client.post("/v1/videos", headers=auth, json={"prompt": PROMPT})
    assert r.status_code == 429 and r.json()["error"]["code"] == "no_capacity" and int(r.headers["retry-after"]) >= 1
    store.set_setting("fleet.devices", [{"id": "core:0", "assignment": "serving", "healthy": True}])
    store.set_setting("admission.mode", "shed")
    app_client = TestClient(create_app(store, content_dir=client.app.state.content_dir), raise_server_exceptions=False)
    r = app_client.post("/v1/videos", headers=auth, json={"prompt": PROMPT})
    assert r.status_code == 429 and r.json()["error"]["code"] == "fleet_overloaded" and "power cap" in r.text
    store.set_setting("admission.mode", "open")
    app_client = TestClient(create_app(store, content_dir=client.app.state.content_dir), raise_server_exceptions=False)
    assert app_client.post("/v1/videos", headers=auth, json={"prompt": PROMPT}).status_code == 200


def test_cost_estimate_comes_from_measured_videos(client, auth, store):
    first = client.post("/v1/videos", headers=auth, json={"prompt": PROMPT}).json()
    assert first["garrison"]["estimated"] == {"device_s": None, "joules": None}  # nothing measured yet
    tenant = store.authenticate(auth["Authorization"].split()[1])
    store.delete_video(first["id"], tenant.id)
    from garrison.server.admission import estimate_flops

    # the measured video: 4 s 112x64 in 2 s and 20 J, with the shipped model's own FLOPs for it
    complete_one(store, tenant.id, flops=estimate_flops(PROMPT, 4, "112x64", 12, 4.0, 0))
    app_client = TestClient(create_app(store, content_dir=client.app.state.content_dir), raise_server_exceptions=False)
    est = app_client.post("/v1/videos", headers=auth, json={"prompt": PROMPT, "seconds": "8"}).json()["garrison"]
    assert est["estimated"]["device_s"] > 2.0 and est["estimated"]["joules"] > 20.0  # twice the clip, more work


def test_joules_quota(client, store):
    tenant, key = store.create_tenant("frugal", joules_per_day=10.0)
    complete_one(store, tenant.id, joules=25.0)
    r = client.post("/v1/videos", headers={"Authorization": f"Bearer {key}"}, json={"prompt": PROMPT})
    assert (
        r.status_code == 429
        and r.json()["error"]["code"] == "insufficient_quota"
        and "J" in r.json()["error"]["message"]
    )


def test_json_log_lines():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("garrison.test.jsonlog")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.info("request", extra={"fields": {"status": 200, "route": "/v1/videos"}})
    line = json.loads(stream.getvalue())
    assert line["msg"] == "request" and line["status"] == 200 and line["level"] == "info" and line["time"].endswith("Z")

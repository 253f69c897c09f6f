"""The serving worker over a real SQLite store: in process (run_worker, ServingWorker) and as real processes that
are SIGKILLed or SIGTERMed mid-generation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from garrison.core.fleet import VideoStatus
from garrison.core.types import VideoSpec
from garrison.governor.executors.serving_worker import ServingWorker, content_path, run_worker, rung
from garrison.store import open_store
from garrison.video.pipelines.builtin import render_size

PROMPT = "a red circle moving right on a black background"


@pytest.fixture
def store_url(tmp_path):
    return f"sqlite:///{tmp_path / 'g.db'}"


@pytest.fixture
def store(store_url, cpu_peak_cache):
    cpu_peak_cache(fp32_flops=50e9, bf16_flops=120e9)  # energy_fields' limit figures without measuring the CPU
    db = open_store(store_url)
    yield db
    db.close()


@pytest.fixture
def tenant_id(store):
    return store.create_tenant("acme")[0].id


@pytest.fixture
def content_dir(tmp_path):
    return tmp_path / "content"


def queue(store, tenant_id, seconds=2, size="64x64", steps=2, prompt=PROMPT):
    video, _ = store.create_video(
        tenant_id, prompt=prompt, model="sora-2", seconds=seconds, size=size, steps=steps, guidance=4.0, seed=0
    )
    return video.id


def wait_for(predicate, timeout_s=120.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def worker_process(store_url, content_dir, worker_id, log_path, *extra):
    log = open(log_path, "ab")  # noqa: SIM115 - the process owns it
    return subprocess.Popen(
        [sys.executable, "-m", "garrison.governor.executors.serving_worker", "--store", store_url,
         "--worker-id", worker_id, "--device", "cpu:0", "--content-dir", str(content_dir), *extra],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
    )  # fmt: skip


def test_rung_is_clamped_to_the_ladder():
    assert rung(None).level == 0 and rung("3").level == 3 and rung(99).level == 5 and rung(-2).level == 0


def test_completes_at_the_quality_level_the_governor_set(store, store_url, tenant_id, content_dir):
    store.set_setting("serving.quality_level", 5)  # 4 steps at half the native size
    vid = queue(store, tenant_id, size="112x64", steps=12)
    assert run_worker(store_url, "w1", "cpu:0", content_dir, max_videos=1, poll_s=0.05) == 1
    video = store.get_video(vid)
    assert video.status == VideoStatus.COMPLETED and video.progress == 100 and video.attempts == 1
    half = render_size(VideoSpec("x", width=112, height=64, native_scale=0.5))[0]  # whole patches of the shipped model
    assert video.quality_level == 5 and video.steps_used == 4 and video.native_size == f"{half[0]}x{half[1]}"
    assert video.scaled and half[0] < 112
    assert video.joules > 0 and video.energy_source in ("nvml", "rapl", "estimate") and video.flops > 0
    assert video.provenance["c2pa"] == "signed" and video.provenance["request_id"] == vid
    assert video.path == str(content_path(content_dir, vid)) and video.device_id == "cpu:0"
    names = sorted(p.name for p in content_dir.iterdir())
    assert names == [f"{vid}.mp4", f"{vid}.spritesheet.jpg", f"{vid}.thumbnail.jpg"]  # no temporary file left


def test_a_bad_request_fails_alone_and_the_worker_goes_on(store, store_url, tenant_id, content_dir):
    bad = queue(store, tenant_id, size="100x100")  # the store accepts any WxH; the model renders three
    good = queue(store, tenant_id)
    assert run_worker(store_url, "w1", "cpu:0", content_dir, max_videos=1, poll_s=0.05) == 1
    failed = store.get_video(bad)
    assert failed.status == VideoStatus.FAILED and failed.error_code == "invalid_request"
    assert "100x100" in failed.error_message
    assert store.get_video(good).status == VideoStatus.COMPLETED


def test_deleting_a_video_mid_generation_stops_it_and_leaves_no_file(store, tenant_id, content_dir, pipeline):
    vid = queue(store, tenant_id, seconds=8, size="112x64", steps=40)
    content_dir.mkdir()
    worker = ServingWorker(store, "w1", "cpu:0", content_dir, pipeline, lease_s=3)
    video = store.claim_video("w1", "cpu:0", 3, 0)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("done", worker.process(video, rung(0))))
    thread.start()
    wait_for(lambda: store.get_video(vid).progress > 0, what="progress")
    store.delete_video(vid, tenant_id)
    thread.join(120)
    assert result["done"] is False
    assert list(content_dir.iterdir()) == []
    assert store.recover_expired(now=time.time() + 60) == []  # nothing left to recover: it was cancelled


def test_a_drained_worker_claims_nothing(store, store_url, tenant_id, content_dir):
    store.set_setting("worker.w1.drain", True)
    vid = queue(store, tenant_id)
    stop = threading.Event()
    done = {}
    thread = threading.Thread(
        target=lambda: done.setdefault("n", run_worker(store_url, "w1", "cpu:0", content_dir, stop=stop, poll_s=0.05))
    )
    thread.start()
    time.sleep(1.0)  # the worker is up and polling (the pipeline loads first, so this may even be shorter)
    stop.set()
    thread.join(60)
    assert done["n"] == 0 and store.get_video(vid).status == VideoStatus.QUEUED


def test_a_killed_worker_loses_nothing_and_nothing_completes_twice(store, store_url, tenant_id, content_dir, tmp_path):
    vid = queue(store, tenant_id, seconds=4, size="112x64", steps=60)
    victim = worker_process(store_url, content_dir, "victim", tmp_path / "victim.log", "--lease-s", "2")
    try:
        wait_for(lambda: store.get_video(vid).progress > 0, what="the victim to start generating")
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert store.get_video(vid).status == VideoStatus.IN_PROGRESS  # held by a dead worker until its lease lapses
    store.set_setting("serving.quality_level", 3)  # the survivor renders at 4 steps: the test need not wait for 60
    assert run_worker(store_url, "survivor", "cpu:0", content_dir, max_videos=1, lease_s=2, poll_s=0.05) == 1
    video = store.get_video(vid)
    assert video.status == VideoStatus.COMPLETED and video.worker_id == "survivor" and video.attempts == 2
    assert video.steps_used == 4 and video.quality_level == 3
    kinds = [e.kind for e in store.list_events(subject_id=vid)]
    assert kinds.count("video.requeued") == 1 and "video.worker_lost" not in kinds
    assert store.complete_video(
        vid, "victim", path="x", thumbnail_path=None, seconds_wall=1.0, joules=1.0, energy_source="estimate",
        cost_usd=None, co2_g=None, flops=1.0, steps_used=1, native_size="112x64", scaled=False, provenance={},
    ) is False  # fmt: skip


def test_sigterm_finishes_the_video_in_hand_then_exits(store, store_url, tenant_id, content_dir, tmp_path):
    vid = queue(store, tenant_id, seconds=4, size="112x64", steps=12)
    proc = worker_process(store_url, content_dir, "w1", tmp_path / "w.log")
    wait_for(lambda: store.get_video(vid).status == VideoStatus.IN_PROGRESS, what="the claim")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 0
    assert store.get_video(vid).status == VideoStatus.COMPLETED


def test_a_second_sigterm_gives_the_video_back(store, store_url, tenant_id, content_dir, tmp_path):
    vid = queue(store, tenant_id, seconds=8, size="112x64", steps=60)
    proc = worker_process(store_url, content_dir, "w1", tmp_path / "w.log")
    wait_for(lambda: store.get_video(vid).progress > 0, what="progress")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 0
    video = store.get_video(vid)
    assert video.status == VideoStatus.QUEUED and video.worker_id is None and video.attempts == 1
    assert not content_path(content_dir, vid).exists()


def test_a_worker_on_a_core_slot_meters_that_core_alone(store, tenant_id, content_dir, pipeline):
    from garrison.hardware.cpu import CLOCK_TICKS_PER_S, CpuPowerModel

    content_dir.mkdir()
    whole = ServingWorker(store, "w0", "cpu:0", content_dir, pipeline)
    assert whole.meter.info()["busy_time_scope"] == "machine" and whole.device.id == "cpu:0"
    slot = ServingWorker(store, "w1", "core:0", content_dir, pipeline, lease_s=10)
    info = slot.meter.info()
    assert info["busy_time_scope"] == "cores 0" and info["cores"] == 1 and slot.meter.device_ids == ["core:0"]
    assert slot.device.id == "core:0" and slot.device.kind == "cpu-core"
    vid = queue(store, tenant_id)
    assert slot.process(store.claim_video("w1", "core:0", 10, 0), rung(0))
    video = store.get_video(vid)
    assert video.provenance["energy"]["chip"] == "cpu-core"  # the limit figures are one core's
    assert video.provenance["energy"]["meter_scope"] == "cores 0"
    # One core's energy over the generation: between its idle and its active watts, whatever else the machine ran
    # (the whole-machine meter would read up to 2 x 5.6 W on this 2-core machine).
    p = CpuPowerModel.from_env()
    tick_j = 2 * (p.active_w_per_core - p.idle_w_per_core) / CLOCK_TICKS_PER_S
    assert 0.9 * p.idle_w_per_core * video.seconds_wall <= video.joules
    assert video.joules <= p.active_w_per_core * (video.seconds_wall + 0.05) + tick_j

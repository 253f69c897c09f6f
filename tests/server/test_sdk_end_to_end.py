"""The official `openai` SDK against a running garrison: a real server process and a real worker process over a
SQLite store, on the built-in model. Only `base_url` differs from code written for OpenAI's Videos API."""

from __future__ import annotations

import io

import av
import openai
import pytest
from PIL import Image

from garrison.shield.verify import verify_file

from .conftest import start_worker, stop

PROMPT = "a red circle moving right on a black background"


@pytest.fixture
def store_url(tmp_path):
    # The SDK path on SQLite only: the routes' store calls run on both backends in test_videos and test_ops, and
    # two generating workers a backend would double the slowest test of the suite.
    return f"sqlite:///{tmp_path / 'garrison.db'}"


@pytest.fixture
def sdk(live_server, api_key):
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0, timeout=60)


def test_create_retrieve_poll_list_download_delete(sdk, live_server, store_url, content_dir, tmp_path, cpu_peak_cache):
    cpu_peak_cache(fp32_flops=50e9, bf16_flops=120e9)  # the worker's efficiency figures, without measuring the CPU
    worker = start_worker(store_url, content_dir, "w1", tmp_path / "worker.log", "--lease-s", "20")
    try:
        queued = sdk.videos.create(  # garrison's own knob through the SDK's extra_body: a cheaper clip
            prompt="a yellow square sliding left on a navy backdrop",
            seconds="4",
            size="720x1280",
            extra_body={"steps": 4},
        )
        assert queued.status in ("queued", "in_progress") and queued.seconds == "4" and queued.size == "720x1280"
        assert sdk.videos.retrieve(queued.id).id == queued.id

        # A clip whose watermark the shield recovers reliably (its bit accuracy depends on the content).
        done = sdk.videos.create_and_poll(
            prompt=PROMPT, seconds="4", size="1280x720", extra_body={"seed": 3, "steps": 6}
        )
        assert done.status == "completed", (done.status, done.error, (tmp_path / "worker.log").read_text()[-3000:])
        assert done.progress == 100 and done.completed_at >= done.created_at and done.error is None
        facts = done.model_extra["garrison"]
        assert facts["native_size"] == "112x64" and facts["scaled"] is True and facts["steps_used"] == 6
        assert facts["joules"] > 0 and facts["energy_source"] in ("nvml", "rapl", "estimate")
        assert facts["seed"] == 3 and facts["device_id"] == "cpu:0" and facts["provenance"]["c2pa"] == "signed"

        video_path = tmp_path / "download.mp4"
        sdk.videos.download_content(done.id).write_to_file(video_path)
        with av.open(str(video_path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (1280, 720)
            assert sum(1 for _ in container.decode(stream)) == 32  # 4 s at 8 fps
        verdict = verify_file(video_path)
        assert verdict["c2pa"] == "trusted" and verdict["watermark"]["detected"], verdict["watermark"]
        assert verdict["registry"]["match"] and verdict["registry"]["request_id"] == done.id

        thumbnail = sdk.videos.download_content(done.id, variant="thumbnail").content
        assert Image.open(io.BytesIO(thumbnail)).size == (1280, 720)
        sheet = Image.open(io.BytesIO(sdk.videos.download_content(done.id, variant="spritesheet").content))
        assert sheet.format == "JPEG"

        first = sdk.videos.poll(queued.id)
        assert first.status == "completed" and first.model_extra["garrison"]["steps_used"] == 4
        ids = [v.id for v in sdk.videos.list(limit=1)]  # one a page: the SDK follows the cursor
        assert ids == [done.id, queued.id]

        deleted = sdk.videos.delete(queued.id)
        assert deleted.deleted and deleted.id == queued.id and deleted.object == "video.deleted"
        with pytest.raises(openai.NotFoundError):
            sdk.videos.retrieve(queued.id)
        assert [v.id for v in sdk.videos.list()] == [done.id]
        assert not any(p.name.startswith(queued.id) for p in content_dir.iterdir())
    finally:
        assert stop(worker) == 0  # SIGTERM: an idle worker exits cleanly


def test_sdk_errors_map_to_its_exceptions(sdk, live_server, store):
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.videos.create(prompt=PROMPT, size="1920x1080")
    assert "size" in bad.value.message and bad.value.body["param"] == "size"
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.videos.create(prompt="Mickey Mouse waving at the crowd")
    assert refused.value.code == "content_policy_violation"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live_server}/v1", api_key="gk-wrong", max_retries=0).videos.list()
    _, key = store.create_tenant("one-a-day", videos_per_day=1)
    limited = openai.OpenAI(base_url=f"{live_server}/v1", api_key=key, max_retries=0)
    limited.videos.create(prompt=PROMPT)
    with pytest.raises(openai.RateLimitError) as quota:
        limited.videos.create(prompt=PROMPT)
    assert int(quota.value.response.headers["retry-after"]) >= 1
    other = limited.videos.list().data[0].id
    with pytest.raises(openai.NotFoundError):
        sdk.videos.retrieve(other)  # another tenant's video

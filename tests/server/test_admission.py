"""Admission's cost estimate: token counts as the text encoder counts them, and calibration on completed videos."""

import time

from garrison.server.admission import Admission, token_count
from garrison.shield.policy import load_eval_set


def test_token_count_is_the_text_encoders(text_encoder):
    prompts = [r["prompt"] for r in load_eval_set()[::5]] + ["", "a red circle " * 100, "特朗普在跳舞 🎈"]
    assert [token_count(p) for p in prompts] == [text_encoder.token_count(p) for p in prompts]


def _complete(store, tenant_id, n, seconds_wall):
    video, _ = store.create_video(
        tenant_id, prompt=f"a red circle {n}", model="m", seconds=2, size="64x64", steps=4, guidance=4.0, seed=n
    )
    assert store.claim_video("w", "core:0", 30, 0).id == video.id
    assert store.complete_video(
        video.id, "w", path="x.mp4", thumbnail_path=None, seconds_wall=seconds_wall, joules=10 * seconds_wall,
        energy_source="estimate", cost_usd=None, co2_g=None, flops=1e10 * seconds_wall, steps_used=4,
        native_size="64x64", scaled=False, provenance={},
    )  # fmt: skip


def test_the_profile_is_fitted_to_the_completed_videos_and_the_backlog_counted(store):
    tenant, _ = store.create_tenant("acme")
    for n, wall in enumerate((1.0, 2.0, 3.0)):
        _complete(store, tenant.id, n, wall)
    for n in range(3, 40):  # a backlog of queued videos newer than every completed one
        store.create_video(
            tenant.id, prompt=f"a red circle {n}", model="m", seconds=2, size="64x64", steps=4, guidance=4.0, seed=n
        )
    view = Admission(store)._read_view(time.time())
    assert view.profile is not None
    assert view.serving.queue_depth == 37
    assert view.serving.queued_device_s == 37 * 2.0  # the mean wall time of the three completed videos

import numpy as np
import pytest

from garrison.core.types import InvalidSpecError, VideoSpec
from garrison.video.pipelines.builtin import check_spec, render_size, resolve_size

PROMPT = "a red circle moving right on a black background"


def test_same_seed_same_clip_other_seed_other_clip(pipeline):
    a = pipeline(VideoSpec(PROMPT, seed=3, steps=4))
    b = pipeline(VideoSpec(PROMPT, seed=3, steps=4))
    c = pipeline(VideoSpec(PROMPT, seed=4, steps=4))
    assert np.array_equal(a.clip.frames, b.clip.frames)
    assert not np.array_equal(a.clip.frames, c.clip.frames)


def test_every_native_size_and_duration_has_the_right_shape(pipeline):
    for seconds, (w, h) in [(2, (64, 64)), (4, (112, 64)), (2, (64, 112))]:
        g = pipeline(VideoSpec(PROMPT, seconds=seconds, width=w, height=h, steps=2))
        assert g.clip.frames.shape == (seconds * 8, h, w, 3)
        assert not g.scaled and g.native_size == f"{w}x{h}"


def test_openai_sizes_are_rendered_natively_and_scaled(pipeline):
    g = pipeline(VideoSpec(PROMPT, width=720, height=1280, steps=2))
    assert g.clip.frames.shape == (16, 1280, 720, 3)
    assert g.scaled and g.native_size == "64x112"


def test_progress_reports_every_step_and_flops_are_counted(pipeline):
    seen = []
    g = pipeline(VideoSpec(PROMPT, steps=5), progress=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 5) for i in range(1, 6)]
    assert g.flops == pipeline.estimate_flops(VideoSpec(PROMPT, steps=5)) > 0
    guided_off = pipeline.estimate_flops(VideoSpec(PROMPT, steps=5, guidance=1.0))
    assert guided_off < g.flops  # no unconditional half


def test_a_smaller_native_scale_renders_fewer_pixels_at_the_asked_size(pipeline):
    full = VideoSpec(PROMPT, width=112, height=64, steps=2)
    half = VideoSpec(PROMPT, width=112, height=64, steps=2, native_scale=0.5)
    assert render_size(half, patch_px=8) == ((56, 32), True)
    assert render_size(half, patch_px=16) == ((64, 32), True)  # whole patches: 3.5 rounds to 4
    native = render_size(half, pipeline.model.cfg.patch_hw)[0]
    g = pipeline(half)
    assert g.clip.frames.shape == (16, 64, 112, 3)  # same clip length and size as asked
    assert g.scaled and g.native_size == f"{native[0]}x{native[1]}"
    assert g.flops < pipeline.estimate_flops(full) / 2.5  # a quarter to a third of the tokens


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (VideoSpec(PROMPT, seconds=3), "seconds must be one of"),
        (VideoSpec(PROMPT, width=100, height=100), "not supported"),
        (VideoSpec("", steps=4), "empty"),
        (VideoSpec(PROMPT, steps=0), "steps"),
        (VideoSpec(PROMPT, native_scale=0.1), "native_scale"),
    ],
)
def test_bad_specs_fail_before_work(spec, message):
    with pytest.raises(InvalidSpecError, match=message):
        check_spec(spec)


def test_resolve_size():
    assert resolve_size(112, 64) == ((112, 64), False)
    assert resolve_size(1792, 1024) == ((112, 64), True)


def test_the_weights_run_in_bf16_only_where_the_cpu_runs_it_fast(isolated_home, cpu_peak_cache):
    import torch

    from garrison.video.pipelines.builtin import BuiltinPipeline

    cpu_peak_cache(fp32_flops=119e9, bf16_flops=1.8e9)  # AVX2 only: bf16 emulated, 3-5x slower a video
    slow = BuiltinPipeline.load()
    assert slow.bf16 is False and next(slow.model.parameters()).dtype == torch.float32
    cpu_peak_cache(fp32_flops=164e9, bf16_flops=404e9)
    fast = BuiltinPipeline.load()
    assert fast.bf16 is True and next(fast.model.parameters()).dtype == torch.bfloat16
    assert BuiltinPipeline.load(bf16=False).bf16 is False  # an explicit choice wins
    frames = slow(VideoSpec(PROMPT, seconds=2, steps=2)).clip.frames
    assert frames.shape[0] == 16 and frames.std() > 0

"""The analytic judge names every attribute of reference clips, natively, after H.264 and after upscaling."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterable

import numpy as np
import pytest

from garrison.core.types import Clip
from garrison.video.data.world import ASPECTS, DURATIONS_S, ClipParams, load_world, render, sample_params
from garrison.video.evaluate.judge import ATTRIBUTES, Judgement, judge_clip, matches
from garrison.video.io import read_mp4, write_mp4

NUM_CLIPS = 216  # divisible by every attribute's number of values, so the sample is exactly balanced
# Every duration, the short ones more often: rendering is most of this file's runtime and grows with frames.
SECONDS_COUNTS = {2: 90, 4: 54, 8: 36, 12: 36}


def _balanced(values: list, n: int, rng: random.Random) -> list:
    column = list(values) * (n // len(values))
    rng.shuffle(column)
    return column


@pytest.fixture(scope="module")
def reference_clips() -> list[tuple[ClipParams, np.ndarray]]:
    """A seeded sample: every colour, shape, motion, background and aspect ratio equally often, every duration."""
    assert sum(SECONDS_COUNTS.values()) == NUM_CLIPS and set(SECONDS_COUNTS) == set(DURATIONS_S)
    w = load_world()
    rng = random.Random(7)
    columns = [
        _balanced(list(w.objects), NUM_CLIPS, rng),
        _balanced(list(w.shapes), NUM_CLIPS, rng),
        _balanced(list(w.motions), NUM_CLIPS, rng),
        _balanced(list(w.backgrounds), NUM_CLIPS, rng),
        rng.sample([s for s, count in SECONDS_COUNTS.items() for _ in range(count)], NUM_CLIPS),
        _balanced(list(ASPECTS), NUM_CLIPS, rng),
    ]
    clips = []
    for color, shape, motion, background, seconds, aspect in zip(*columns, strict=True):
        params = sample_params(rng, seconds, *ASPECTS[aspect], color, shape, motion, background)
        clips.append((params, render(params)))
    return clips


def _expected(params: ClipParams) -> dict[str, str]:
    return {attr: getattr(params, attr) for attr in ATTRIBUTES}


def _failures(clips: Iterable[tuple[ClipParams, np.ndarray]]) -> list[tuple[dict, dict]]:
    failures = []
    for params, frames in clips:
        judgement = judge_clip(frames)
        if not matches(judgement, _expected(params))["all"]:
            failures.append((_expected(params), judgement.as_dict()))
    return failures


def _resize_nearest(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    rows = (np.arange(height) * frames.shape[1]) // height
    cols = (np.arange(width) * frames.shape[2]) // width
    return frames[:, rows][:, :, cols]


def _assert_covers_every_value(clips: list[tuple[ClipParams, np.ndarray]]) -> None:
    w = load_world()
    seen = {key: {getattr(p, key) for p, _ in clips} for key in ATTRIBUTES}
    assert seen == {
        "color": set(w.objects),
        "shape": set(w.shapes),
        "motion": set(w.motions),
        "background": set(w.backgrounds),
    }
    assert {p.seconds for p, _ in clips} == set(DURATIONS_S)
    assert {(p.width, p.height) for p, _ in clips} == set(ASPECTS.values())


def test_sample_covers_every_value(reference_clips):
    _assert_covers_every_value(reference_clips)


def test_names_every_attribute_of_reference_clips(reference_clips):
    assert _failures(reference_clips) == []


def test_names_every_attribute_after_h264(reference_clips, tmp_path):
    encoded = []
    for i, (params, frames) in enumerate(reference_clips[::4]):  # 54 clips, still every value (checked below)
        path = write_mp4(Clip(frames, load_world().fps), tmp_path / f"{i}.mp4")
        decoded = read_mp4(path).frames
        assert decoded.shape == frames.shape
        encoded.append((params, decoded))
    _assert_covers_every_value(encoded)
    assert _failures(encoded) == []


def test_names_every_attribute_after_4x_upscale(reference_clips):
    subset = reference_clips[1::4]  # 54 clips
    _assert_covers_every_value(subset)
    upscaled = ((p, f.repeat(4, axis=1).repeat(4, axis=2)) for p, f in subset)  # one at a time: 4x is 16x the memory
    assert _failures(upscaled) == []


def test_names_every_attribute_at_hd_after_h264(tmp_path):
    # Non-integer scales (64 -> 720 is 11.25x, 112 -> 1280 is 11.43x), then the codec: the serving path's worst case.
    rng = random.Random(3)
    cases = [
        ("landscape", "circle", (1280, 720)),
        ("portrait", "triangle", (720, 1280)),
        ("square", "square", (720, 720)),
    ]
    for aspect, shape, size in cases:
        params = sample_params(rng, 2, *ASPECTS[aspect], shape=shape)
        frames = _resize_nearest(render(params), *size)
        decoded = read_mp4(write_mp4(Clip(frames, 8), tmp_path / f"{aspect}.mp4")).frames
        assert decoded.shape[1:3] == (size[1], size[0])
        judgement = judge_clip(decoded)
        assert matches(judgement, _expected(params))["all"], (_expected(params), judgement.as_dict())


def test_up_is_decreasing_row_index():
    params = sample_params(random.Random(1), 2, 64, 64, "red", "square", "up", "black")
    judgement = judge_clip(render(params))
    assert judgement.motion == "up"
    assert judgement.displacement_px[1] < 0


def test_clip_without_object_has_no_object_fields():
    navy = np.array(load_world().backgrounds["navy"], dtype=np.uint8)
    frames = np.broadcast_to(navy, (16, 64, 112, 3)).copy()
    judgement = judge_clip(frames)
    assert (judgement.color, judgement.shape, judgement.motion) == (None, None, None)
    assert judgement.background == "navy"  # the backdrop is still there to name
    assert judgement.frames_with_object == 0
    assert matches(judgement, {"color": "red", "shape": "circle", "motion": "up", "background": "navy"}) == {
        "color": False,
        "shape": False,
        "motion": False,
        "background": True,
        "all": False,
    }


def test_object_that_does_not_travel_has_no_motion():
    moving = sample_params(random.Random(2), 2, 64, 64, "cyan", "triangle", "right", "brown")
    still = dataclasses.replace(moving, end_xy=moving.start_xy)
    judgement = judge_clip(render(still))
    assert (judgement.color, judgement.shape, judgement.background) == ("cyan", "triangle", "brown")
    assert judgement.motion is None
    assert judgement.travel_fraction < 0.01


def test_as_dict_is_json_ready():
    params = sample_params(random.Random(4), 2, 112, 64)
    judgement = judge_clip(render(params))
    data = json.loads(json.dumps(judgement.as_dict()))
    assert {f.name for f in dataclasses.fields(Judgement)} == set(data)
    assert data["color"] == params.color
    assert set(data["shape_iou"]) == set(load_world().shapes)


def test_rejects_frames_that_are_not_uint8_rgb():
    with pytest.raises(ValueError):
        judge_clip(np.zeros((4, 64, 64, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        judge_clip(np.zeros((4, 64, 64), dtype=np.uint8))

import json
import random
from pathlib import Path

import numpy as np
import pytest

from garrison.video.data.stream import stream_batches, stream_plans, tokens_per_clip
from garrison.video.data.world import (
    ASPECTS,
    DURATIONS_S,
    load_world,
    paraphrase_caption,
    render,
    sample_params,
    synonym_caption,
)

_REPO = Path(__file__).resolve().parents[3]
# CI lays shared/ beside the clone; a developer's checkout may hold it inside
SHARED_SPEC = next(
    (p for p in (_REPO.parent / "shared/specs/clips.json", _REPO / "shared/specs/clips.json") if p.exists()),
    _REPO.parent / "shared/specs/clips.json",
)


def test_packaged_spec_equals_the_shared_spec(skip_without_shared):
    if not SHARED_SPEC.exists():
        skip_without_shared(SHARED_SPEC, "shared/specs/clips.json")
    from importlib import resources

    packaged = json.loads(resources.files("garrison.video.data").joinpath("clips.json").read_text())
    assert packaged == json.loads(SHARED_SPEC.read_text())


@pytest.mark.parametrize("aspect", list(ASPECTS))
@pytest.mark.parametrize("seconds", DURATIONS_S)
def test_clips_follow_the_spec_rules(aspect, seconds):
    w = load_world()
    width, height = ASPECTS[aspect]
    rng = random.Random(seconds * 7 + len(aspect))
    for _ in range(25):
        p = sample_params(rng, seconds, width, height)
        short = min(width, height)
        assert w.diameter_fraction[0] * short <= p.diameter_px <= w.diameter_fraction[1] * short
        r = p.diameter_px / 2
        for x, y in (p.start_xy, p.end_xy):  # fully visible in the first and last frame
            assert r <= x <= width - r and r <= y <= height - r
        dx, dy = p.end_xy[0] - p.start_xy[0], p.end_xy[1] - p.start_xy[1]
        along = width if p.motion in ("left", "right") else height
        travel = {"left": -dx, "right": dx, "up": -dy, "down": dy}[p.motion]
        assert travel >= w.travel_fraction_min * along - 1e-9
        assert (dy if p.motion in ("left", "right") else dx) == 0


def test_render_draws_the_palette_colours_and_moves_the_right_way():
    w = load_world()
    p = sample_params(random.Random(0), 2, 64, 64, color="red", shape="square", motion="up", background="navy")
    frames = render(p)
    assert frames.shape == (16, 64, 64, 3) and frames.dtype == np.uint8
    assert tuple(frames[0, 0, 0]) == w.backgrounds["navy"]
    cy, cx = int(round(p.start_xy[1])), int(round(p.start_xy[0]))
    assert tuple(frames[0, cy, cx]) == w.objects["red"]

    def row_centroid(f):
        mask = np.any(f != np.array(w.backgrounds["navy"], np.uint8), axis=-1)
        return np.nonzero(mask)[0].mean()

    assert row_centroid(frames[-1]) < row_centroid(frames[0])  # up = decreasing row index


def test_triangle_fills_half_its_box_and_points_up():
    p = sample_params(random.Random(1), 2, 64, 64, shape="triangle", background="black", color="white")
    mask = np.any(render(p)[0] > 100, axis=-1)
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    fill = mask.sum() / ((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1))
    assert 0.4 < fill < 0.62
    assert mask[rows[0]].sum() < mask[rows[-1]].sum()  # narrow on top


def test_captions_use_the_spec_words():
    w = load_world()
    rng = random.Random(3)
    p = sample_params(rng, 2, 64, 64, color="cyan", shape="circle", motion="left", background="gray")
    assert p.caption() == "a cyan circle moving left on a gray background"
    for _ in range(50):
        s = synonym_caption(p, rng)
        assert "cyan" in s and "left" in s and "gray" in s
        assert any(word in s for word in ("circle", *w.synonyms["circle"]))
        t = paraphrase_caption(p, rng)
        assert "cyan" in t and "gray" in t


def test_batches_fill_the_token_budget_and_are_deterministic():
    a, b = stream_batches(5, 4096), stream_batches(5, 4096)
    for _ in range(4):
        x, y = next(a), next(b)
        assert np.array_equal(x.frames, y.frames) and x.captions == y.captions
        n, t, h, wd, _ = x.frames.shape
        per = tokens_per_clip(x.seconds, wd, h)
        assert n == max(1, min(32, 4096 // per))
        assert t == x.seconds * 8


def test_plans_replay_without_rendering():
    plans = stream_plans(9, 4096)
    first = [next(plans) for _ in range(3)]
    again = stream_plans(9, 4096)
    assert [p.captions for p in first] == [next(again).captions for _ in range(3)]

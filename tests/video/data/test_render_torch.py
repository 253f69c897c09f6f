import random

import numpy as np
import pytest

from garrison.video.data.render_torch import render_clips
from garrison.video.data.stream import render_batch, stream_plans
from garrison.video.data.world import ASPECTS, DURATIONS_S, render, sample_params


@pytest.mark.parametrize("aspect", list(ASPECTS))
@pytest.mark.parametrize("seconds", DURATIONS_S)
def test_torch_renders_every_bucket_exactly_as_the_numpy_reference(aspect, seconds):
    width, height = ASPECTS[aspect]
    rng = random.Random(seconds * 31 + len(aspect))
    params = [sample_params(rng, seconds, width, height) for _ in range(7)]
    frames = render_clips(params, "cpu").numpy()
    assert frames.shape == (7, seconds * 8, height, width, 3)
    for p, clip in zip(params, frames, strict=True):
        np.testing.assert_array_equal(clip, render(p))


def test_small_chunks_and_mixed_shapes_keep_the_batch_order():
    plan = next(stream_plans(5, 4096, 64))
    assert len({p.shape for p in plan.params}) == 3
    chunked = render_clips(plan.params, "cpu", max_samples=1).numpy()  # one clip per chunk
    np.testing.assert_array_equal(chunked, render_batch(plan).frames)


def test_a_batch_must_share_duration_and_size():
    rng = random.Random(0)
    mixed = [sample_params(rng, 2, 64, 64), sample_params(rng, 4, 64, 64)]
    with pytest.raises(ValueError, match="share duration and size"):
        render_clips(mixed, "cpu")
    with pytest.raises(ValueError, match="no clips"):
        render_clips([], "cpu")

import numpy as np
import pytest

from garrison.core.types import Clip, InvalidSpecError, VideoSpec


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": ""}, "empty"),
        ({"prompt": "   "}, "empty"),
        ({"prompt": "x" * 1001}, "1001 characters"),
        ({"prompt": "ok", "steps": 0}, "steps"),
        ({"prompt": "ok", "steps": 1001}, "steps"),
        ({"prompt": "ok", "guidance": -1}, "guidance"),
        ({"prompt": "ok", "seconds": 0}, "seconds"),
    ],
)
def test_bad_specs_are_refused_with_a_reason(kwargs, message):
    with pytest.raises(InvalidSpecError, match=message):
        VideoSpec(**kwargs).validate()


def test_limits_are_inclusive():
    VideoSpec("x" * 1000, steps=1).validate()
    VideoSpec("ok", steps=1000).validate()


def test_clip_checks_its_frames():
    clip = Clip(np.zeros((16, 64, 112, 3), np.uint8), fps=8)
    assert (clip.num_frames, clip.height, clip.width, clip.seconds) == (16, 64, 112, 2.0)
    with pytest.raises(ValueError):
        Clip(np.zeros((16, 64, 112), np.uint8), fps=8)
    with pytest.raises(ValueError):
        Clip(np.zeros((16, 64, 112, 3), np.float32), fps=8)

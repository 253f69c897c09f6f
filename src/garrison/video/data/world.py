"""The built-in model's world: one solid shape moving in a straight line over a plain background.

Everything here follows `clips.json` (a copy of shared/specs/clips.json shipped in the package, kept equal by a
test): colours, backgrounds, shapes, motions, object sizes, travel, captions and synonyms. The renderer, the
training stream, the prompt sets and the faithfulness judge all read the same spec, so a caption and what the
judge sees in a clip mean the same thing.

Clips come in variable durations (2, 4, 8, 12 s at the spec's 8 fps) and three aspect ratios at a native
resolution of 64 px on the short side: square 64x64, landscape 112x64 (16:9 rounded to the 8 px patch grid),
portrait 64x112. Sizes are written width x height, as OpenAI's API does.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

SHORT_SIDE_PX = 64
LONG_SIDE_PX = 112  # 64 * 16 / 9 = 113.8, rounded down to the 8 px patch grid
DURATIONS_S = (2, 4, 8, 12)
ASPECTS: dict[str, tuple[int, int]] = {  # name -> (width, height)
    "square": (SHORT_SIDE_PX, SHORT_SIDE_PX),
    "landscape": (LONG_SIDE_PX, SHORT_SIDE_PX),
    "portrait": (SHORT_SIDE_PX, LONG_SIDE_PX),
}
SUPERSAMPLE = 4  # samples per pixel edge for anti-aliased edges


@dataclass(frozen=True)
class WorldSpec:
    """The parsed clips.json."""

    fps: int
    objects: dict[str, tuple[int, int, int]]
    backgrounds: dict[str, tuple[int, int, int]]
    shapes: tuple[str, ...]
    motions: tuple[str, ...]
    diameter_fraction: tuple[float, float]
    travel_fraction_min: float
    caption_template: str
    synonyms: dict[str, tuple[str, ...]]


@lru_cache(maxsize=1)
def load_world() -> WorldSpec:
    raw: dict[str, Any] = json.loads(resources.files("garrison.video.data").joinpath("clips.json").read_text())
    rules = raw["rules"]
    return WorldSpec(
        fps=int(raw["fps"]),
        objects={k: tuple(v) for k, v in raw["objects"].items()},
        backgrounds={k: tuple(v) for k, v in raw["backgrounds"].items()},
        shapes=tuple(raw["shapes"]),
        motions=tuple(raw["motions"]),
        diameter_fraction=(float(rules["object_diameter_fraction"][0]), float(rules["object_diameter_fraction"][1])),
        travel_fraction_min=float(rules["travel_fraction_min"]),
        caption_template=raw["caption_template"],
        synonyms={k: tuple(v) for k, v in raw["synonyms"].items()},
    )


def aspect_of(width: int, height: int) -> str:
    for name, (w, h) in ASPECTS.items():
        if (w, h) == (width, height):
            return name
    raise ValueError(f"{width}x{height} is not a native size; native sizes are {native_sizes()}")


def native_sizes() -> list[str]:
    return [f"{w}x{h}" for w, h in ASPECTS.values()]


@dataclass(frozen=True)
class ClipParams:
    """Everything that determines one rendered clip. Positions are object centres in pixels."""

    color: str
    shape: str
    motion: str
    background: str
    seconds: int
    width: int
    height: int
    diameter_px: float
    start_xy: tuple[float, float]
    end_xy: tuple[float, float]

    @property
    def num_frames(self) -> int:
        return self.seconds * load_world().fps

    def caption(self) -> str:
        return load_world().caption_template.format(
            color=self.color, shape=self.shape, motion=self.motion, background=self.background
        )


def sample_params(
    rng: random.Random,
    seconds: int,
    width: int,
    height: int,
    color: str | None = None,
    shape: str | None = None,
    motion: str | None = None,
    background: str | None = None,
) -> ClipParams:
    """Draw a clip that obeys the spec's rules: size, minimum travel, fully visible at both ends."""
    w = load_world()
    color = color or rng.choice(list(w.objects))
    shape = shape or rng.choice(w.shapes)
    motion = motion or rng.choice(w.motions)
    background = background or rng.choice(list(w.backgrounds))
    short = min(width, height)
    diameter = rng.uniform(*w.diameter_fraction) * short
    r = diameter / 2
    horizontal = motion in ("left", "right")
    along, across = (width, height) if horizontal else (height, width)
    travel_min = w.travel_fraction_min * along
    travel_max = along - diameter  # the whole object stays inside the frame at both ends
    travel = rng.uniform(travel_min, travel_max)
    start_along = rng.uniform(r, along - r - travel)
    end_along = start_along + travel
    if motion in ("left", "up"):  # left: decreasing x; up: decreasing row index (spec: towards the top edge)
        start_along, end_along = end_along, start_along
    pos_across = rng.uniform(r, across - r)
    if horizontal:
        start, end = (start_along, pos_across), (end_along, pos_across)
    else:
        start, end = (pos_across, start_along), (pos_across, end_along)
    return ClipParams(color, shape, motion, background, seconds, width, height, diameter, start, end)


def shape_mask(shape: str, xs: np.ndarray, ys: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: float) -> np.ndarray:
    """Boolean coverage of `shape` centred at (cx, cy) with half-size r, evaluated at sample points (xs, ys).

    cx, cy broadcast against xs, ys (one centre per frame). The triangle points up, base and height equal to
    the diameter, so it fills half its bounding box (circle ~0.785, square 1.0): the judge relies on that.
    """
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "triangle":
        # apex at (cx, cy - r), base from (cx - r, cy + r) to (cx + r, cy + r)
        inside_y = (dy >= -r) & (dy <= r)
        half_width = (dy + r) / 2  # 0 at the apex, r at the base
        return inside_y & (np.abs(dx) <= half_width)
    raise ValueError(f"unknown shape {shape!r}")


def render(params: ClipParams) -> np.ndarray:
    """Render uint8 frames (T, H, W, 3), anti-aliased by supersampling each pixel."""
    w = load_world()
    t = params.num_frames
    s = SUPERSAMPLE
    offsets = (np.arange(s) + 0.5) / s
    xs = (np.arange(params.width)[:, None] + offsets[None, :]).reshape(-1)  # (W*s,)
    ys = (np.arange(params.height)[:, None] + offsets[None, :]).reshape(-1)  # (H*s,)
    frac = np.linspace(0.0, 1.0, t) if t > 1 else np.zeros(1)
    cx = params.start_xy[0] + frac * (params.end_xy[0] - params.start_xy[0])
    cy = params.start_xy[1] + frac * (params.end_xy[1] - params.start_xy[1])
    mask = shape_mask(
        params.shape,
        xs[None, None, :],
        ys[None, :, None],
        cx[:, None, None],
        cy[:, None, None],
        params.diameter_px / 2,
    )  # (T, H*s, W*s)
    coverage = mask.reshape(t, params.height, s, params.width, s).mean(axis=(2, 4), dtype=np.float32)
    fg = np.asarray(w.objects[params.color], dtype=np.float32)
    bg = np.asarray(w.backgrounds[params.background], dtype=np.float32)
    frames = bg + coverage[..., None] * (fg - bg)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


# --- captions ---------------------------------------------------------------------------------------------------

# Training-time phrasings beyond the spec's template. The evaluation's free paraphrases
# (evaluate/prompts.json) are written separately: they reuse none of these frames, direction phrases or travel
# verbs, so the paraphrase set still measures wording the model never saw. The variety is what teaches the model
# to read a direction from a phrase ("from left to right", "towards the upper part of the picture") and a shape
# from any position in the sentence, instead of from the template's word order.
_TRAIN_FRAMES = (
    "{a} {color} {shape} {moving} {motion} on {a_bg} {background} {backdrop}",
    "{a} {color} {shape} {moving} {motion_adv} over {a_bg} {background} {backdrop}",
    "{color} {shape} {moving} {motion} against {a_bg} {background} {backdrop}",
    "on {a_bg} {background} {backdrop}, {a} {color} {shape} {moving} {motion}",
    "{a} {color} {shape} that is {moving} {motion} across {a_bg} {background} {backdrop}",
    "{a} {color} {shape} {moving} {motion_adv}, {background} {backdrop}",
    "{background} {backdrop} with {a} {color} {shape} {moving} {motion}",
    "{a} {shape} in {color}, {moving} {motion_adv} on {a_bg} {background} {backdrop}",
    "{a} {color}-coloured {shape} {moving} {motion_adv}; the {backdrop} is {background}",
    "the {shape} is {color} and the {backdrop} is {background}; it is {moving} {motion_adv}",
    "here {a} {color} {shape} is {moving} {motion_adv} in front of {a_bg} {background} {backdrop}",
    "{color} {shape}, {background} {backdrop}, {moving} {motion_adv}",
    "a video of {a} {color} {shape} {moving} {motion_adv} with {a_bg} {background} {backdrop}",
    "against {a_bg} {background} {backdrop} {a} {color} {shape} is {moving} {motion_adv}",
    "{moving} {motion_adv}: {a} {color} {shape} on {a_bg} {background} {backdrop}",
    "the {backdrop} is {background} while {a} {color} {shape} is {moving} {motion_adv}",
)
_MOTION_ADVERBS = {
    "left": (
        "to the left",
        "leftwards",
        "left",
        "from right to left",
        "off to the left",
        "towards the left-hand side",
        "in the direction of the left",
    ),
    "right": (
        "to the right",
        "rightwards",
        "right",
        "from left to right",
        "off to the right",
        "towards the right-hand side",
        "in the direction of the right",
    ),
    "up": (
        "upwards",
        "up",
        "towards the top",
        "from bottom to top",
        "higher and higher",
        "towards the upper part of the picture",
        "in the direction of the top",
    ),
    "down": (
        "downwards",
        "down",
        "towards the bottom",
        "from top to bottom",
        "lower and lower",
        "towards the lower part of the picture",
        "in the direction of the bottom",
    ),
}
# Travel verbs beyond the spec's synonyms of "moving" (training only, like the frames above).
_TRAIN_VERBS = ("floating", "sweeping", "cruising", "flying", "creeping", "rolling", "sailing")
# Nouns for the backdrop beyond the spec's; the evaluation's "screen", "scene", "canvas" and "field" stay unseen.
_TRAIN_BACKDROPS = ("setting", "surface", "wall", "space")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def synonym_caption(params: ClipParams, rng: random.Random) -> str:
    """The spec's template with each word that has synonyms swapped at random for one of them (or kept)."""
    w = load_world()

    def pick(word: str) -> str:
        return rng.choice((word, *w.synonyms.get(word, ())))

    shape = pick(params.shape)
    text = f"{_article(params.color)} {params.color} {shape} {pick('moving')} {params.motion} on {_article(params.background)} {params.background} {pick('background')}"
    return text


def paraphrase_caption(params: ClipParams, rng: random.Random) -> str:
    w = load_world()
    frame = rng.choice(_TRAIN_FRAMES)
    shape = rng.choice((params.shape, *w.synonyms.get(params.shape, ())))
    text = frame.format(
        a=_article(params.color),
        color=params.color,
        shape=shape,
        moving=rng.choice(("moving", *w.synonyms["moving"], *_TRAIN_VERBS)),
        motion=params.motion,
        motion_adv=rng.choice(_MOTION_ADVERBS[params.motion]),
        a_bg=_article(params.background),
        background=params.background,
        backdrop=rng.choice(("background", *w.synonyms["background"], *_TRAIN_BACKDROPS)),
    )
    return text


# How often each kind of caption is drawn (the model card quotes it).
CAPTION_MIX = {"spec template": 0.35, "spec synonyms": 0.25, "training paraphrase frames": 0.40}


def caption_mix_text() -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in CAPTION_MIX.items())


def training_caption(params: ClipParams, rng: random.Random) -> str:
    """A caption drawn by CAPTION_MIX: the template, the template with synonyms, or a paraphrase frame."""
    u = rng.random()
    if u < CAPTION_MIX["spec template"]:
        return params.caption()
    if u < CAPTION_MIX["spec template"] + CAPTION_MIX["spec synonyms"]:
        return synonym_caption(params, rng)
    return paraphrase_caption(params, rng)

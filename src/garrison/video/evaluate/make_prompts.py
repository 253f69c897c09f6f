"""Generate the public prompt sets in prompts.json: `python -m garrison.video.evaluate.make_prompts`.

Three sets of 96 prompts over the same 96 scenes (colour, shape, motion, background), so a difference in accuracy
between sets comes from the wording alone:

- `template`: the spec's caption_template, word for word (as in training).
- `synonyms`: the template with the spec's synonyms for the shape, "moving" and "background" (as in training).
- `paraphrases`: free English from the hand-written frames below. None of them is a training phrasing
  (world.py's `_TRAIN_FRAMES` and `_MOTION_ADVERBS`), and none uses a training verb for motion, so this set
  measures how far the model generalises beyond the captions it saw. Each names exactly one colour, shape,
  direction and background, with no other direction word, so the expected labels are unambiguous.

The scenes are a seeded, balanced draw of the 384 combinations: every colour 12 times, every shape 32 times, every
motion and background 24 times, no scene twice. The output is committed; a test checks it matches this script.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path
from typing import Any

from garrison.video.data.world import load_world

SEED = 2024
SET_SIZE = 96
PROMPTS_PATH = Path(__file__).with_name("prompts.json")

# Direction phrases that follow a verb of travel. Only words of the one direction appear in each.
DIRECTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("to the left", "leftward", "toward the left edge", "over to the left side"),
    "right": ("to the right", "rightward", "toward the right edge", "over to the right side"),
    "up": ("upward", "toward the top edge", "up to the top of the frame", "toward the top of the frame"),
    "down": ("downward", "toward the bottom edge", "down to the bottom of the frame", "toward the bottom of the frame"),
}

# Hand-written sentence frames, each used four times. Articles are written "a" and fixed after filling in.
PARAPHRASE_FRAMES: tuple[str, ...] = (
    "on a {bg} backdrop, watch a {color} {shape} travel {dir}",
    "{color} {shape} heading {dir}, {bg} scene behind it",
    "a {color} {shape} travels {dir} across a {bg} screen",
    "a {bg} canvas where a {color} {shape} makes its way {dir}",
    "watch a {color} {shape} go {dir} in front of a {bg} background",
    "the {shape} is {color} and it travels {dir}; the background is {bg}",
    "{bg} backdrop, {color} {shape}, heading {dir}",
    "a single {color} {shape} crosses a {bg} screen, going {dir}",
    "framed by a {bg} background, a {color} {shape} shifts steadily {dir}",
    "a {color} {shape} makes its way {dir} over a plain {bg} background",
    "there is a {color} {shape} on a {bg} screen, and it keeps going {dir}",
    "the camera holds still while a {color} {shape} travels {dir} in front of a {bg} backdrop",
    "a {color} {shape} sets off {dir} across a flat {bg} background",
    "{color} {shape} on a {bg} canvas, heading {dir}",
    "a short clip of a {color} {shape} going {dir} on a {bg} screen",
    "a {bg} backdrop fills the frame as a {color} {shape} passes {dir}",
    "see a {color} {shape} move steadily {dir} with a {bg} background behind it",
    "one {color} {shape} heads {dir} on a solid {bg} background",
    "a {shape} colored {color} travels {dir}, shown on a {bg} backdrop",
    "over a {bg} field, a {color} {shape} makes a steady trip {dir}",
    "animation of a {color} {shape} heading {dir} over a {bg} scene",
    "the {color} {shape} shifts {dir} while the {bg} background stays still",
    "a {color} {shape} keeps heading {dir}; behind it, a plain {bg} screen",
    "in this scene a {color} {shape} travels {dir} and the backdrop is {bg}",
)


def balanced_scenes(rng: random.Random, n: int = SET_SIZE) -> list[tuple[str, str, str, str]]:
    """`n` distinct (colour, shape, motion, background) scenes with every value of each attribute equally often.

    Args:
        rng: the seeded source of the draw.
        n: how many scenes; each attribute's number of values must divide it.

    Returns:
        The scenes in random order.
    """
    w = load_world()
    values = (list(w.objects), list(w.shapes), list(w.motions), list(w.backgrounds))
    for vs in values:
        if n % len(vs):
            raise ValueError(f"{n} scenes cannot be balanced over {len(vs)} values")
    combinations = list(itertools.product(*values))
    # Walk the shuffled combinations, keeping each one whose values all have quota left. A walk can strand quota
    # that no remaining combination fits; for 96 of 384 about one walk in four or five completes, so retry.
    while True:
        rng.shuffle(combinations)
        quota = [dict.fromkeys(vs, n // len(vs)) for vs in values]
        scenes = []
        for scene in combinations:
            if all(q[v] > 0 for q, v in zip(quota, scene, strict=True)):
                scenes.append(scene)
                for q, v in zip(quota, scene, strict=True):
                    q[v] -= 1
        if len(scenes) == n:
            rng.shuffle(scenes)
            return scenes


def with_articles(text: str) -> str:
    """Turn each article "a" before a vowel into "an"."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def template_prompt(color: str, shape: str, motion: str, background: str) -> str:
    """The spec's caption_template, word for word ("a orange ..." included: training sees it so)."""
    return load_world().caption_template.format(color=color, shape=shape, motion=motion, background=background)


def synonym_prompt(color: str, shape: str, motion: str, background: str, rng: random.Random) -> str:
    """The template with a synonym for the shape, for "moving" and for "background" (the spec has one of each)."""
    syn = load_world().synonyms
    shape_word, moving, backdrop = rng.choice(syn[shape]), rng.choice(syn["moving"]), rng.choice(syn["background"])
    return with_articles(f"a {color} {shape_word} {moving} {motion} on a {background} {backdrop}")


def paraphrase_prompt(color: str, shape: str, motion: str, background: str, frame: str, rng: random.Random) -> str:
    """`frame` filled in with the shape's name or a synonym and one of the motion's direction phrases."""
    shape_word = rng.choice((shape, *load_world().synonyms[shape]))
    text = frame.format(color=color, shape=shape_word, dir=rng.choice(DIRECTION_PHRASES[motion]), bg=background)
    return with_articles(text)


def build_prompt_sets(seed: int = SEED) -> dict[str, list[dict[str, Any]]]:
    """The three prompt sets over one balanced draw of scenes; the same seed gives the same file."""
    rng = random.Random(seed)
    scenes = balanced_scenes(rng)
    frames = list(PARAPHRASE_FRAMES) * -(-SET_SIZE // len(PARAPHRASE_FRAMES))
    rng.shuffle(frames)
    sets: dict[str, list[dict[str, Any]]] = {"template": [], "synonyms": [], "paraphrases": []}
    for i, scene in enumerate(scenes):
        labels = dict(zip(("color", "shape", "motion", "background"), scene, strict=True))
        sets["template"].append({"prompt": template_prompt(*scene), **labels})
        sets["synonyms"].append({"prompt": synonym_prompt(*scene, rng), **labels})
        sets["paraphrases"].append({"prompt": paraphrase_prompt(*scene, frames[i], rng), **labels})
    return sets


def render_json(sets: dict[str, list[dict[str, Any]]]) -> str:
    """One prompt per line, so a diff of the file reads as a diff of prompts."""
    blocks = []
    for name, items in sets.items():
        lines = ",\n".join("    " + json.dumps(item) for item in items)
        blocks.append(f'  "{name}": [\n{lines}\n  ]')
    return "{\n" + ",\n".join(blocks) + "\n}\n"


def main() -> None:
    """Rewrite prompts.json next to this file."""
    PROMPTS_PATH.write_text(render_json(build_prompt_sets()))
    print(f"wrote {PROMPTS_PATH}")


if __name__ == "__main__":
    main()

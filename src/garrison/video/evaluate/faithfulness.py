"""Prompt faithfulness of a text-to-video generator on the built-in world, scored by the analytic judge.

Each public prompt set (prompts.json: `template`, `synonyms`, `paraphrases`; see make_prompts.py) is generated
prompt by prompt at a rotating (duration, aspect ratio) assignment, so every duration and every aspect ratio is
measured, and the judge names the colour, shape, motion and background of each clip. The report gives accuracy per
attribute, all-four accuracy, the same per (seconds, aspect) and every failure with what the judge saw.

The sets share their scenes, and item i of every set gets the same assignment and seed: differences between the
sets come from the wording alone. `reference_generator` renders the ground truth from the labels, which scores the
judge itself through the same code path (it must reach 1.0).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from garrison.video.data.world import ASPECTS, DURATIONS_S, render, sample_params
from garrison.video.evaluate.judge import ATTRIBUTES, judge_clip, matches

SET_NAMES = ("template", "synonyms", "paraphrases")

# generate(prompt, seconds, width, height, seed) -> uint8 frames (T, H, W, 3)
GenerateFn = Callable[[str, int, int, int, int], np.ndarray]
ProgressFn = Callable[[int, int], None]


def load_prompt_sets() -> dict[str, list[dict[str, str]]]:
    """The public prompt sets shipped with the package, by name."""
    text = resources.files("garrison.video.evaluate").joinpath("prompts.json").read_text()
    return json.loads(text)


@dataclass(frozen=True)
class Assignment:
    """The duration and size one prompt is generated at."""

    seconds: int
    aspect: str
    width: int
    height: int

    @property
    def key(self) -> str:
        """The assignment's name in reports, e.g. "8s/portrait"."""
        return f"{self.seconds}s/{self.aspect}"


def assignments(n: int) -> list[Assignment]:
    """`n` assignments cycling through every (seconds, aspect) pair, so any 12 in a row cover them all."""
    pairs = [(s, a) for s in DURATIONS_S for a in ASPECTS]
    return [Assignment(s, a, *ASPECTS[a]) for s, a in (pairs[i % len(pairs)] for i in range(n))]


@dataclass
class SetReport:
    """Scores of one prompt set. Accuracies are fractions of clips; `by_assignment` is keyed "8s/portrait"."""

    name: str
    n: int
    accuracy: dict[str, float]  # per attribute
    all_four: float
    by_assignment: dict[str, dict[str, float]]  # key -> {"n", "all_four", and each attribute}
    failures: list[dict[str, Any]] = field(default_factory=list)  # prompt, expected, judged, assignment, seed

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class FaithfulnessReport:
    """Scores of every evaluated set, with the settings that produced them."""

    sets: dict[str, SetReport]
    seed: int
    limit_per_set: int | None

    @property
    def all_four(self) -> float:
        """All-four accuracy pooled over every clip of every set."""
        n = sum(r.n for r in self.sets.values())
        return sum(r.all_four * r.n for r in self.sets.values()) / n if n else 0.0

    @property
    def failures(self) -> list[dict[str, Any]]:
        """Every set's failures, in evaluation order."""
        return [f for r in self.sets.values() for f in r.failures]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with the pooled all-four accuracy."""
        return {
            "seed": self.seed,
            "limit_per_set": self.limit_per_set,
            "all_four": self.all_four,
            "sets": {name: r.as_dict() for name, r in self.sets.items()},
        }


def evaluate(
    generate: GenerateFn,
    sets: dict[str, list[dict[str, Any]]] | None = None,
    limit_per_set: int | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> FaithfulnessReport:
    """Generate every prompt of every set and judge the clips.

    Args:
        generate: generate(prompt, seconds, width, height, seed) -> uint8 frames (T, H, W, 3).
        sets: prompt sets by name; the public ones (`load_prompt_sets()`) by default.
        limit_per_set: evaluate only the first this many prompts of each set (12 or more covers every assignment).
        seed: item i of every set is generated with seed + i.
        progress: called with (clips done, clips in total) after each clip.

    Returns:
        The report.
    """
    sets = load_prompt_sets() if sets is None else sets
    chosen = {name: items[:limit_per_set] if limit_per_set is not None else items for name, items in sets.items()}
    total = sum(len(items) for items in chosen.values())
    done = 0
    reports = {}
    for name, items in chosen.items():
        rows = []
        failures = []
        for i, (item, a) in enumerate(zip(items, assignments(len(items)), strict=True)):
            frames = generate(item["prompt"], a.seconds, a.width, a.height, seed + i)
            judgement = judge_clip(frames)
            correct = matches(judgement, item)
            rows.append((a.key, correct))
            if not correct["all"]:
                failures.append(
                    {
                        "set": name,
                        "index": i,
                        "prompt": item["prompt"],
                        "seconds": a.seconds,
                        "aspect": a.aspect,
                        "seed": seed + i,
                        "expected": {attr: item[attr] for attr in ATTRIBUTES},
                        "judged": judgement.as_dict(),
                    }
                )
            done += 1
            if progress is not None:
                progress(done, total)
        reports[name] = _set_report(name, rows, failures)
    return FaithfulnessReport(reports, seed, limit_per_set)


def _set_report(name: str, rows: list[tuple[str, dict[str, bool]]], failures: list[dict[str, Any]]) -> SetReport:
    """Aggregate per-clip correctness into accuracies, overall and per assignment."""

    def scores(correct: list[dict[str, bool]]) -> dict[str, float]:
        n = len(correct)
        return {key: sum(c[key] for c in correct) / n if n else 0.0 for key in (*ATTRIBUTES, "all")}

    overall = scores([c for _, c in rows])
    by_assignment = {}
    for key in dict.fromkeys(k for k, _ in rows):  # first-seen order: the assignment cycle's order
        group = [c for k, c in rows if k == key]
        s = scores(group)
        by_assignment[key] = {"n": len(group), "all_four": s.pop("all"), **s}
    all_four = overall.pop("all")
    return SetReport(name, len(rows), overall, all_four, by_assignment, failures)


# --- the ground truth, to score the judge -------------------------------------------------------------------------


def reference_clip(item: dict[str, Any], seconds: int, width: int, height: int, seed: int) -> np.ndarray:
    """Render the clip an item's labels describe: what a perfectly faithful model would return."""
    params = sample_params(
        random.Random(seed),
        seconds,
        width,
        height,
        color=item["color"],
        shape=item["shape"],
        motion=item["motion"],
        background=item["background"],
    )
    return render(params)


def reference_generator(sets: dict[str, list[dict[str, Any]]]) -> GenerateFn:
    """A generate() for evaluate() that looks each prompt's labels up in `sets` (it never parses the prompt)."""
    labels: dict[str, dict[str, Any]] = {}
    for items in sets.values():
        for item in items:
            known = labels.setdefault(item["prompt"], item)
            if any(known[attr] != item[attr] for attr in ATTRIBUTES):
                raise ValueError(f"prompt {item['prompt']!r} appears with different labels")

    def generate(prompt: str, seconds: int, width: int, height: int, seed: int) -> np.ndarray:
        return reference_clip(labels[prompt], seconds, width, height, seed)

    return generate

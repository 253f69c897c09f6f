"""The public prompt sets are valid and held out where they claim to be; evaluate() scores the ground truth 1.0."""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from importlib import resources

import pytest

from garrison.video.data.world import _MOTION_ADVERBS, _TRAIN_FRAMES, ASPECTS, DURATIONS_S, load_world
from garrison.video.evaluate.faithfulness import (
    SET_NAMES,
    assignments,
    evaluate,
    load_prompt_sets,
    reference_clip,
    reference_generator,
)
from garrison.video.evaluate.judge import ATTRIBUTES, judge_clip
from garrison.video.evaluate.make_prompts import build_prompt_sets, render_json

DIRECTION_WORDS = {
    "left": {"left", "leftward", "leftwards"},
    "right": {"right", "rightward", "rightwards"},
    "up": {"up", "upward", "upwards", "top"},
    "down": {"down", "downward", "downwards", "bottom"},
}


@pytest.fixture(scope="module")
def sets() -> dict[str, list[dict[str, str]]]:
    return load_prompt_sets()


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _shape_words(shape: str) -> set[str]:
    return {shape, *load_world().synonyms[shape]}


def _training_patterns() -> list[re.Pattern]:
    """Each training caption frame (and the template) as a regex over the training vocabulary."""
    w = load_world()

    def alt(words) -> str:
        return "(?:" + "|".join(re.escape(x) for x in sorted(words, key=len, reverse=True)) + ")"

    vocab = {
        "a": "an?",
        "a_bg": "an?",
        "color": alt(w.objects),
        "shape": alt({s for shape in w.shapes for s in _shape_words(shape)}),
        "moving": alt({"moving", *w.synonyms["moving"]}),
        "motion": alt(w.motions),
        "motion_adv": alt({adv for advs in _MOTION_ADVERBS.values() for adv in advs}),
        "background": alt(w.backgrounds),
        "backdrop": alt({"background", *w.synonyms["background"]}),
    }
    patterns = []
    for frame in (*_TRAIN_FRAMES, w.caption_template):
        parts = [
            re.escape(literal) + (vocab[name] if name else "")
            for literal, name, _, _ in string.Formatter().parse(frame)
        ]
        patterns.append(re.compile(r"\b" + "".join(parts) + r"\b", re.IGNORECASE))
    return patterns


def test_three_sets_of_96_with_valid_labels(sets):
    w = load_world()
    valid = {
        "color": set(w.objects),
        "shape": set(w.shapes),
        "motion": set(w.motions),
        "background": set(w.backgrounds),
    }
    assert tuple(sets) == SET_NAMES
    for items in sets.values():
        assert len(items) == 96
        for item in items:
            assert set(item) == {"prompt", *ATTRIBUTES}
            assert all(item[attr] in valid[attr] for attr in ATTRIBUTES), item


def test_sets_share_balanced_distinct_scenes(sets):
    scenes = [tuple(item[a] for a in ATTRIBUTES) for item in sets["template"]]
    for name in SET_NAMES:
        assert [tuple(item[a] for a in ATTRIBUTES) for item in sets[name]] == scenes
    assert len(set(scenes)) == 96
    w = load_world()
    for i, values in enumerate((w.objects, w.shapes, w.motions, w.backgrounds)):
        assert Counter(s[i] for s in scenes) == {v: 96 // len(values) for v in values}


def test_prompts_are_unique_within_each_set(sets):
    for items in sets.values():
        assert len({item["prompt"] for item in items}) == len(items)


def test_prompts_json_is_the_generators_output(sets):
    assert build_prompt_sets() == sets
    committed = resources.files("garrison.video.evaluate").joinpath("prompts.json").read_text()
    assert render_json(build_prompt_sets()) == committed


def test_template_prompts_are_the_caption_template(sets):
    template = load_world().caption_template
    for item in sets["template"]:
        assert item["prompt"] == template.format(**{a: item[a] for a in ATTRIBUTES})


def test_synonym_prompts_are_the_template_with_synonyms(sets):
    syn = load_world().synonyms
    for item in sets["synonyms"]:
        words = item["prompt"].split()
        article, color, shape, moving, motion, on, article_bg, background, backdrop = words
        assert (color, motion, background) == (item["color"], item["motion"], item["background"])
        assert shape in syn[item["shape"]]
        assert moving in syn["moving"]
        assert backdrop in syn["background"]
        assert on == "on" and article in ("a", "an") and article_bg in ("a", "an")


def test_paraphrases_avoid_training_phrasing(sets):
    patterns = _training_patterns()
    # The patterns do catch training captions (the check would be empty otherwise).
    assert patterns[0].search("an orange disc sliding left on a gray backdrop")
    assert patterns[-1].search(sets["template"][0]["prompt"])
    training_verbs = {"moving", *load_world().synonyms["moving"]}
    for item in sets["paraphrases"]:
        hits = [p.pattern for p in patterns if p.search(item["prompt"])]
        assert hits == [], item["prompt"]
        assert not _words(item["prompt"]) & training_verbs, item["prompt"]


def test_paraphrases_name_each_attribute_exactly_once(sets):
    w = load_world()
    for item in sets["paraphrases"]:
        words = _words(item["prompt"])
        assert words & set(w.objects) == {item["color"]}, item["prompt"]
        assert words & set(w.backgrounds) == {item["background"]}, item["prompt"]
        assert {s for s in w.shapes if words & _shape_words(s)} == {item["shape"]}, item["prompt"]
        assert {m for m, ds in DIRECTION_WORDS.items() if words & ds} == {item["motion"]}, item["prompt"]


def test_paraphrases_vary_their_sentence_structure(sets):
    # Strip the attribute words; what is left is the sentence frame.
    w = load_world()
    names = set(w.objects) | set(w.backgrounds) | {s for shape in w.shapes for s in _shape_words(shape)}
    skeletons = {
        " ".join(x for x in item["prompt"].split() if x.strip(",;") not in names)[:20] for item in sets["paraphrases"]
    }
    assert len(skeletons) >= 15


def test_assignments_cycle_every_duration_and_aspect():
    first = assignments(12)
    assert {(a.seconds, a.aspect) for a in first} == {(s, a) for s in DURATIONS_S for a in ASPECTS}
    assert all((a.width, a.height) == ASPECTS[a.aspect] for a in first)
    assert assignments(30)[12:24] == first


def test_reference_clip_follows_the_labels_not_the_prompt():
    item = {
        "prompt": "a red circle moving up on a black background",
        "color": "blue",
        "shape": "square",
        "motion": "left",
        "background": "gray",
    }
    frames = reference_clip(item, 4, 64, 112, seed=5)
    assert frames.shape == (32, 112, 64, 3)
    judgement = judge_clip(frames)
    assert (judgement.color, judgement.shape, judgement.motion, judgement.background) == (
        "blue",
        "square",
        "left",
        "gray",
    )


def test_evaluate_scores_the_ground_truth_perfectly(sets):
    calls = []
    report = evaluate(
        reference_generator(sets), sets, limit_per_set=12, seed=11, progress=lambda d, t: calls.append((d, t))
    )
    assert calls[-1] == (36, 36) and len(calls) == 36
    assert report.all_four == 1.0
    assert report.failures == []
    for name in SET_NAMES:
        r = report.sets[name]
        assert r.n == 12 and r.all_four == 1.0
        assert r.accuracy == dict.fromkeys(ATTRIBUTES, 1.0)
        assert len(r.by_assignment) == 12  # every duration x aspect ratio
        assert all(g["n"] == 1 for g in r.by_assignment.values())
    data = json.loads(json.dumps(report.as_dict()))
    assert data["sets"]["paraphrases"]["by_assignment"]["12s/portrait"]["all_four"] == 1.0


def test_evaluate_reports_failures_per_attribute(sets):
    # A generator that always renders the opposite direction: motion is always wrong, the rest always right.
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    labels = {item["prompt"]: item for item in sets["template"]}

    def backwards(prompt: str, seconds: int, width: int, height: int, seed: int):
        item = {**labels[prompt], "motion": opposite[labels[prompt]["motion"]]}
        return reference_clip(item, seconds, width, height, seed)

    report = evaluate(backwards, {"template": sets["template"]}, limit_per_set=12, seed=0)
    r = report.sets["template"]
    assert r.accuracy == {"color": 1.0, "shape": 1.0, "motion": 0.0, "background": 1.0}
    assert r.all_four == 0.0
    assert len(r.failures) == 12
    failure = r.failures[0]
    assert failure["prompt"] == sets["template"][0]["prompt"]
    assert failure["judged"]["motion"] == opposite[failure["expected"]["motion"]]


def test_reference_generator_rejects_one_prompt_with_two_meanings():
    item = {"prompt": "a thing", "color": "red", "shape": "circle", "motion": "up", "background": "gray"}
    with pytest.raises(ValueError):
        reference_generator({"a": [item], "b": [{**item, "color": "blue"}]})

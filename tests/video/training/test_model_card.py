"""video.training.model_card: the shipped card renders, and a multi-run checkpoint names every stage."""

from __future__ import annotations

import json
from pathlib import Path

import garrison.video.weights as weights
from garrison.video.training.model_card import render_lineage, render_markdown

SHIPPED = Path(weights.__file__).parent / "builtin" / "model_card.json"


def test_the_shipped_card_renders_with_its_figures():
    card = json.loads(SHIPPED.read_text())
    text = render_markdown(card)
    assert text.startswith("# Model card: garrison-builtin-dit")
    for name, s in card["faithfulness"]["sets"].items():
        assert f"| {name} | {s['n']} |" in text and f"**{s['all']:.3f}**" in text


def test_lineage_lists_each_stage_and_the_total_time():
    stages = [
        {"what": "CPU run", "steps": 6600, "clips_seen": 88972, "wall_s": 7335.4, "machine": "AMD EPYC",
         "reproduce": "garrison train --steps 6600"},
        {"what": "GPU fine-tune", "steps": 3639, "clips_seen": 128794, "wall_s": 390.0, "machine": "NVIDIA H200",
         "reproduce": "TRAIN_MINUTES=6.5 bash scripts/gpu/session.sh fit"},
    ]  # fmt: skip
    text = render_lineage({"lineage": stages})
    assert "from 2 runs" in text and "128.8 min in all" in text
    assert "| 2 | GPU fine-tune | 3639 | 128794 | 6.5 min | NVIDIA H200 |" in text
    assert render_lineage({}) == ""

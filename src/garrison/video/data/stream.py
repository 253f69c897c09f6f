"""An endless stream of training batches from the procedural clip world.

Each batch holds clips of one (duration, aspect) bucket, so no padding is needed; the batch size fills a
token budget, so a batch of long landscape clips costs about as much compute as one of short square clips.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from garrison.video.data.world import (
    ASPECTS,
    DURATIONS_S,
    ClipParams,
    load_world,
    render,
    sample_params,
    training_caption,
)

# Short clips are cheap and teach appearance; long ones teach slow motion. Weights per duration.
DURATION_WEIGHTS = {2: 0.4, 4: 0.25, 8: 0.15, 12: 0.2}


@dataclass
class BatchPlan:
    """What a batch will hold, drawn cheaply: resuming a run replays plans without rendering them."""

    params: list[ClipParams]
    captions: list[str]
    seconds: int
    aspect: str


@dataclass
class Batch:
    frames: np.ndarray  # uint8 (B, T, H, W, 3)
    captions: list[str]
    seconds: int
    aspect: str


def tokens_per_clip(seconds: int, width: int, height: int, patch_t: int = 4, patch_hw: int = 16) -> int:
    return (seconds * load_world().fps // patch_t) * (height // patch_hw) * (width // patch_hw)


def stream_plans(
    seed: int, batch_tokens: int, max_batch: int = 32, patch_t: int = 4, patch_hw: int = 16
) -> Iterator[BatchPlan]:
    """Batch plans forever; deterministic for a given seed. The patch sizes turn the token budget into clips."""
    rng = random.Random(seed)
    durations = list(DURATION_WEIGHTS)
    weights = [DURATION_WEIGHTS[d] for d in durations]
    assert set(durations) == set(DURATIONS_S)
    while True:
        seconds = rng.choices(durations, weights)[0]
        aspect = rng.choice(list(ASPECTS))
        width, height = ASPECTS[aspect]
        n = max(1, min(max_batch, batch_tokens // tokens_per_clip(seconds, width, height, patch_t, patch_hw)))
        params = [sample_params(rng, seconds, width, height) for _ in range(n)]
        yield BatchPlan(params, [training_caption(p, rng) for p in params], seconds, aspect)


def render_batch(plan: BatchPlan) -> Batch:
    return Batch(np.stack([render(p) for p in plan.params]), plan.captions, plan.seconds, plan.aspect)


def stream_batches(seed: int, batch_tokens: int, max_batch: int = 32) -> Iterator[Batch]:
    """Rendered batches forever; deterministic for a given seed."""
    for plan in stream_plans(seed, batch_tokens, max_batch):
        yield render_batch(plan)

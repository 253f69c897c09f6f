"""Plain data types shared by every layer: what a video request asks for and what a generation returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_PROMPT_CHARS = 1000
MIN_STEPS, MAX_STEPS = 1, 1000


class InvalidSpecError(ValueError):
    """A request that cannot be generated as asked; the message says why in words a user can act on."""


@dataclass(frozen=True)
class VideoSpec:
    """What a caller asks for. Sizes are width x height in pixels, as OpenAI's `size` ("1280x720")."""

    prompt: str
    seconds: int = 2
    width: int = 64
    height: int = 64
    steps: int = 12
    guidance: float = 4.0
    seed: int = 0

    def validate(self) -> None:
        """Raise InvalidSpecError for input no backend should start on."""
        if not self.prompt or not self.prompt.strip():
            raise InvalidSpecError("prompt is empty")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise InvalidSpecError(f"prompt has {len(self.prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
        if not MIN_STEPS <= self.steps <= MAX_STEPS:
            raise InvalidSpecError(f"steps must be in {MIN_STEPS}..{MAX_STEPS}, got {self.steps}")
        if self.guidance < 0:
            raise InvalidSpecError(f"guidance must be >= 0, got {self.guidance}")
        if self.seconds <= 0:
            raise InvalidSpecError(f"seconds must be positive, got {self.seconds}")
        if self.width <= 0 or self.height <= 0:
            raise InvalidSpecError(f"size must be positive, got {self.width}x{self.height}")

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass
class Clip:
    """A generated or rendered clip: uint8 frames shaped (frames, height, width, 3) at `fps`."""

    frames: np.ndarray
    fps: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (T, H, W, 3), got {self.frames.dtype} {self.frames.shape}")

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps

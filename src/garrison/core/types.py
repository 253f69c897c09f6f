"""Plain data types shared by every layer: what a video request asks for and what a generation returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_PROMPT_CHARS = 1000
MIN_STEPS, MAX_STEPS = 1, 1000


class InvalidSpecError(ValueError):
    """A request that cannot be generated as asked; the message says why in words a user can act on."""


# The built-in sampler's defaults. 24 Euler steps at guidance 3: on the shipped weights, 12 steps left the object
# out of about 1 clip in 20 and guidance 4-7 washed it out more often (docs/measurements.md, "Sampler defaults").
DEFAULT_STEPS = 24
DEFAULT_GUIDANCE = 3.0


@dataclass(frozen=True)
class VideoSpec:
    """What a caller asks for. Sizes are width x height in pixels, as OpenAI's `size` ("1280x720")."""

    prompt: str
    seconds: int = 2
    width: int = 64
    height: int = 64
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    seed: int = 0
    native_scale: float = 1.0  # < 1 renders at a smaller native size and scales up (the governor's quality ladder)

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
        if not 0.25 <= self.native_scale <= 1.0:
            raise InvalidSpecError(f"native_scale must be in 0.25..1, got {self.native_scale}")
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


# --- energy and devices ------------------------------------------------------------------------------------------

ENERGY_SOURCES = ("nvml", "rapl", "estimate")


@dataclass(frozen=True)
class Device:
    """One device energy is measured on: a GPU (NVML) or the host CPU (RAPL package or estimate).

    `id` is the key used everywhere a number is per device ("gpu:0", "cpu:0"); `chip` is the hardware catalog key
    that gives its peak FLOP/s and TDP ("h100-sxm", "cpu"), None when the catalog does not know the part.
    """

    id: str
    kind: str
    index: int
    name: str
    chip: str | None = None
    uuid: str | None = None
    cores: int | None = None


@dataclass(frozen=True)
class Measurement:
    """Energy over one metering window.

    `source` says where the joules came from: "nvml" (the GPU's own counter or its integrated power readings),
    "rapl" (the CPU package counter) or "estimate" (a stated model, no counter). `notes` carries every correction
    the meter made (a counter wrap, a skipped reading) so that no adjusted number passes silently.
    `busy_s_by_device` is the device's busy time in the window where the meter saw it (CPU-seconds for a CPU).
    """

    name: str
    seconds: float
    joules_by_device: dict[str, float]
    source: str
    start_unix_s: float = 0.0
    notes: tuple[str, ...] = ()
    busy_s_by_device: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in ENERGY_SOURCES:
            raise ValueError(f"energy source must be one of {ENERGY_SOURCES}, got {self.source!r}")
        if not self.seconds >= 0:
            raise ValueError(f"window seconds must be >= 0, got {self.seconds}")
        for device_id, joules in self.joules_by_device.items():
            if not (joules >= 0 and joules != float("inf")):
                raise ValueError(f"joules for {device_id} must be finite and >= 0, got {joules}")

    @property
    def joules(self) -> float:
        """Total joules over all metered devices."""
        return math.fsum(self.joules_by_device.values())

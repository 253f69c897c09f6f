"""Plain types for the fleet: request and job states, costs, the quality ladder.

The governor, the store, the server and the planner all speak these; nothing here imports the rest of garrison.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class VideoStatus(StrEnum):
    """A video request's life, with OpenAI's names (the API shows these verbatim)."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


class JobStatus(StrEnum):
    """A training job's life. `waiting` = accepted, devices not yet granted; `preempted` never happens to training
    jobs within their guarantee, only to work beyond it."""

    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Cost:
    """What one request or job is predicted (or measured) to take: device-seconds, joules and FLOPs."""

    device_s: float
    joules: float
    flops: float = 0.0


@dataclass(frozen=True)
class QualityLevel:
    """One rung of the serving quality ladder.

    Rung 0 is what the caller asked for. Going down the ladder first cuts denoising steps (`max_steps`), then renders
    at a smaller native size (`native_scale` of the model's native short side) and scales up; the clip is never
    shorter than asked.
    """

    level: int
    max_steps: int | None
    native_scale: float
    name: str

    def steps_for(self, requested_steps: int) -> int:
        return requested_steps if self.max_steps is None else min(requested_steps, self.max_steps)


# Fewer steps first (the cheapest loss of quality for the built-in model), then a smaller native size.
QUALITY_LADDER: tuple[QualityLevel, ...] = (
    QualityLevel(0, None, 1.0, "full"),
    QualityLevel(1, 8, 1.0, "8-steps"),
    QualityLevel(2, 6, 1.0, "6-steps"),
    QualityLevel(3, 4, 1.0, "4-steps"),
    QualityLevel(4, 4, 0.75, "4-steps-0.75x"),
    QualityLevel(5, 4, 0.5, "4-steps-0.5x"),
)

"""Request and response bodies of the HTTP API, as pydantic models (they are also the OpenAPI schema).

The video objects follow the official `openai` SDK's types (openai/types/video*.py) field for field; garrison's own
facts ride in one extra key, `garrison`, which the SDK keeps as an extra attribute.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from garrison.core.types import DEFAULT_GUIDANCE, DEFAULT_STEPS, MAX_PROMPT_CHARS

# Durations the SDK can send ("4", "8", "12", its default "4") and the built-in model's own shortest, "2".
SECONDS_ALLOWED: tuple[str, ...] = ("2", "4", "8", "12")
SDK_SIZES: tuple[str, ...] = ("720x1280", "1280x720", "1024x1792", "1792x1024")
NATIVE_SIZES: tuple[str, ...] = ("64x64", "112x64", "64x112")
SIZES_ALLOWED: tuple[str, ...] = SDK_SIZES + NATIVE_SIZES
DEFAULT_SECONDS = "4"  # the SDK's documented default
DEFAULT_SIZE = "720x1280"  # the SDK's documented default
DEFAULT_MODEL = "sora-2"
# Model names clients send; all are served by the built-in model, and the response says which model rendered it.
MODELS_ALLOWED: tuple[str, ...] = (
    "sora-2",
    "sora-2-pro",
    "sora-2-2025-10-06",
    "sora-2-pro-2025-10-06",
    "sora-2-2025-12-08",
    "garrison-builtin-dit",
)
MAX_STEPS_API = 50  # more denoising steps than this buys nothing on the built-in model and costs linearly
MAX_GUIDANCE = 20.0
MAX_SEED = 2**31 - 1
MAX_NAME_CHARS = 100


def reject_control_chars(value: str, field: str) -> str:
    # NUL cannot be stored in PostgreSQL text and no prompt needs control characters other than whitespace.
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        raise ValueError(f"{field} contains control characters")
    return value


class VideoCreate(BaseModel):
    """POST /v1/videos, as JSON or multipart/form-data (what the SDK sends)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="What the video shows.", min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str = Field(DEFAULT_MODEL, description=f"One of {', '.join(MODELS_ALLOWED)}; all run the built-in model.")
    seconds: str = Field(DEFAULT_SECONDS, description=f"Clip length: {', '.join(SECONDS_ALLOWED)}.")
    size: str = Field(DEFAULT_SIZE, description=f"WIDTHxHEIGHT: {', '.join(SIZES_ALLOWED)}.")
    # garrison's own knobs (send them with the SDK's extra_body); defaults are deterministic so that a retried
    # create with the same Idempotency-Key carries the same parameters.
    steps: int = Field(
        DEFAULT_STEPS, ge=1, le=MAX_STEPS_API, description="Denoising steps asked for (the governor may use fewer)."
    )
    guidance: float = Field(DEFAULT_GUIDANCE, ge=0.0, le=MAX_GUIDANCE, description="Classifier-free guidance scale.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Same seed, same clip.")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt is blank")
        return reject_control_chars(v, "prompt")

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if v not in MODELS_ALLOWED:
            raise ValueError(f"unknown model {v[:60]!r}; use one of {', '.join(MODELS_ALLOWED)}")
        return v

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds(cls, v: Any) -> str:
        # The SDK sends a string; JSON callers often send a number. Both are fine, nothing else is.
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError(f"seconds must be one of {', '.join(SECONDS_ALLOWED)} (a string or a number)")
        if isinstance(v, float):
            if not math.isfinite(v) or v != int(v):
                raise ValueError(f"seconds must be one of {', '.join(SECONDS_ALLOWED)}, got {v}")
            v = int(v)
        text = str(v).strip()
        if text not in SECONDS_ALLOWED:
            shown = text[:20]
            if not text.isdigit():
                raise ValueError(f"seconds must be a whole number, one of {', '.join(SECONDS_ALLOWED)}; got {shown!r}")
            raise ValueError(f"seconds must be one of {', '.join(SECONDS_ALLOWED)}; got {shown}")
        return text

    @field_validator("size")
    @classmethod
    def _size(cls, v: str) -> str:
        if v not in SIZES_ALLOWED:
            raise ValueError(f"unsupported size {v[:30]!r}; use one of {', '.join(SIZES_ALLOWED)}")
        return v


class VideoError(BaseModel):
    code: str
    message: str


class Estimate(BaseModel):
    device_s: float | None = None
    joules: float | None = None


class GarrisonVideoInfo(BaseModel):
    """What garrison knows about a video beyond OpenAI's fields."""

    model_used: str = Field(description="The model that renders it.")
    quality_level: int | None = Field(None, description="Rung of the quality ladder it was rendered at.")
    quality_name: str | None = None
    steps_requested: int
    steps_used: int | None = None
    native_size: str = Field(description="The size the model renders natively before scaling.")
    scaled: bool = Field(description="True when the output is scaled up from native_size.")
    joules: float | None = None
    energy_source: str | None = Field(None, description="nvml | rapl | estimate")
    cost_usd: float | None = None
    co2_g: float | None = None
    flops: float | None = None
    seconds_wall: float | None = None
    device_id: str | None = None
    attempts: int = 0
    seed: int
    guidance: float
    provenance: dict[str, Any] | None = None
    estimated: Estimate = Field(default_factory=Estimate)


class VideoObject(BaseModel):
    """openai.types.Video, plus `garrison`."""

    id: str
    object: Literal["video"] = "video"
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    model: str
    progress: int
    prompt: str | None = None
    remixed_from_video_id: str | None = None
    seconds: str
    size: str
    status: Literal["queued", "in_progress", "completed", "failed"]
    error: VideoError | None = None
    garrison: GarrisonVideoInfo


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class JobCreate(BaseModel):
    """POST /v1/jobs: a training job with a guaranteed device count.

    Either `command` (argv, run as given) or `preset: "train"` (the built-in `garrison train` with `steps`).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    devices: int = Field(1, ge=1, le=1024, description="Devices guaranteed to the job.")
    command: list[str] | None = Field(None, min_length=1, max_length=256)
    preset: Literal["train"] | None = None
    steps: int | None = Field(None, ge=1, le=1_000_000, description="Optimizer steps of the train preset.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return reject_control_chars(v, "name")

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            for arg in v:
                if len(arg) > 4096:
                    raise ValueError("command arguments are limited to 4096 characters")
                reject_control_chars(arg, "command")
            if not v[0].strip():
                raise ValueError("command[0] is empty")
        return v


class JobObject(BaseModel):
    id: str
    object: Literal["training.job"] = "training.job"
    name: str
    command: list[str]
    devices_requested: int
    devices_held: list[str]
    status: str
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    pid: int | None = None
    steps_done: int | None = None
    throughput: float | None = None
    joules: float | None = None
    error: str | None = None


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobObject]


class Gate(BaseModel):
    state: str = Field(description="online | degraded | offline (offline too when no governor has reported)")
    reason: str


class FleetPower(BaseModel):
    power_w: float | None = None
    power_cap_w: float | None = None
    headroom_w: float | None = None
    sampled_at: float | None = None
    age_s: float | None = None


class FleetObject(BaseModel):
    object: Literal["fleet"] = "fleet"
    governor: str = Field(description="reporting | stale | offline")
    devices: list[dict[str, Any]] | dict[str, Any]
    pools: dict[str, Any] | list[Any]
    power: FleetPower
    gate: Gate
    serving: dict[str, Any]
    queue: dict[str, Any]
    decisions: list[dict[str, Any]]

"""What the store returns: plain frozen dataclasses, never live ORM objects, so they cross threads and processes.

Times are unix seconds (float); ids are strings with a prefix (`ten_`, `video_`, `job_`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from garrison.core.fleet import Cost, JobStatus, VideoStatus


@dataclass(frozen=True)
class Tenant:
    """A caller of the API. Quotas of None mean unlimited. `key_prefix` (first 8 characters of the key) is for
    display only; the key itself is never stored."""

    id: str
    name: str
    admin: bool
    created_at: float
    revoked_at: float | None
    videos_per_day: int | None
    joules_per_day: float | None
    requests_per_minute: int | None
    key_prefix: str

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class Usage:
    """What a tenant used since a time: videos created (refusals not counted) and joules of those completed."""

    videos: int
    joules: float


@dataclass(frozen=True)
class Video:
    """One video request and, once done, what it took. `status` is a VideoStatus (a str)."""

    id: str
    tenant_id: str
    prompt: str
    model: str
    seconds: int
    size: str
    steps: int
    guidance: float
    seed: int
    status: VideoStatus
    progress: int
    created_at: float
    started_at: float | None
    completed_at: float | None
    error_code: str | None
    error_message: str | None
    idempotency_key: str | None
    attempts: int
    worker_id: str | None
    device_id: str | None
    lease_expires_at: float | None
    quality_level: int | None
    steps_used: int | None
    native_size: str | None
    scaled: bool | None
    path: str | None
    thumbnail_path: str | None
    seconds_wall: float | None
    joules: float | None
    energy_source: str | None
    cost_usd: float | None
    co2_g: float | None
    flops: float | None
    estimated_device_s: float | None
    estimated_joules: float | None
    policy: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    deleted_at: float | None = None
    estimated_flops: float | None = None

    @property
    def estimated_cost(self) -> Cost | None:
        """The admission estimate as a Cost, None when none was given."""
        if self.estimated_device_s is None or self.estimated_joules is None:
            return None
        return Cost(self.estimated_device_s, self.estimated_joules, self.estimated_flops or 0.0)


@dataclass(frozen=True)
class Job:
    """A training job. `devices_held` lists device ids granted now; `throughput` is items/s."""

    id: str
    name: str
    command: list[str]
    devices_requested: int
    devices_held: list[str]
    status: JobStatus
    created_at: float
    started_at: float | None
    finished_at: float | None
    pid: int | None
    steps_done: int
    throughput: float | None
    joules: float
    error: str | None
    tenant_id: str | None


@dataclass(frozen=True)
class QueueStats:
    """The request queue now. `*_last_minute` count videos that finished in the last 60 s."""

    queued: int
    in_progress: int
    oldest_queued_age_s: float | None
    completed_last_minute: int
    failed_last_minute: int
    joules_last_minute: float


@dataclass(frozen=True)
class Decision:
    """One governor decision, with the reading it was made on."""

    id: int
    ts: float
    tick: int
    action: str
    target: str | None
    reason: str
    reading: dict[str, Any]


@dataclass(frozen=True)
class Sample:
    """One governor sample for charts: power against the cap, allocation, queue depth, gate state."""

    id: int
    ts: float
    power_w: float
    power_cap_w: float
    allocation: dict[str, Any]
    queue_depth: int
    gate: str
    extra: dict[str, Any]


@dataclass(frozen=True)
class Event:
    """Something that happened to a subject (a video, job or tenant id), for the audit trail and the dashboard."""

    id: int
    ts: float
    kind: str
    subject_id: str | None
    data: dict[str, Any]

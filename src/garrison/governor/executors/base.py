"""What an executor does for the governor: start, drain and stop serving workers and training jobs on devices.

The governor's policies decide (pure functions of state); an executor carries the decisions out on real processes
(local.py: OS processes on this machine; ray.py: Ray actors across machines) and reports what happened. Both speak
this interface, so the runtime loop in governor/runtime.py does not know which one it drives.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from garrison.core.types import Device


@dataclass(frozen=True)
class ProcessEvent:
    """Something a process did between two polls: a worker that died, a training job that ended."""

    kind: str  # "worker_exited" | "job_exited"
    key: str  # worker id or job id
    device_ids: tuple[str, ...]
    returncode: int | None
    detail: str = ""


@dataclass(frozen=True)
class TrainingProgress:
    """What a training process has reported through its metrics file: steps done and recent steps per second."""

    steps: int = 0
    steps_per_s: float | None = None
    last_report_unix_s: float | None = None
    started_unix_s: float | None = None


@dataclass
class ExecutorView:
    """Who runs where now, as the executor sees it."""

    serving: dict[str, str] = field(default_factory=dict)  # device id -> worker id
    draining: dict[str, str] = field(default_factory=dict)  # device id -> worker id (takes no new work)
    training: dict[str, tuple[str, ...]] = field(default_factory=dict)  # job id -> device ids


class Executor(ABC):
    """Carries out the governor's decisions on real workers."""

    devices: list[Device]

    @abstractmethod
    def start_serving(self, device_id: str) -> str:
        """Start a serving worker on `device_id`; returns its worker id."""

    @abstractmethod
    def drain_serving(self, device_id: str) -> None:
        """Tell the worker on `device_id` to take no new work (it finishes what it holds)."""

    @abstractmethod
    def stop_serving(self, device_id: str) -> list[str]:
        """Stop the worker on `device_id` now; returns the ids of the videos it held, requeued (never lost)."""

    @abstractmethod
    def start_training(self, job_id: str, command: list[str], device_ids: list[str]) -> None:
        """Run a training job's command on `device_ids`."""

    @abstractmethod
    def stop_training(self, job_id: str) -> None:
        """Stop a training job (SIGTERM, then SIGKILL after a grace period)."""

    @abstractmethod
    def training_progress(self, job_id: str) -> TrainingProgress:
        """Throughput the job has reported."""

    @abstractmethod
    def poll(self) -> list[ProcessEvent]:
        """Reap processes that ended since the last poll."""

    @abstractmethod
    def view(self) -> ExecutorView:
        """Who runs where now."""

    def worker_on(self, device_id: str) -> tuple[str, float] | None:
        """(worker id, unix start time) of the serving worker on `device_id`; None when there is none or the
        executor cannot tell (then the runtime treats the device as reporting)."""
        return None

    @abstractmethod
    def shutdown(self) -> None:
        """Stop everything this executor started; serving work in flight is requeued."""

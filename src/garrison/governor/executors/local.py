"""The embedded executor: real OS processes on this machine, one per serving worker and one per training job.

Devices are whole units, as GPUs are: on a GPU machine a process sees only its GPUs (CUDA_VISIBLE_DEVICES); on a
CPU-only machine each logical CPU is a device ("core:N") and a process is pinned to its cores with
sched_setaffinity and told to use that many threads, so serving and training do not time-slice each other's cores.

Serving workers pull from the store's queue (governor/executors/serving_worker.py). Draining sets the store flag
`worker.<id>.drain`, so the worker takes no new video and finishes the one it holds; stopping sends SIGTERM (the
worker requeues what it holds and exits), then SIGKILL after `kill_grace_s`; whatever a killed worker still held is
requeued here, so nothing it accepted is lost. Training jobs report throughput by appending JSON lines
({"step": N, "unix_s": T}) to the file named by $GARRISON_METRICS_FILE, which `garrison train` does.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from garrison.core.types import Device
from garrison.governor.executors.base import Executor, ExecutorView, ProcessEvent, TrainingProgress
from garrison.hardware.power_limit import CpuSlotLimiter
from garrison.store import Store

log = logging.getLogger(__name__)

METRICS_ENV = "GARRISON_METRICS_FILE"


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the thread that started it dies (Linux PR_SET_PDEATHSIG), so a
    governor killed with SIGKILL leaves no orphan workers holding devices; what they held is requeued by them on
    SIGTERM, and by the next governor's `recover()` otherwise."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


@dataclass
class _Proc:
    kind: str  # "serving" | "training"
    key: str  # worker id or job id
    device_ids: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    log_path: Path
    metrics_path: Path | None = None
    stopping: bool = False
    started_unix_s: float = 0.0


class LocalExecutor(Executor):
    """Runs workers and training jobs as OS processes pinned to their devices."""

    def __init__(
        self,
        devices: list[Device],
        store: Store,
        store_url: str,
        content_dir: Path,
        run_dir: Path,
        *,
        python: str = sys.executable,
        kill_grace_s: float = 10.0,
        worker_args: list[str] | None = None,
        cpu_limiter: CpuSlotLimiter | None = None,
    ):
        if not devices:
            raise ValueError("an executor needs at least one device")
        self.devices = devices
        self._by_id = {d.id: d for d in devices}
        self.store = store
        self.store_url = store_url
        self.content_dir = Path(content_dir)
        self.run_dir = Path(run_dir)
        self.python = python
        self.kill_grace_s = kill_grace_s
        self.worker_args = worker_args or []
        self.cpu_limiter = cpu_limiter if cpu_limiter is not None and cpu_limiter.available else None
        self._serving: dict[str, _Proc] = {}  # device id -> worker
        self._draining: set[str] = set()
        self._training: dict[str, _Proc] = {}  # job id -> process
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.content_dir.mkdir(parents=True, exist_ok=True)

    # --- placement ------------------------------------------------------------------------------------------------

    def _device(self, device_id: str) -> Device:
        try:
            return self._by_id[device_id]
        except KeyError:
            raise ValueError(f"unknown device {device_id!r}; this executor has {sorted(self._by_id)}") from None

    def _env_for(self, device_ids: list[str]) -> dict[str, str]:
        env = dict(os.environ)
        devices = [self._device(d) for d in device_ids]
        if all(d.kind == "gpu" for d in devices):
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d.index) for d in devices)
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the indices are NVML's: make CUDA number GPUs the same way
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU slot must not wander onto a GPU
            threads = str(sum(d.cores or 1 for d in devices))
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, GARRISON_TORCH_THREADS=threads)
        return env

    def _pin(self, pid: int, device_ids: list[str]) -> None:
        cores = [self._device(d) for d in device_ids if self._device(d).kind == "cpu-core"]
        try:
            if cores and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(pid, {d.index for d in cores})
        except ProcessLookupError:  # it already exited; poll() will report it
            return
        if self.cpu_limiter is not None and len(cores) == 1:  # a slot's power limit applies to its process
            try:
                self.cpu_limiter.attach(cores[0], pid)
            except OSError as exc:  # the process runs, unlimited; the controller sees the power and acts on others
                log.warning("could not put pid %d in %s's power-limit group: %s", pid, cores[0].id, exc)

    def _spawn(self, kind: str, key: str, command: list[str], device_ids: list[str], metrics: Path | None) -> _Proc:
        log_path = self.run_dir / "logs" / f"{key}.log"
        env = self._env_for(device_ids)
        if metrics is not None:
            env[METRICS_ENV] = str(metrics)
        with log_path.open("ab") as log_file:
            popen = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        try:
            self._pin(popen.pid, device_ids)
        except BaseException:  # never leave a process running that this executor does not track
            popen.kill()
            popen.wait()
            raise
        log.info("started %s %s on %s (pid %d): %s", kind, key, ",".join(device_ids), popen.pid, " ".join(command))
        return _Proc(kind, key, tuple(device_ids), popen, log_path, metrics, started_unix_s=time.time())

    # --- serving ----------------------------------------------------------------------------------------------------

    def start_serving(self, device_id: str) -> str:
        self._device(device_id)
        if device_id in self._serving:
            raise ValueError(f"{device_id} already runs worker {self._serving[device_id].key}")
        if any(device_id in p.device_ids for p in self._training.values()):
            raise ValueError(f"{device_id} is held by a training job")
        worker_id = f"w-{device_id.replace(':', '')}-{uuid.uuid4().hex[:6]}"
        command = [
            self.python, "-m", "garrison.governor.executors.serving_worker",
            "--store", self.store_url, "--worker-id", worker_id, "--device", device_id,
            "--content-dir", str(self.content_dir), *self.worker_args,
        ]  # fmt: skip
        self._serving[device_id] = self._spawn("serving", worker_id, command, [device_id], None)
        return worker_id

    def drain_serving(self, device_id: str) -> None:
        proc = self._serving.get(device_id)
        if proc is None:
            return
        self.store.set_setting(f"worker.{proc.key}.drain", True)
        self._draining.add(device_id)

    def stop_serving(self, device_id: str) -> list[str]:
        proc = self._serving.pop(device_id, None)
        self._draining.discard(device_id)
        if proc is None:
            return []
        proc.stopping = True
        self._terminate(proc)
        return self._requeue_held(proc.key)

    def _requeue_held(self, worker_id: str) -> list[str]:
        requeued = []
        for video in self.store.videos_held_by(worker_id):
            if self.store.requeue_video(video.id, f"worker {worker_id} stopped"):
                requeued.append(video.id)
        return requeued

    # --- training ---------------------------------------------------------------------------------------------------

    def start_training(self, job_id: str, command: list[str], device_ids: list[str]) -> None:
        if job_id in self._training:
            raise ValueError(f"job {job_id} is already running")
        busy = {d for p in self._training.values() for d in p.device_ids} | set(self._serving)
        clash = sorted(set(device_ids) & busy)
        if clash:
            raise ValueError(f"devices {clash} are in use; reclaim them before starting {job_id}")
        metrics = self.run_dir / "jobs" / f"{job_id}.metrics.jsonl"
        metrics.parent.mkdir(parents=True, exist_ok=True)
        self._training[job_id] = self._spawn("training", job_id, command, device_ids, metrics)

    def stop_training(self, job_id: str) -> None:
        proc = self._training.pop(job_id, None)
        if proc is not None:
            proc.stopping = True
            self._terminate(proc)

    def training_progress(self, job_id: str) -> TrainingProgress:
        proc = self._training.get(job_id)
        path = proc.metrics_path if proc else self.run_dir / "jobs" / f"{job_id}.metrics.jsonl"
        return read_training_metrics(path) if path is not None else TrainingProgress()

    # --- lifecycle --------------------------------------------------------------------------------------------------

    def _terminate(self, proc: _Proc) -> None:
        if proc.popen.poll() is not None:
            return
        try:
            os.killpg(proc.popen.pid, signal.SIGTERM)
            if proc.kind == "serving":  # a second SIGTERM: give the current video back now (the grace is over)
                time.sleep(0.1)
                os.killpg(proc.popen.pid, signal.SIGTERM)
            proc.popen.wait(timeout=self.kill_grace_s)
        except subprocess.TimeoutExpired:
            log.warning("%s %s ignored SIGTERM for %.0f s: SIGKILL", proc.kind, proc.key, self.kill_grace_s)
            os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait()
        except ProcessLookupError:
            proc.popen.wait()

    def poll(self) -> list[ProcessEvent]:
        events = []
        for device_id, proc in list(self._serving.items()):
            code = proc.popen.poll()
            if code is not None:
                del self._serving[device_id]
                self._draining.discard(device_id)
                requeued = self._requeue_held(proc.key)
                detail = f"exit {code}; requeued {requeued}" if requeued else f"exit {code}"
                log.warning("worker %s on %s exited (%s)", proc.key, device_id, detail)
                events.append(ProcessEvent("worker_exited", proc.key, proc.device_ids, code, detail))
        for job_id, proc in list(self._training.items()):
            code = proc.popen.poll()
            if code is not None:
                del self._training[job_id]
                events.append(ProcessEvent("job_exited", job_id, proc.device_ids, code, str(proc.log_path)))
        return events

    def view(self) -> ExecutorView:
        return ExecutorView(
            serving={d: p.key for d, p in self._serving.items() if d not in self._draining},
            draining={d: self._serving[d].key for d in self._draining if d in self._serving},
            training={j: p.device_ids for j, p in self._training.items()},
        )

    def worker_on(self, device_id: str) -> tuple[str, float] | None:
        """(worker id, unix start time) of the serving worker on `device_id`, if one runs there."""
        proc = self._serving.get(device_id)
        return (proc.key, proc.started_unix_s) if proc else None

    def pids_by_device(self) -> dict[str, list[int]]:
        """Process ids running on each device (the power sampler's "pinned processes" scope reads these)."""
        out: dict[str, list[int]] = {}
        for proc in list(self._serving.values()) + list(self._training.values()):
            for device_id in proc.device_ids:
                out.setdefault(device_id, []).append(proc.popen.pid)
        return out

    def pids(self) -> dict[str, int]:
        """Process ids by worker or job id (the soak benchmark kills workers by these)."""
        procs = list(self._serving.values()) + list(self._training.values())
        return {p.key: p.popen.pid for p in procs}

    def shutdown(self) -> None:
        for device_id in list(self._serving):
            self.stop_serving(device_id)
        for job_id in list(self._training):
            self.stop_training(job_id)


def read_training_metrics(path: Path, window: int = 5) -> TrainingProgress:
    """Steps done and steps/s over the last `window` reports of a metrics file; tolerant of a half-written line."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return TrainingProgress()
    reports = []
    for line in lines:
        try:
            row = json.loads(line)
            reports.append((int(row["step"]), float(row["unix_s"])))
        except (ValueError, KeyError, TypeError):
            continue  # the writer may be mid-line
    if not reports:
        return TrainingProgress()
    steps, last_s = reports[-1]
    first_steps, first_s = reports[max(0, len(reports) - 1 - window)]
    rate = (steps - first_steps) / (last_s - first_s) if last_s > first_s else None
    return TrainingProgress(steps=steps, steps_per_s=rate, last_report_unix_s=last_s, started_unix_s=reports[0][1])


def wait_for(predicate: object, timeout_s: float, poll_s: float = 0.05) -> bool:
    """Poll `predicate()` until true or `timeout_s` passes (tests and the demo use it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(poll_s)
    return False

"""The Ray executor, for fleets beyond one machine: serving workers as Ray actors, training jobs in placement groups.

(The module is `ray_executor`, not `ray`, so that its test mirrors it as tests/governor/executors/test_ray_executor.py
and so that no script run from this folder ever imports it in place of the `ray` package.)

Devices are the cluster's Ray GPU resources: every unit of "GPU" on every alive node is one device,
"gpu:<node>:<index>" (`<node>` the first 8 hex digits of the Ray node id, which stays unique where several nodes
share one address, as on a `ray.cluster_utils.Cluster`). A cluster started with fake GPUs
(`ray.init(num_gpus=4)`) is a fleet of four devices on a CPU-only machine.

Placement: Ray reserves a count of GPUs on a node; it cannot be told which GPU index an actor gets. The governor,
though, names devices (its power limits and meters are per GPU), so an actor is pinned to its device's node (a node
affinity strategy; label selectors for placement-group bundles) with `num_gpus=1` per device, and the executor sets
CUDA_VISIBLE_DEVICES to the device's own index (vLLM's Ray executor likewise sets it itself). Ray's bookkeeping and the executor's agree on
how many GPUs of each node are taken as long as this executor is the only one placing GPU work on the cluster; the
GPU ids Ray assigned are reported by `placement()` for comparison.

Serving has the local executor's semantics. A worker is an actor (`max_restarts=0`: the governor decides what to
restart) whose `run` method runs `serving_worker.run_worker` until told to stop; draining sets the store flag
`worker.<id>.drain`; stopping asks the worker to give its video back (`abort`), waits `kill_grace_s`, then
`ray.kill`s it, and requeues whatever the store still shows it holding (`store.videos_held_by`), so nothing it
accepted is lost. `poll` sees an actor that died (killed, its process SIGKILLed, its node lost) because its pending
`run` call fails, and requeues its videos.

Training: a job gets a placement group of one {"GPU": 1} bundle per device (STRICT_PACK when its devices share a
node, else PACK), each bundle pinned to its device's node. On each node the job touches, one actor scheduled in the
group runs the command as a subprocess with CUDA_VISIBLE_DEVICES set to that node's devices and NODE_RANK / NNODES
(torchrun's names; rendezvous is the command's business). The subprocess appends its metrics to a file on its own
node ($GARRISON_METRICS_FILE, node-local so that no shared file system is needed); the executor pulls new complete
lines from the node-rank-0 actor and mirrors them into `<run_dir>/jobs/<job>.metrics.jsonl` on this machine, where
`read_training_metrics` reads them as the local executor does.

Ray starts its workers at nice 15 so that its own daemons keep priority. On nodes whose CPUs also do other work (a
CPU-only fleet, a shared machine) that starves the actors; start such clusters with RAY_worker_niceness=0 in the
environment of `ray start` (the tests do).

Hand-written here: the subprocess is started through a three-line launcher that asks the kernel
(prctl PR_SET_PDEATHSIG) to kill it when its actor dies, because `ray.kill` and a SIGKILLed actor process would
otherwise leave the training process running on GPUs Ray has already given back. Python's `preexec_fn` would do the
same without the launcher, but it is unsafe in a process with threads, which every Ray actor is.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from garrison.core.fleet import VideoStatus
from garrison.core.types import Device
from garrison.governor.executors.base import Executor, ExecutorView, ProcessEvent, TrainingProgress
from garrison.governor.executors.local import METRICS_ENV, read_training_metrics
from garrison.store import NotFound, Store, open_store

log = logging.getLogger(__name__)

NODE_PREFIX_LEN = 8
LOG_TAIL_BYTES = 16_384
METRICS_PULL_MAX_BYTES = 4 << 20
# Environment the actors inherit from the process that drives the executor (the cluster's workers were started
# with the environment of whoever started the cluster, which need not be ours).
FORWARDED_ENV_PREFIXES = ("GARRISON_",)

# Sets the parent-death signal, checks the parent did not die before that, then becomes the command.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG\n"
    "os.getppid() == int(sys.argv[1]) or os._exit(137)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


# --- devices -----------------------------------------------------------------------------------------------------


def discover_ray_devices() -> list[Device]:
    """Every GPU unit of every alive node of the connected Ray cluster, as devices "gpu:<node>:<index>".

    Raises:
        RuntimeError: Ray is not initialised in this process.
    """
    if not ray.is_initialized():
        raise RuntimeError("Ray is not initialised: call ray.init(address=...) or let RayExecutor connect")
    devices = []
    for node in sorted(ray.nodes(), key=lambda n: n["NodeID"]):
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        accelerator = next((k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")), None)
        prefix = node["NodeID"][:NODE_PREFIX_LEN]
        for index in range(int(resources.get("GPU", 0))):
            kind_name = f"GPU {index}" + (f" ({accelerator})" if accelerator else "")
            name = f"Ray node {prefix} at {node.get('NodeManagerAddress', '?')} {kind_name}"
            devices.append(Device(id=f"gpu:{prefix}:{index}", kind="gpu", index=index, name=name))
    return devices


def node_prefix(device_id: str) -> str:
    """The node part of a Ray device id ("gpu:1a2b3c4d:0" -> "1a2b3c4d")."""
    parts = device_id.split(":")
    if len(parts) != 3 or parts[0] != "gpu" or not parts[2].isdigit():
        raise ValueError(f"not a Ray device id: {device_id!r} (expected gpu:<node>:<index>)")
    return parts[1]


# --- the actors --------------------------------------------------------------------------------------------------


def _actor_info() -> dict[str, Any]:
    context = ray.get_runtime_context()
    return {
        "pid": os.getpid(),
        "node_id": context.get_node_id(),
        "ray_gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


class ServingActor:
    """A serving worker inside a Ray actor: `run` serves until `stop` (or until the actor is killed)."""

    def __init__(self, env: dict[str, str]) -> None:
        os.environ.update(env)  # before anything imports torch, so CUDA_VISIBLE_DEVICES takes effect
        self._stop = threading.Event()
        self._abort = threading.Event()

    def info(self) -> dict[str, Any]:
        return _actor_info()

    def run(
        self, store_url: str, worker_id: str, device_id: str, content_dir: str, lease_s: float, poll_s: float
    ) -> int:
        from garrison.governor.executors.serving_worker import run_worker

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        return run_worker(
            store_url,
            worker_id,
            device_id,
            Path(content_dir),
            stop=self._stop,
            abort=self._abort,
            lease_s=lease_s,
            poll_s=poll_s,
        )

    def stop(self) -> None:
        """Give the current video back to the queue at the next step and return from `run`."""
        self._stop.set()
        self._abort.set()


class TrainingActor:
    """Runs one node's share of a training job as a subprocess; serves the metrics file it writes."""

    def __init__(self, env: dict[str, str]) -> None:
        os.environ.update(env)
        self._dir = Path(tempfile.mkdtemp(prefix="garrison-train-"))
        self.metrics_path = self._dir / "metrics.jsonl"
        self.log_path = self._dir / "output.log"
        self._popen: subprocess.Popen[bytes] | None = None
        self._cancelled = threading.Event()
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {**_actor_info(), "metrics_path": str(self.metrics_path), "log_path": str(self.log_path)}

    def run(self, command: list[str], env: dict[str, str]) -> dict[str, Any]:
        """Run the command to its end; returns its exit code and the tail of its output."""
        full_env = {**os.environ, **env, METRICS_ENV: str(self.metrics_path)}
        launcher = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *command]
        with self._lock:
            if self._cancelled.is_set():
                return {"returncode": None, "log_tail": "cancelled before it started"}
            with self.log_path.open("ab") as out:
                self._popen = subprocess.Popen(
                    launcher, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
                )
        # This thread forked the child and waits for it here, so it outlives the child (PDEATHSIG follows the
        # forking thread, not the process).
        returncode = self._popen.wait()
        return {"returncode": returncode, "log_tail": self.log_tail()}

    def log_tail(self) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(max(0, self.log_path.stat().st_size - LOG_TAIL_BYTES))
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def metrics_since(self, offset: int) -> bytes:
        """Complete lines of the metrics file from byte `offset` (a half-written last line waits for the next call)."""
        try:
            with self.metrics_path.open("rb") as f:
                f.seek(offset)
                data = f.read(METRICS_PULL_MAX_BYTES)
        except FileNotFoundError:
            return b""
        return data[: data.rfind(b"\n") + 1]

    def terminate(self, grace_s: float) -> int | None:
        """SIGTERM the command's process group, SIGKILL it after `grace_s`; returns its exit code."""
        with self._lock:
            self._cancelled.set()
            popen = self._popen
        if popen is None or popen.poll() is not None:
            return None if popen is None else popen.returncode
        try:
            os.killpg(popen.pid, signal.SIGTERM)
            return popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            return popen.wait()
        except ProcessLookupError:
            return popen.wait()


# Actors serve other calls (stop, info, metrics) while `run` blocks one of their threads.
_ServingRemote = ray.remote(max_restarts=0, max_concurrency=4)(ServingActor)
_TrainingRemote = ray.remote(max_restarts=0, max_concurrency=4)(TrainingActor)


# --- the executor ------------------------------------------------------------------------------------------------


@dataclass
class _Worker:
    worker_id: str
    device_id: str
    actor: Any
    run_ref: Any
    started_unix_s: float


@dataclass
class _Job:
    job_id: str
    device_ids: tuple[str, ...]
    group: PlacementGroup
    actors: list[Any]  # one per node, node rank 0 first
    run_refs: list[Any]
    metrics_path: Path
    log_path: Path
    metrics_offset: int = 0
    metrics_ref: Any = None
    results: dict[int, dict[str, Any]] = field(default_factory=dict)  # node rank -> what its run returned


class RayExecutor(Executor):
    """Runs serving workers as Ray actors on Ray GPU devices and training jobs in placement groups."""

    def __init__(
        self,
        devices: list[Device] | None,
        store_url: str,
        content_dir: Path,
        run_dir: Path,
        *,
        address: str | None = None,
        store: Store | None = None,
        init_kwargs: dict[str, Any] | None = None,
        kill_grace_s: float = 10.0,
        lease_s: float = 30.0,
        poll_s: float = 0.2,
        cpus_per_actor: float = 0.0,
        actor_env: dict[str, str] | None = None,
    ):
        """Connect to Ray (unless this process already is) and check the devices exist in the cluster.

        Args:
            devices: the devices to schedule, a subset of `discover_ray_devices()`; None: all of them.
            store_url: the store every worker opens (it must be reachable from every node).
            content_dir: where workers write videos (a path every node can write and the server can read).
            run_dir: this machine's folder for logs and mirrored training metrics.
            address: `ray.init` address when not yet connected: None (start or find a local Ray), "auto", or
                "ray://host:10001".
            store: an open store for `store_url` (opened here when None).
            init_kwargs: more arguments for `ray.init`.
            kill_grace_s: how long a stopped worker or job has before it is killed.
            lease_s: the video lease workers take; poll_s: their idle poll.
            cpus_per_actor: Ray CPUs each actor reserves besides its GPU.
            actor_env: extra environment for every actor (GARRISON_* of this process is always forwarded).
        """
        if kill_grace_s < 0 or lease_s <= 0 or poll_s <= 0 or cpus_per_actor < 0:
            raise ValueError("kill_grace_s and cpus_per_actor must be >= 0, lease_s and poll_s > 0")
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=address, **(init_kwargs or {}))
        available = discover_ray_devices()
        if devices is None:
            devices = available
        known = {d.id for d in available}
        missing = sorted(d.id for d in devices if d.id not in known)
        if missing:
            raise ValueError(f"devices {missing} are not GPUs of this Ray cluster; it has {sorted(known)}")
        if not devices:
            raise ValueError("an executor needs at least one device; this Ray cluster has no GPU resources")
        self.devices = list(devices)
        self._by_id = {d.id: d for d in self.devices}
        self._node_ids = {n["NodeID"][:NODE_PREFIX_LEN]: n["NodeID"] for n in ray.nodes()}
        self.store = store if store is not None else open_store(store_url)
        self.store_url = store_url
        self.content_dir = Path(content_dir)
        self.run_dir = Path(run_dir)
        self.kill_grace_s = kill_grace_s
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.cpus_per_actor = cpus_per_actor
        self.actor_env = dict(actor_env or {})
        self._serving: dict[str, _Worker] = {}  # device id -> worker
        self._draining: set[str] = set()
        self._training: dict[str, _Job] = {}
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "jobs").mkdir(parents=True, exist_ok=True)
        self.content_dir.mkdir(parents=True, exist_ok=True)

    # --- placement ------------------------------------------------------------------------------------------------

    def _device(self, device_id: str) -> Device:
        try:
            return self._by_id[device_id]
        except KeyError:
            raise ValueError(f"unknown device {device_id!r}; this executor has {sorted(self._by_id)}") from None

    def _node_id(self, device_id: str) -> str:
        return self._node_ids[node_prefix(device_id)]

    def _busy(self) -> dict[str, str]:
        busy = {d: f"serving worker {w.worker_id}" for d, w in self._serving.items()}
        for job in self._training.values():
            busy.update({d: f"training job {job.job_id}" for d in job.device_ids})
        return busy

    def _env(self, device_ids: list[str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
        env.update(self.actor_env)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(self._device(d).index) for d in device_ids)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the indices are NVML's: make CUDA number GPUs the same way
        return env

    # --- serving ----------------------------------------------------------------------------------------------------

    def start_serving(self, device_id: str) -> str:
        self._device(device_id)
        busy = self._busy()
        if device_id in busy:
            raise ValueError(f"{device_id} is held by {busy[device_id]}")
        worker_id = f"w-{device_id.replace(':', '')}-{uuid.uuid4().hex[:6]}"
        actor = _ServingRemote.options(
            num_gpus=1,
            num_cpus=self.cpus_per_actor,
            name=worker_id,
            scheduling_strategy=NodeAffinitySchedulingStrategy(self._node_id(device_id), soft=False),
        ).remote(self._env([device_id]))
        run_ref = actor.run.remote(
            self.store_url, worker_id, device_id, str(self.content_dir), self.lease_s, self.poll_s
        )
        self._serving[device_id] = _Worker(worker_id, device_id, actor, run_ref, time.time())
        log.info("started worker %s on %s (Ray actor)", worker_id, device_id)
        return worker_id

    def drain_serving(self, device_id: str) -> None:
        worker = self._serving.get(device_id)
        if worker is None:
            return
        self.store.set_setting(f"worker.{worker.worker_id}.drain", True)
        self._draining.add(device_id)

    def stop_serving(self, device_id: str) -> list[str]:
        worker = self._serving.pop(device_id, None)
        self._draining.discard(device_id)
        if worker is None:
            return []
        held = [v.id for v in self.store.videos_held_by(worker.worker_id)]
        try:
            worker.actor.stop.remote()
        except Exception:  # the actor is already gone; killing it below is all there is to do
            log.debug("stop of %s not delivered", worker.worker_id, exc_info=True)
        ready, _ = ray.wait([worker.run_ref], timeout=self.kill_grace_s)
        if not ready:
            log.warning("worker %s did not stop within %.0f s: killing it", worker.worker_id, self.kill_grace_s)
        ray.kill(worker.actor, no_restart=True)
        requeued = self._requeue_held(worker.worker_id)
        return [v for v in held if v not in requeued and self._not_completed(v)] + requeued

    def _not_completed(self, video_id: str) -> bool:
        try:
            return self.store.get_video(video_id).status != VideoStatus.COMPLETED
        except NotFound:
            return False

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
        if not command or not all(isinstance(part, str) and part for part in command):
            raise ValueError(f"job {job_id}: the command must be a non-empty list of non-empty strings")
        if not device_ids or len(set(device_ids)) != len(device_ids):
            raise ValueError(f"job {job_id}: give one or more distinct devices, not {device_ids}")
        for d in device_ids:
            self._device(d)
        busy = self._busy()
        clash = sorted(d for d in device_ids if d in busy)
        if clash:
            raise ValueError(f"devices {clash} are in use; reclaim them before starting {job_id}")

        nodes = list(dict.fromkeys(self._node_id(d) for d in device_ids))  # node rank order: first device's first
        group = placement_group(
            [{"GPU": 1, **({"CPU": self.cpus_per_actor} if self.cpus_per_actor else {})} for _ in device_ids],
            strategy="STRICT_PACK" if len(nodes) == 1 else "PACK",
            name=f"garrison-{job_id}",
            bundle_label_selector=[{"ray.io/node-id": self._node_id(d)} for d in device_ids],
        )
        actors, run_refs = [], []
        for rank, node in enumerate(nodes):
            on_node = [d for d in device_ids if self._node_id(d) == node]
            actor = _TrainingRemote.options(
                num_gpus=1,
                num_cpus=self.cpus_per_actor,
                name=f"{job_id}-node{rank}-{uuid.uuid4().hex[:6]}",  # a restarted job must not clash
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    group, placement_group_bundle_index=device_ids.index(on_node[0])
                ),
            ).remote(self._env(on_node))
            run_env = {"NODE_RANK": str(rank), "NNODES": str(len(nodes)), "GARRISON_JOB_ID": job_id}
            actors.append(actor)
            run_refs.append(actor.run.remote(list(command), run_env))
        metrics_path = self.run_dir / "jobs" / f"{job_id}.metrics.jsonl"
        metrics_path.write_bytes(b"")  # a fresh mirror for a fresh run
        self._training[job_id] = _Job(
            job_id, tuple(device_ids), group, actors, run_refs, metrics_path, self.run_dir / "logs" / f"{job_id}.log"
        )
        log.info("started job %s on %s (%d node(s), placement group %s)", job_id, device_ids, len(nodes), group.id)

    def _pull_metrics(self, job: _Job, wait_s: float) -> None:
        """Copy new metric lines from the node-rank-0 actor into this machine's mirror (one request in flight)."""
        if job.metrics_ref is None:
            job.metrics_ref = job.actors[0].metrics_since.remote(job.metrics_offset)
        ready, _ = ray.wait([job.metrics_ref], timeout=wait_s)
        if not ready:
            return  # the actor is still being placed, or busy: the next call picks the answer up
        ref, job.metrics_ref = job.metrics_ref, None
        try:
            data: bytes = ray.get(ref)
        except ray.exceptions.RayError:
            return  # the actor died; poll() reports the job
        if data:
            with job.metrics_path.open("ab") as f:
                f.write(data)
            job.metrics_offset += len(data)

    def stop_training(self, job_id: str) -> None:
        job = self._training.pop(job_id, None)
        if job is None:
            return
        self._terminate(job)
        self._finish_job(job)

    def _terminate(self, job: _Job) -> None:
        """SIGTERM (then SIGKILL) the job's processes on every node and collect what their `run` calls returned."""
        stops = [actor.terminate.remote(self.kill_grace_s) for actor in job.actors]
        ray.wait(stops, num_returns=len(stops), timeout=self.kill_grace_s + 5.0)
        ray.wait(job.run_refs, num_returns=len(job.run_refs), timeout=5.0)
        self._collect(job, set(ray.wait(job.run_refs, num_returns=len(job.run_refs), timeout=0)[0]))

    def _collect(self, job: _Job, done: set[Any]) -> None:
        for rank, ref in enumerate(job.run_refs):
            if ref in done and rank not in job.results:
                job.results[rank] = _job_outcome(ref)

    def _finish_job(self, job: _Job) -> None:
        """Mirror the last metrics and the output, then free the actors and the placement group."""
        for _ in range(64):  # what is left, in METRICS_PULL_MAX_BYTES pieces; a dead actor answers at once
            before = job.metrics_offset
            self._pull_metrics(job, wait_s=5.0)
            if job.metrics_offset == before:
                break
        job.log_path.write_text("".join(r["log_tail"] for _, r in sorted(job.results.items())))
        for actor in job.actors:
            ray.kill(actor, no_restart=True)
        remove_placement_group(job.group)

    def training_progress(self, job_id: str) -> TrainingProgress:
        job = self._training.get(job_id)
        if job is not None:
            self._pull_metrics(job, wait_s=2.0)
            return read_training_metrics(job.metrics_path)
        return read_training_metrics(self.run_dir / "jobs" / f"{job_id}.metrics.jsonl")

    # --- lifecycle --------------------------------------------------------------------------------------------------

    def poll(self) -> list[ProcessEvent]:
        events = []
        refs = [w.run_ref for w in self._serving.values()]
        refs += [r for job in self._training.values() for r in job.run_refs]
        if not refs:
            return events
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        done = set(ready)
        for device_id, worker in list(self._serving.items()):
            if worker.run_ref not in done:
                continue
            del self._serving[device_id]
            self._draining.discard(device_id)
            code, detail = _outcome(worker.run_ref)
            ray.kill(worker.actor, no_restart=True)
            requeued = self._requeue_held(worker.worker_id)
            if requeued:
                detail += f"; requeued {requeued}"
            log.warning("worker %s on %s exited (%s)", worker.worker_id, device_id, detail)
            events.append(ProcessEvent("worker_exited", worker.worker_id, (device_id,), code, detail))
        for job_id, job in list(self._training.items()):
            self._collect(job, done)
            failed = {rank: r for rank, r in job.results.items() if r["returncode"] != 0}
            if len(job.results) < len(job.run_refs) and not failed:
                continue
            del self._training[job_id]
            if len(job.results) < len(job.run_refs):  # one node's process failed: stop the others
                self._terminate(job)
            self._finish_job(job)
            code = failed[min(failed)]["returncode"] if failed else 0
            detail = "; ".join([str(job.log_path)] + [r["detail"] for r in failed.values() if r["detail"]])
            log.log(logging.WARNING if failed else logging.INFO, "job %s exited (%s)", job_id, detail)
            events.append(ProcessEvent("job_exited", job_id, job.device_ids, code, detail))
        return events

    def view(self) -> ExecutorView:
        return ExecutorView(
            serving={d: w.worker_id for d, w in self._serving.items() if d not in self._draining},
            draining={d: self._serving[d].worker_id for d in self._draining if d in self._serving},
            training={j: job.device_ids for j, job in self._training.items()},
        )

    def worker_on(self, device_id: str) -> tuple[str, float] | None:
        """(worker id, unix time it was started) of the serving worker on `device_id`, if one runs there."""
        worker = self._serving.get(device_id)
        return (worker.worker_id, worker.started_unix_s) if worker else None

    def actor(self, key: str) -> Any:
        """The Ray actor handle of a worker (by worker id) or of a job's node-rank-0 process (by job id)."""
        for worker in self._serving.values():
            if worker.worker_id == key:
                return worker.actor
        if key in self._training:
            return self._training[key].actors[0]
        raise KeyError(f"no running worker or job {key!r}")

    def placement(self, key: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Where a worker or job's rank-0 actor runs: pid, Ray node id, Ray's GPU ids, CUDA_VISIBLE_DEVICES.

        Blocks until the actor is placed and started (at most `timeout_s`).
        """
        return ray.get(self.actor(key).info.remote(), timeout=timeout_s)

    def pids(self, timeout_s: float = 60.0) -> dict[str, int]:
        """Actor process ids by worker or job id (on their own nodes; the soak benchmark kills workers by these)."""
        keys = [w.worker_id for w in self._serving.values()] + list(self._training)
        return {key: self.placement(key, timeout_s)["pid"] for key in keys}

    def shutdown(self) -> None:
        for device_id in list(self._serving):
            self.stop_serving(device_id)
        for job_id in list(self._training):
            self.stop_training(job_id)
        if self._owns_ray:
            ray.shutdown()


def _error_outcome(error: Exception) -> tuple[int | None, str]:
    if isinstance(error, ray.exceptions.RayActorError):
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        return None, f"actor died: {first}"
    cause = getattr(error, "cause", None) or error
    last = str(cause).splitlines()[-1] if str(cause) else ""
    return 1, f"raised {type(cause).__name__}: {last}"


def _outcome(ref: Any) -> tuple[int | None, str]:
    """Exit code and a sentence for a serving worker's finished `run`: 0 after a clean return, None if it died."""
    try:
        completed = ray.get(ref, timeout=0)
    except ray.exceptions.RayError as e:
        return _error_outcome(e)
    return 0, f"exit 0 after {completed} videos"


def _job_outcome(ref: Any) -> dict[str, Any]:
    """A training actor's finished `run`: its command's exit code (None: the actor died), a sentence, its output."""
    try:
        result = ray.get(ref, timeout=0)
    except ray.exceptions.RayError as e:
        code, detail = _error_outcome(e)
        return {"returncode": code, "detail": detail, "log_tail": ""}
    code = result["returncode"]
    return {"returncode": code, "detail": "" if code == 0 else f"exit {code}", "log_tail": result["log_tail"]}

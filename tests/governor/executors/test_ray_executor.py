"""The Ray executor on real Ray clusters: one node with four fake GPUs, and a two-node `ray.cluster_utils.Cluster`
with two fake GPUs a node. Serving workers generate real videos from a temp SQLite store; training jobs run real
subprocesses in placement groups. Ray must start here: these tests fail rather than skip when it cannot."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util import placement_group_table

from garrison.core.fleet import VideoStatus
from garrison.core.types import Device
from garrison.governor.executors.base import ExecutorView
from garrison.governor.executors.local import wait_for
from garrison.governor.executors.ray_executor import RayExecutor, discover_ray_devices, node_prefix
from garrison.store import open_store

OBJECT_STORE_BYTES = 100 * 1024 * 1024
RAY_ARGS = {
    "include_dashboard": False,
    "object_store_memory": OBJECT_STORE_BYTES,
    "log_to_driver": os.environ.get("GARRISON_TEST_RAY_LOGS") == "1",
}
PROMPT = "a red circle moving right on a black background"
SHORT = {"seconds": 2, "size": "64x64", "steps": 2}  # about 0.3 s on one core
# Upper bounds for waits, not timings: generous, since this 2-core machine is often shared with other test runs.
PATIENCE_S = 300.0
WORKER_NICENESS_ENV = "RAY_worker_niceness"
# About 8 s on one core: the reclaim must land while it is still denoising (abortable at a step), not while it is
# being encoded and signed, even when a loaded machine delays the test between seeing it claimed and stopping it.
LONG = {"seconds": 8, "size": "64x64", "steps": 12}


@pytest.fixture(scope="class")
def normal_priority():
    """Ray starts its workers at nice 15, which starves them on a machine busy with other work (here, other test
    runs on 2 cores); the clusters of these tests run them at the priority of everything else."""
    before = os.environ.get(WORKER_NICENESS_ENV)
    os.environ[WORKER_NICENESS_ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(WORKER_NICENESS_ENV, None)
        else:
            os.environ[WORKER_NICENESS_ENV] = before


@pytest.fixture(scope="class")
def local_ray(normal_priority):
    """One Ray node with 4 fake GPUs and 2 CPUs, our own even when another Ray runs on this machine."""
    ray.init(address="local", num_cpus=2, num_gpus=4, **RAY_ARGS)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="class")
def two_nodes(normal_priority):
    """A head and a worker node on this machine, two fake GPUs each; yields the cluster and its worker node."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "num_gpus": 2,
            "object_store_memory": OBJECT_STORE_BYTES,
            "include_dashboard": False,
        },
    )
    try:
        worker_node = cluster.add_node(num_cpus=1, num_gpus=2, object_store_memory=OBJECT_STORE_BYTES)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        yield cluster, worker_node
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def warm_home(isolated_home, cpu_peak_cache):
    """This test's GARRISON_HOME with the signing keys made and the CPU peak cached for a one-thread worker, so that
    workers starting together neither race to make the keys nor each spend seconds measuring the CPU."""
    from garrison.hardware.cpu import cpu_peak_cache_path
    from garrison.shield.verify import default_shield

    cpu_peak_cache(1e11, 2e11)
    entry = json.loads(cpu_peak_cache_path().read_text())
    cpu_peak_cache_path().write_text(json.dumps({**entry, "threads": 1}))  # Ray gives a num_cpus=0 actor one thread
    shield = default_shield()
    shield.identity()
    shield.watermark_key()
    return isolated_home


@pytest.fixture
def fleet(tmp_path, warm_home):
    """A temp SQLite store with one tenant, and a factory for executors over it (shut down afterwards)."""
    url = f"sqlite:///{tmp_path / 'garrison.db'}"
    store = open_store(url)
    tenant, _ = store.create_tenant("acme")
    made: list[RayExecutor] = []

    def executor(**kwargs) -> RayExecutor:
        ex = RayExecutor(None, url, tmp_path / "content", tmp_path / "run", store=store, **kwargs)
        made.append(ex)
        return ex

    def video(seed: int, shape: dict) -> str:
        row, _ = store.create_video(tenant.id, prompt=PROMPT, model="builtin", guidance=4.0, seed=seed, **shape)
        return row.id

    yield store, executor, video
    for ex in made:
        ex.shutdown()
    store.close()


def _status(store, video_id):
    return store.get_video(video_id).status


def _in_progress(store, video_id):
    """Claimed and at least one denoising step done."""
    row = store.get_video(video_id)
    return row.status == VideoStatus.IN_PROGRESS and row.progress > 0


def _metrics_script(steps: int, sleep_s: float) -> list[str]:
    """A training stand-in: one metrics line a step, saying which GPUs it was given and its pid."""
    code = (
        "import json, os, sys, time\n"
        "path = os.environ['GARRISON_METRICS_FILE']\n"
        f"for step in range(1, {steps} + 1):\n"
        f"    time.sleep({sleep_s})\n"
        "    row = {'step': step, 'unix_s': time.time(), 'pid': os.getpid(),\n"
        "           'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'), 'node_rank': os.environ.get('NODE_RANK'),\n"
        "           'nnodes': os.environ.get('NNODES')}\n"
        "    with open(path, 'a') as f:\n"
        "        f.write(json.dumps(row) + '\\n')\n"
        "print('trained', flush=True)\n"
    )
    return [sys.executable, "-c", code]


def _last_metrics(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[-1])


def _wait_events(ex: RayExecutor, kind: str, key: str, timeout_s: float = PATIENCE_S):
    seen = []

    def found() -> bool:
        seen.extend(ex.poll())
        return any(e.kind == kind and e.key == key for e in seen)

    assert wait_for(found, timeout_s, poll_s=0.1), f"no {kind} event for {key}; got {seen}"
    return next(e for e in seen if e.kind == kind and e.key == key)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent, the killed actor, may not have reaped it yet).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.usefixtures("local_ray")
class TestOneNodeFourFakeGpus:
    def test_each_fake_gpu_is_a_device_and_bad_devices_are_refused(self, fleet):
        store, executor, _ = fleet
        devices = discover_ray_devices()
        assert [d.index for d in devices] == [0, 1, 2, 3]
        assert {d.kind for d in devices} == {"gpu"} and len({node_prefix(d.id) for d in devices}) == 1
        ex = executor()
        assert [d.id for d in ex.devices] == [d.id for d in devices]
        with pytest.raises(ValueError, match="unknown device"):
            ex.start_serving("gpu:deadbeef:0")
        with pytest.raises(ValueError, match="not GPUs of this Ray cluster"):
            RayExecutor(devices[:1] + [Device("gpu:00000000:9", "gpu", 9, "x")], "sqlite://", "c", "r")
        with pytest.raises(ValueError, match="non-empty list"):
            ex.start_training("job_x", [], [devices[0].id])
        with pytest.raises(ValueError, match="not a Ray device id"):
            node_prefix("core:0")

    def test_serves_videos_reclaims_one_mid_video_and_reports_a_killed_worker(self, fleet):
        store, executor, video = fleet
        ex = executor()
        d0, d1 = ex.devices[0].id, ex.devices[1].id
        workers = {ex.start_serving(d0): d0, ex.start_serving(d1): d1}
        with pytest.raises(ValueError, match="held by serving worker"):
            ex.start_serving(d0)
        assert {ex.worker_on(d)[0] for d in (d0, d1)} == set(workers) and ex.worker_on(ex.devices[2].id) is None
        for worker, device in workers.items():
            placed = ex.placement(worker, PATIENCE_S)
            assert placed["cuda_visible_devices"] == str(ex.devices[0 if device == d0 else 1].index)
            assert len(placed["ray_gpu_ids"]) == 1

        short = [video(seed, SHORT) for seed in range(4)]
        assert wait_for(lambda: all(_status(store, v) == VideoStatus.COMPLETED for v in short), PATIENCE_S), [
            store.get_video(v) for v in short
        ]
        for v in short:
            row = store.get_video(v)
            assert workers[row.worker_id] == row.device_id and Path(row.path).stat().st_size > 0
        assert ex.poll() == []

        # Reclaim the device of whichever worker takes the long video: drain, then stop mid-video.
        long_id = video(99, LONG)
        assert wait_for(lambda: _in_progress(store, long_id), PATIENCE_S), store.get_video(long_id)
        holder = store.get_video(long_id).worker_id
        other = next(w for w in workers if w != holder)
        ex.drain_serving(workers[holder])
        assert ex.view().draining == {workers[holder]: holder} and ex.view().serving == {workers[other]: other}
        assert ex.stop_serving(workers[holder]) == [long_id]
        assert wait_for(lambda: _status(store, long_id) == VideoStatus.COMPLETED, PATIENCE_S), store.get_video(long_id)
        row = store.get_video(long_id)
        assert (row.worker_id, row.device_id, row.attempts) == (other, workers[other], 2)
        assert ex.poll() == []

        # SIGKILL the last worker's process mid-video: poll reports it and its video goes back to the queue.
        pid = ex.placement(other, PATIENCE_S)["pid"]
        doomed = video(7, LONG)
        assert wait_for(lambda: _in_progress(store, doomed), PATIENCE_S), store.get_video(doomed)
        os.kill(pid, signal.SIGKILL)
        event = _wait_events(ex, "worker_exited", other)
        assert event.returncode is None and event.device_ids == (workers[other],) and doomed in event.detail
        row = store.get_video(doomed)
        assert row.status == VideoStatus.QUEUED and row.worker_id is None
        assert ex.view().serving == {} and ex.view().draining == {}

    def test_training_runs_in_a_strict_pack_group_and_reports_progress(self, fleet):
        _, executor, _ = fleet
        ex = executor()
        devices = [ex.devices[2].id, ex.devices[3].id]
        ex.start_training("job_pack", _metrics_script(steps=5, sleep_s=0.05), devices)
        table = next(t for t in placement_group_table().values() if t["name"] == "garrison-job_pack")
        assert table["strategy"] == "STRICT_PACK" and len(table["bundles"]) == 2
        with pytest.raises(ValueError, match="held by training job job_pack"):
            ex.start_serving(devices[0])
        assert ex.view().training == {"job_pack": tuple(devices)}
        with pytest.raises(ValueError, match="in use"):
            ex.start_training("job_other", _metrics_script(steps=1, sleep_s=0), [devices[1], ex.devices[0].id])
        with pytest.raises(ValueError, match="already running"):
            ex.start_training("job_pack", _metrics_script(steps=1, sleep_s=0), [ex.devices[0].id])

        event = _wait_events(ex, "job_exited", "job_pack")
        assert event.returncode == 0 and event.device_ids == tuple(devices)
        progress = ex.training_progress("job_pack")
        assert progress.steps == 5 and progress.steps_per_s is not None and progress.steps_per_s > 0
        last = _last_metrics(ex.run_dir / "jobs" / "job_pack.metrics.jsonl")
        assert (last["cuda"], last["node_rank"], last["nnodes"]) == ("2,3", "0", "1")
        assert "trained" in (ex.run_dir / "logs" / "job_pack.log").read_text()
        groups = [t for t in placement_group_table().values() if t["name"] == "garrison-job_pack"]
        assert [t["state"] for t in groups] == ["REMOVED"]

    def test_killed_and_stopped_jobs_take_their_process_with_them(self, fleet):
        _, executor, _ = fleet
        ex = executor(kill_grace_s=2.0)
        ex.start_training("job_killed", _metrics_script(steps=10_000, sleep_s=0.05), [ex.devices[0].id])
        ex.start_training("job_stopped", _metrics_script(steps=10_000, sleep_s=0.05), [ex.devices[1].id])
        assert wait_for(lambda: ex.training_progress("job_killed").steps >= 2, PATIENCE_S)
        assert wait_for(lambda: ex.training_progress("job_stopped").steps >= 2, PATIENCE_S)
        killed_pid = _last_metrics(ex.run_dir / "jobs" / "job_killed.metrics.jsonl")["pid"]
        stopped_pid = _last_metrics(ex.run_dir / "jobs" / "job_stopped.metrics.jsonl")["pid"]

        ray.kill(ex.actor("job_killed"))
        event = _wait_events(ex, "job_exited", "job_killed")
        assert event.returncode is None and "actor died" in event.detail
        assert wait_for(lambda: not _pid_alive(killed_pid), 30), "the training process outlived its actor"

        steps_before = ex.training_progress("job_stopped").steps
        ex.stop_training("job_stopped")
        assert not _pid_alive(stopped_pid)
        assert ex.training_progress("job_stopped").steps >= steps_before  # the mirror keeps what was reported
        assert ex.view().training == {} and ex.poll() == []
        # Both devices are free again.
        ex.start_training("job_again", _metrics_script(steps=1, sleep_s=0), [ex.devices[0].id, ex.devices[1].id])
        assert _wait_events(ex, "job_exited", "job_again").returncode == 0


@pytest.mark.usefixtures("two_nodes")
class TestTwoNodeCluster:
    def test_serving_reclaim_and_training_across_two_nodes_and_a_lost_node(self, fleet, two_nodes):
        store, executor, video = fleet
        cluster, worker_raylet = two_nodes
        head_node, worker_node = cluster.head_node.node_id, worker_raylet.node_id
        ex = executor()
        by_node = {n: [d.id for d in ex.devices if node_prefix(d.id) == n[:8]] for n in (head_node, worker_node)}
        assert len(ex.devices) == 4 and all(len(ids) == 2 for ids in by_node.values())
        (h0, h1), (w0, w1) = by_node[head_node], by_node[worker_node]

        workers = {ex.start_serving(h0): h0, ex.start_serving(w0): w0}
        node_of = {w: ex.placement(w, PATIENCE_S)["node_id"] for w in workers}
        assert sorted(node_of.values()) == sorted([head_node, worker_node])
        short = [video(seed, SHORT) for seed in range(4)]
        assert wait_for(lambda: all(_status(store, v) == VideoStatus.COMPLETED for v in short), PATIENCE_S)
        assert {store.get_video(v).device_id for v in short} <= {h0, w0}

        # Reclaim the device holding the long video mid-video; the worker on the other node finishes it.
        long_id = video(42, LONG)
        assert wait_for(lambda: _in_progress(store, long_id), PATIENCE_S), store.get_video(long_id)
        holder = store.get_video(long_id).worker_id
        other = next(w for w in workers if w != holder)
        ex.drain_serving(workers[holder])
        assert ex.stop_serving(workers[holder]) == [long_id]
        assert wait_for(lambda: _status(store, long_id) == VideoStatus.COMPLETED, PATIENCE_S), store.get_video(long_id)
        assert store.get_video(long_id).worker_id == other and node_of[other] != node_of[holder]
        ex.stop_serving(workers[other])

        # Training on both GPUs of the worker node: metrics travel back through the actor.
        ex.start_training("job_w", _metrics_script(steps=4, sleep_s=0.05), [w0, w1])
        assert ex.placement("job_w", PATIENCE_S)["node_id"] == worker_node
        assert _wait_events(ex, "job_exited", "job_w").returncode == 0
        assert ex.training_progress("job_w").steps == 4
        assert _last_metrics(ex.run_dir / "jobs" / "job_w.metrics.jsonl")["cuda"] == "0,1"

        # A job over one GPU of each node: PACK, one process a node, node rank 0 on the first device's node.
        ex.start_training("job_span", _metrics_script(steps=3, sleep_s=0.05), [w1, h1])
        table = next(t for t in placement_group_table().values() if t["name"] == "garrison-job_span")
        assert table["strategy"] == "PACK"
        assert ex.placement("job_span", PATIENCE_S)["node_id"] == worker_node
        assert _wait_events(ex, "job_exited", "job_span").returncode == 0
        last = _last_metrics(ex.run_dir / "jobs" / "job_span.metrics.jsonl")
        assert (last["cuda"], last["node_rank"], last["nnodes"], last["step"]) == ("1", "0", "2", 3)
        assert ex.view() == ExecutorView()

        # Losing the worker node ends the job running there; its devices leave the cluster.
        ex.start_training("job_lost", _metrics_script(steps=10_000, sleep_s=0.05), [w0, w1])
        assert wait_for(lambda: ex.training_progress("job_lost").steps >= 1, PATIENCE_S)
        cluster.remove_node(worker_raylet)
        event = _wait_events(ex, "job_exited", "job_lost")
        assert event.returncode is None and "actor died" in event.detail
        assert {d.id for d in discover_ray_devices()} == {h0, h1}

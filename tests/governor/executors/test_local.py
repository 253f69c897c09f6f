"""The local executor on real processes: pinning, training metrics, serving workers, requeue on stop."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from garrison.core.fleet import VideoStatus
from garrison.governor.executors.local import LocalExecutor, read_training_metrics, wait_for
from garrison.hardware.devices import core_slot_devices
from garrison.store import open_store

# A stand-in training command with the metrics protocol of `garrison train`: one JSON line per step.
FAKE_TRAIN = (
    "import json, os, sys, time\n"
    "f = open(os.environ['GARRISON_METRICS_FILE'], 'a', buffering=1)\n"
    "print('threads', os.environ.get('GARRISON_TORCH_THREADS'), 'cpus', sorted(os.sched_getaffinity(0)), flush=True)\n"
    "for step in range(1, int(sys.argv[1]) + 1):\n"
    "    time.sleep(0.05)\n"
    "    f.write(json.dumps({'step': step, 'unix_s': time.time()}) + '\\n')\n"
)


@pytest.fixture
def executor(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    store = open_store(url)
    ex = LocalExecutor(core_slot_devices(), store, url, tmp_path / "content", tmp_path / "run", kill_grace_s=5)
    yield ex
    ex.shutdown()


def test_a_training_job_runs_pinned_and_reports_its_throughput(executor):
    device = executor.devices[-1]
    executor.start_training("job_a", [sys.executable, "-c", FAKE_TRAIN, "20"], [device.id])
    assert executor.view().training == {"job_a": (device.id,)}
    with pytest.raises(ValueError, match="in use"):
        executor.start_training("job_b", ["true"], [device.id])
    events = []
    assert wait_for(lambda: events.extend(executor.poll()) or events, 30)
    assert events[0].kind == "job_exited" and events[0].returncode == 0
    progress = executor.training_progress("job_a")
    assert progress.steps == 20 and progress.steps_per_s is not None and 5 < progress.steps_per_s < 25
    log = (executor.run_dir / "logs" / "job_a.log").read_text()
    assert f"cpus [{device.index}]" in log and "threads 1" in log


def test_metrics_reader_skips_a_half_written_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1, "unix_s": 10.0}\n{"step": 3, "unix_s": 11.0}\n{"step": 4, "un')
    progress = read_training_metrics(path)
    assert progress.steps == 3 and progress.steps_per_s == pytest.approx(2.0)
    assert read_training_metrics(tmp_path / "missing").steps == 0


def test_unknown_devices_and_double_starts_are_refused(executor):
    with pytest.raises(ValueError, match="unknown device"):
        executor.start_serving("gpu:7")
    with pytest.raises(ValueError, match="unknown device"):
        executor.start_training("j", ["true"], ["core:99"])


def test_a_killed_worker_loses_nothing_and_a_stopped_one_gives_its_video_back(executor):
    store = executor.store
    tenant, _ = store.create_tenant("t")
    video, _ = store.create_video(
        tenant.id, prompt="a red circle moving right on a black background", model="garrison-builtin-dit",
        seconds=2, size="64x64", steps=1000, guidance=4.0, seed=0,
    )  # fmt: skip
    device = executor.devices[0].id
    worker_id = executor.start_serving(device)
    assert wait_for(lambda: store.get_video(video.id).status == VideoStatus.IN_PROGRESS, 120)
    assert store.get_video(video.id).worker_id == worker_id
    os.kill(executor.pids()[worker_id], signal.SIGKILL)  # a crash, not a request
    events = []
    assert wait_for(lambda: events.extend(executor.poll()) or events, 10)
    assert events[0].kind == "worker_exited" and video.id in events[0].detail
    assert store.get_video(video.id).status == VideoStatus.QUEUED  # requeued at once, not after the lease

    worker_id = executor.start_serving(device)
    assert wait_for(lambda: store.get_video(video.id).status == VideoStatus.IN_PROGRESS, 120)
    requeued = executor.stop_serving(device)  # a reclaim at the end of the grace period
    again = store.get_video(video.id)
    assert again.status == VideoStatus.QUEUED and again.attempts == 2
    assert requeued in ([video.id], [])  # [] when the worker gave it back itself on SIGTERM
    assert executor.view().serving == {}


def test_a_gpu_process_sees_its_gpus_by_nvml_index_in_pci_bus_order(tmp_path):
    # No GPU is needed to check the environment a GPU process would get: the indices written are NVML's, and CUDA
    # must number GPUs the same way for them to mean the same card (its default order is fastest first).
    from garrison.core.types import Device

    gpus = [Device(id=f"gpu:{i}", kind="gpu", index=i, name="NVIDIA H100", chip="h100-sxm") for i in range(4)]
    url = f"sqlite:///{tmp_path / 'g.db'}"
    ex = LocalExecutor(gpus, open_store(url), url, tmp_path / "content", tmp_path / "run")
    env = ex._env_for(["gpu:3", "gpu:1"])
    assert env["CUDA_VISIBLE_DEVICES"] == "3,1" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert ex._env_for(["gpu:0"])["CUDA_VISIBLE_DEVICES"] == "0"

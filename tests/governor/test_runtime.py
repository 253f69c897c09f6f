"""The live control loop over real processes: lend idle training capacity, reclaim it for a job, lose nothing, and
take over after a governor dies."""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager

import pytest

from garrison.core.fleet import JobStatus, VideoStatus
from garrison.energy.power import DevicePowerSampler
from garrison.governor.executors.local import LocalExecutor, wait_for
from garrison.governor.runtime import DevicePowerModel, GovernorRuntime
from garrison.governor.state import GovernorConfig, GovernorConfigError
from garrison.hardware.cpu import CpuPowerModel
from garrison.hardware.devices import core_slot_devices
from garrison.store import open_store

from .executors.test_local import FAKE_TRAIN

PROMPT = "a red circle moving right on a black background"


def _runtime(tmp_path, url, store, **config):
    devices = core_slot_devices()
    if len(devices) < 2:
        pytest.fail("the governor's tests need 2 CPU core slots (one per pool)")
    devices = devices[:2]
    executor = LocalExecutor(devices, store, url, tmp_path / "content", tmp_path / "run", kill_grace_s=5)
    power = CpuPowerModel(active_w_per_core=5.6, idle_w_per_core=1.7, cores=len(devices))
    models = {d.id: DevicePowerModel(power.idle_w_per_core, power.active_w_per_core) for d in devices}
    home = {devices[0].id: "training", devices[1].id: "serving"}
    cfg = GovernorConfig(
        **{"power_cap_w": 1000.0, "training_guarantee": 1, "serving_floor": 1, "control_period_s": 0.5,
           "grace_period_s": 2.0, "slo_s": 600.0, **config}
    )  # fmt: skip
    return GovernorRuntime(store, executor, cfg, home, DevicePowerSampler(devices, power), models), devices


def _videos(store, n, steps=4):
    tenant, _ = store.create_tenant(f"t{n}-{steps}")
    return [
        store.create_video(
            tenant.id, prompt=PROMPT, model="garrison-builtin-dit", seconds=2, size="64x64", steps=steps,
            guidance=4.0, seed=i,
        )[0].id
        for i in range(n)
    ]  # fmt: skip


@contextmanager
def _loop_running(runtime):
    """The governor's control loop in a thread for the body of the block; stopped and joined after it."""
    stop = threading.Event()
    loop = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    loop.start()
    try:
        yield
    finally:
        stop.set()
        loop.join(60)


def _wait_until_lent(runtime, device_id: str) -> None:
    lent = lambda: runtime.executor.view().serving.get(device_id) is not None  # noqa: E731
    assert wait_for(lent, 60), "the idle training device was never lent to serving"


def test_idle_training_capacity_is_lent_then_reclaimed_for_a_job_and_nothing_is_lost(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    store = open_store(url)
    runtime, devices = _runtime(tmp_path, url, store)
    training_dev, serving_dev = devices[0].id, devices[1].id
    ids = _videos(store, 12, steps=40)
    with _loop_running(runtime):
        _wait_until_lent(runtime, training_dev)
        assert wait_for(lambda: store.get_setting("fleet.devices") and any(
            v.device_id == training_dev for v in store.recent_videos(0)), 120)  # fmt: skip
        job = store.create_job("t", command=[sys.executable, "-c", FAKE_TRAIN, "40"], devices=1)
        assert wait_for(lambda: store.get_job(job.id).status != JobStatus.WAITING, 30)
        assert store.get_job(job.id).devices_held == [training_dev]
        assert wait_for(lambda: store.get_job(job.id).status == JobStatus.SUCCEEDED, 60)
        done = lambda: all(store.get_video(i).status == VideoStatus.COMPLETED for i in ids)  # noqa: E731
        assert wait_for(done, 300), [store.get_video(i).status for i in ids]
    actions = [d.action for d in store.list_decisions(limit=10_000)]
    assert "lend" in actions and "reclaim" in actions and "start_training" in actions
    assert runtime.stats.reclaim_seconds and max(runtime.stats.reclaim_seconds) <= 2.0 + 2 * 0.5 + 1.0
    # the lent device served too (checked above); its last video may have been requeued by the reclaim
    assert serving_dev in {store.get_video(i).device_id for i in ids}
    sample = store.list_samples(limit=10_000)[-1]
    assert sample.power_cap_w == 1000.0 and sample.extra["power_source"] == "estimate"
    assert store.get_setting("gate.state") in ("online", "degraded", "offline")


def test_a_lent_device_left_idle_goes_back_to_the_training_pool(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    store = open_store(url)
    runtime, devices = _runtime(tmp_path, url, store, lend_idle_return_s=1.0)
    training_dev = devices[0].id
    ids = _videos(store, 4, steps=2)
    with _loop_running(runtime):
        _wait_until_lent(runtime, training_dev)
        done = lambda: all(store.get_video(i).status == VideoStatus.COMPLETED for i in ids)  # noqa: E731
        assert wait_for(done, 120), [store.get_video(i).status for i in ids]
        back = lambda: training_dev not in runtime.executor.view().serving  # noqa: E731
        assert wait_for(back, 30), "the lent device stayed lent with nothing to do"
    returns = [d for d in store.list_decisions(limit=10_000) if d.action == "reclaim" and d.target == training_dev]
    assert returns and "stood idle" in returns[-1].reason and returns[-1].reading["idle_s"] >= 1.0


def test_a_new_governor_takes_over_what_a_dead_one_left_running(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    store = open_store(url)
    first, devices = _runtime(tmp_path, url, store)
    [video_id] = _videos(store, 1, steps=1000)
    first.tick()  # starts the serving floor's worker
    assert wait_for(lambda: store.get_video(video_id).status == VideoStatus.IN_PROGRESS, 120)
    first.tick()  # records the worker's pid, as every tick does
    orphan_pid = next(iter(store.get_setting("executor.pids").values()))
    # The first governor dies here without shutting anything down; a second one starts over the same store.
    second, _ = _runtime(tmp_path / "second", url, store)
    report = second.recover()
    assert report["requeued_videos"] == [video_id] and report["killed"]
    assert wait_for(lambda: first.executor.poll() or True, 1)
    assert store.get_video(video_id).status == VideoStatus.QUEUED
    import os

    assert wait_for(lambda: not os.path.exists(f"/proc/{orphan_pid}") or _zombie(orphan_pid), 10)
    second.tick()
    assert wait_for(lambda: store.get_video(video_id).status == VideoStatus.IN_PROGRESS, 120)
    second.executor.shutdown()
    first.executor.shutdown()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_cap_below_the_idle_draw_is_refused_with_the_numbers(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    with pytest.raises(GovernorConfigError, match="idle"):
        _runtime(tmp_path, url, open_store(url), power_cap_w=2.0)


def test_a_worker_that_stops_reporting_is_marked_lost_and_its_video_finishes_elsewhere(tmp_path):
    import os
    import signal

    url = f"sqlite:///{tmp_path / 'g.db'}"
    store = open_store(url)
    runtime, devices = _runtime(tmp_path, url, store, worker_timeout_s=4.0, lending_limit=0)
    [video_id] = _videos(store, 1, steps=300)
    stop = threading.Event()
    loop = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    loop.start()
    hung_pid = None
    try:
        assert wait_for(lambda: store.get_video(video_id).status == VideoStatus.IN_PROGRESS, 120)
        worker_id = store.get_video(video_id).worker_id
        hung_pid = runtime.executor.pids()[worker_id]
        os.kill(hung_pid, signal.SIGSTOP)  # alive but silent: no beats, no heartbeats, no progress
        lost = lambda: any(d.action == "mark_lost" for d in store.list_decisions(limit=10_000))  # noqa: E731
        assert wait_for(lost, 30)
        assert wait_for(lambda: store.get_video(video_id).worker_id not in (None, worker_id), 120)
        assert wait_for(lambda: store.get_video(video_id).status == VideoStatus.COMPLETED, 300)
    finally:
        stop.set()
        loop.join(60)
        if hung_pid is not None:
            try:
                os.kill(hung_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert store.get_video(video_id).attempts == 2

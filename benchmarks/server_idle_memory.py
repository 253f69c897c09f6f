"""Resident memory of an idle garrison: the API server process (with its prompt-policy child process and the
forkserver that child came from) and one idle serving worker with the built-in model.

The server does not load the video model (workers do; it only reads the model's config for cost estimates), so the
figure the target speaks of, "idle server with the built-in model loaded", is the server plus one worker. Both are
started over a fresh SQLite store, warmed up (one create, so the server has loaded the prompt policy's sentence
encoder, and the worker has loaded the pipeline and generated that video), then left idle; RSS is read from
/proc/<pid>/status (VmRSS) after --settle-s, and RSS, PSS and USS of each from /proc/<pid>/smaps_rollup: the two
processes map the same shared libraries and MiniLM weights, which a sum of RSS counts twice and a sum of PSS once.
Prints one JSON line. Target: <= 600 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from _processes import free_port, stop  # noqa: I001

TARGET_MB = 600


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def memory_mb(pid: int) -> dict[str, float]:
    """RSS, PSS (shared pages divided among the processes that map them: these sum correctly across processes) and
    USS (pages only this process holds), and of the RSS what is anonymous and what is mapped from files, from
    /proc/<pid>/smaps_rollup."""
    kb: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, value = line.partition(":")
        kb[name] = int(value.split()[0])
    rss, anon = kb["Rss"], kb["Anonymous"]
    return {
        "rss": round(rss / 1024, 1),
        "pss": round(kb["Pss"] / 1024, 1),
        "uss": round((kb["Private_Clean"] + kb["Private_Dirty"]) / 1024, 1),
        "anonymous": round(anon / 1024, 1),
        "file_backed": round((rss - anon) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settle-s", type=float, default=5.0)
    args = parser.parse_args()
    from garrison.store import open_store

    with tempfile.TemporaryDirectory(prefix="garrison-mem-") as tmp:
        env = {**os.environ, "GARRISON_HOME": str(Path(tmp) / "home")}
        os.environ["GARRISON_HOME"] = env["GARRISON_HOME"]
        url = f"sqlite:///{Path(tmp) / 'garrison.db'}"
        content = str(Path(tmp) / "content")
        store = open_store(url)
        _, key = store.create_tenant("mem")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = open(Path(tmp) / "procs.log", "wb")  # noqa: SIM115 - closed below, after the processes end
        server = subprocess.Popen(
            [sys.executable, "-m", "garrison.server.app", "--port", str(port), "--store", url, "--content-dir", content],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        worker = subprocess.Popen(
            [sys.executable, "-m", "garrison.governor.executors.serving_worker", "--store", url, "--worker-id", "w1",
             "--content-dir", content],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the server did not start") from None
                time.sleep(0.2)
            h = {"Authorization": f"Bearer {key}"}
            body = {"prompt": "a red circle moving right on a black background", "seconds": "2", "size": "64x64"}
            video_id = httpx.post(f"{base}/v1/videos", headers=h, json=body, timeout=60).json()["id"]
            while httpx.get(f"{base}/v1/videos/{video_id}", headers=h, timeout=10).json()["status"] != "completed":
                if time.monotonic() > deadline + 240 or worker.poll() is not None:
                    raise SystemExit("the worker did not complete the warm-up video")
                time.sleep(0.5)
            time.sleep(args.settle_s)
            server_mb, worker_mb = rss_mb(server.pid), rss_mb(worker.pid)
            server_detail, worker_detail = memory_mb(server.pid), memory_mb(worker.pid)
            # The server's own children: the prompt policy's process and the forkserver it was forked from.
            children = {
                f"{c.pid} {' '.join(c.cmdline()[-2:])[:60]}": {"rss_mb": round(rss_mb(c.pid), 1), **memory_mb(c.pid)}
                for c in psutil.Process(server.pid).children(recursive=True)
            }
        finally:
            for proc in (server, worker):
                stop(proc)
            log.close()
    print(
        json.dumps(
            {
                "benchmark": "server_idle_memory",
                "server_rss_mb": round(server_mb, 1),
                "worker_rss_mb": round(worker_mb, 1),
                "children_rss_mb": round(sum(c["rss_mb"] for c in children.values()), 1),
                "total_rss_mb": round(server_mb + worker_mb + sum(c["rss_mb"] for c in children.values()), 1),
                # RSS counts the pages the processes share (libraries, the MiniLM weights all map) again in each;
                # PSS divides them among the processes that map them, so PSS sums to what the machine holds.
                "total_pss_mb": round(
                    server_detail["pss"] + worker_detail["pss"] + sum(c["pss"] for c in children.values()), 1
                ),
                "server_mb": server_detail,
                "worker_mb": worker_detail,
                "server_children_mb": children,
                "target_mb": TARGET_MB,
                "note": "the server does not load the video model; the worker does: total = server + one idle worker",
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            }
        )
    )


if __name__ == "__main__":
    main()

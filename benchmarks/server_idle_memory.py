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
import numpy as np
import psutil

from _processes import free_port, stop  # noqa: I001

TARGET_MB = 600
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def resident_frames(pid: int) -> np.ndarray:
    """The physical page frames (PFNs) a process has resident, from /proc/<pid>/pagemap (PFNs need root)."""
    frames = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            if line.rstrip().endswith("[vsyscall]"):
                continue
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            pagemap.seek(start // PAGE_BYTES * 8)
            entries = np.frombuffer(pagemap.read((end - start) // PAGE_BYTES * 8), dtype=np.uint64)
            present = entries[(entries >> np.uint64(63)) == 1]  # bit 63: the page is in RAM
            frames.append(present & np.uint64((1 << 55) - 1))  # bits 0-54: its frame number
    return np.unique(np.concatenate(frames)) if frames else np.empty(0, np.uint64)


def union_resident_mb(pids: list[int]) -> float | None:
    """RAM the processes hold together: each physical page counted once, however many of them map it.

    This is the service's footprint whatever else runs on the machine. A sum of RSS counts a shared page in every
    process that maps it; a sum of PSS divides it also among processes outside the set (another Python with torch
    loaded lowers the worker's PSS), so PSS moves with the machine's other work. None without root (PFNs read 0).
    """
    frames = [resident_frames(pid) for pid in pids]
    union = np.unique(np.concatenate(frames))
    if union.size and not union.any():
        return None
    return round(int(np.count_nonzero(union)) * PAGE_BYTES / 2**20, 1)


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
            child_pids = [int(name.split()[0]) for name in children]
            unique_mb = union_resident_mb([server.pid, worker.pid, *child_pids])
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
                # The headline: RAM the server, its children and the worker hold together, each page once.
                "total_unique_mb": unique_mb,
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

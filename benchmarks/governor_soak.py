"""Soak: `garrison up` under a steady stream of video requests, with random worker SIGKILLs and the whole governor
SIGKILLed and restarted halfway. Target (issue 4): zero requests lost, none duplicated.

Requests go through the official openai SDK with an Idempotency-Key each, retried with the same key while the
server is down, so a retry can never create a second job. At the end the stream stops and the script waits for the
queue to drain, then counts, from the store: requests whose id the API returned but that did not end completed or
explicitly failed (lost), rows per idempotency key above one (duplicated), and requeues (work given back).

Prints one JSON line. Usage: python benchmarks/governor_soak.py [--minutes 30] [--rate-per-s 0.15] [--kill-every-s 30]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import openai

from _processes import free_port  # noqa: I001
from garrison.store import open_store

PROMPTS = [
    "a red circle moving right on a black background",
    "a blue square moving up on a white background",
    "a green triangle rotating on a gray background",
]


def start_up(home: Path, port: int, log: Path) -> tuple[subprocess.Popen[str], dict]:
    env = {**os.environ, "GARRISON_HOME": str(home)}
    proc = subprocess.Popen(
        # a generous SLO: the soak is about losing nothing under kills, not about admission refusing work
        [sys.executable, "-m", "garrison.cli.main", "up", "--port", str(port), "--json", "--slo-s", "3600"],
        stdout=subprocess.PIPE,
        stderr=log.open("a"),
        env=env,
        text=True,
    )
    info = json.loads(proc.stdout.readline())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/dashboard", timeout=2)
            return proc, info
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("garrison up did not start listening")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate-per-s", type=float, default=0.15)
    ap.add_argument("--kill-every-s", type=float, default=30.0)
    ap.add_argument("--drain-timeout-s", type=float, default=900.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    home = Path(tempfile.mkdtemp(prefix="garrison-soak-"))
    port = free_port()
    log = home / "up.log"
    proc, info = start_up(home, port, log)
    key = info["admin_api_key"]
    store = open_store(info["store"])
    client = openai.OpenAI(base_url=info["api"], api_key=key, max_retries=0, timeout=10)

    created: dict[str, str] = {}  # idempotency key -> video id
    refused = 0
    refusal_codes: Counter[str] = Counter()
    worker_kills = 0
    restarts = 0
    start = time.monotonic()
    end = start + args.minutes * 60
    next_kill = start + args.kill_every_s
    restarted = False
    n = 0
    while time.monotonic() < end:
        now = time.monotonic()
        if not restarted and now >= start + (end - start) / 2:
            proc.send_signal(signal.SIGKILL)  # the governor, the API and the loop die at once
            proc.wait()
            proc, _ = start_up(home, port, log)  # same store, same admin (not recreated)
            restarts += 1
            restarted = True
        if now >= next_kill:
            pids = store.get_setting("executor.pids", {}) or {}
            workers = [pid for name, pid in pids.items() if name.startswith("w-")]
            if workers:
                try:
                    os.kill(rng.choice(workers), signal.SIGKILL)
                    worker_kills += 1
                except ProcessLookupError:
                    pass
            next_kill = now + args.kill_every_s
        idem = f"soak-{n}"
        for _attempt in range(120):  # the same key on every retry: a retry cannot duplicate
            try:
                video = client.videos.create(
                    prompt=PROMPTS[n % len(PROMPTS)],
                    seconds="4",
                    size="720x1280",
                    extra_headers={"Idempotency-Key": idem},
                )
                created[idem] = video.id
                break
            except openai.RateLimitError as e:
                refused += 1  # refused with Retry-After is an answer, not a loss
                code = (e.body or {}).get("code") if isinstance(e.body, dict) else None
                refusal_codes[str(code)] += 1
                break
            except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError):
                time.sleep(1.0)
        n += 1
        time.sleep(rng.expovariate(args.rate_per_s))

    deadline = time.monotonic() + args.drain_timeout_s
    ids = list(created.values())
    while time.monotonic() < deadline:
        states = Counter(store.get_video(i).status.value for i in ids)
        if states.get("queued", 0) + states.get("in_progress", 0) == 0:
            break
        time.sleep(2)
    rows = [store.get_video(i) for i in ids]
    by_key = Counter(v.idempotency_key for v in store.recent_videos(0, limit=100_000))
    events = Counter(e.kind for e in store.list_events(limit=100_000)) if hasattr(store, "list_events") else {}
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    statuses = Counter(v.status.value for v in rows)
    print(
        json.dumps(
            {
                "benchmark": "governor_soak",
                "minutes": args.minutes,
                "requests_sent": n,
                "accepted": len(ids),
                "refused_429": refused,
                "refusal_codes": refusal_codes,
                "completed": statuses.get("completed", 0),
                "failed_explicitly": statuses.get("failed", 0),
                "lost_requests": sum(1 for v in rows if v.status.value not in ("completed", "failed")),
                "duplicated_jobs": sum(c - 1 for c in by_key.values() if c > 1),
                "worker_sigkills": worker_kills,
                "governor_restarts": restarts,
                "requeues": events.get("video.requeued", 0),
                "attempts_max": max((v.attempts for v in rows), default=0),
                "failures": Counter(v.error_code for v in rows if v.status.value == "failed"),
                "machine": f"{os.cpu_count()} CPU cores, no GPU" if not os.environ.get("CUDA_VISIBLE_DEVICES") else "",
                "store": info["store"],
            }
        )
    )


if __name__ == "__main__":
    main()

"""Create and poll against a running garrison server at a sustained rate, from a second process on loopback.

Starts `python -m garrison.server.app` over a fresh SQLite store (no workers: videos stay queued, so what is measured
is the non-generating path: auth, validation, the prompt policy, quotas, admission and the store). This process
then sends an open-loop schedule of requests at --rps for --duration-s (asyncio, with a minimal keep-alive HTTP/1.1
client: see Connection, and the CPU per request of both sides is reported): a tenth are creates
(each with its own Idempotency-Key, retried with the same key on a transport error), the rest retrieve a video
created earlier, at most 64 in flight. Latency is measured from each request's send to its response, and also
from the time it was due (what a client at this rate waits, queueing included).

Afterwards the store is read directly: every acknowledged create must be a row (lost = acknowledged ids missing),
and there must be no more rows than acknowledged ids (duplicated = rows beyond them).
Prints one JSON line. Targets: 200 req/s for 60 s, zero lost or duplicated, p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from _processes import free_port, stop  # noqa: I001

MAX_IN_FLIGHT = 64
SCHED_NAMES = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_BATCH: "SCHED_BATCH", os.SCHED_IDLE: "SCHED_IDLE"}
PROMPTS = [
    "a red circle moving right on a black background",
    "a yellow square sliding left on a navy backdrop",
    "a green triangle drifting up over a white background",
    "a blue star moving down on a gray background",
]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50) * 1000, 2),
        "p99": round(percentile(values, 99) * 1000, 2),
        "max": round(max(values) * 1000, 2),
        "mean": round(statistics.fmean(values) * 1000, 2),
    }


def create_breakdown(log_path: Path) -> dict[str, dict[str, float]]:
    """p50/p99 of the `policy_ms` and `store_ms` fields of the server's "video queued" log lines."""
    parts: dict[str, list[float]] = {"policy": [], "store": []}
    for line in log_path.read_text(errors="replace").splitlines():
        if '"video queued"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        for name in parts:
            if f"{name}_ms" in record:
                parts[name].append(record[f"{name}_ms"] / 1000)
    return {name: summary_ms(values) for name, values in parts.items() if values}


class Connection:
    """One keep-alive HTTP/1.1 connection, written out on asyncio streams.

    The load generator shares the server's two cores, so it must cost little per request: httpx's AsyncClient took
    about as much CPU per request as the server itself (3 to 4 ms here), so the figure measured the client as
    much as the server. This client sends a request and reads the status, headers and Content-Length body; it
    understands no more of HTTP than uvicorn's answers to these requests need.
    """

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {key}\r\nHost: {host}:{port}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"", headers: str = "") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\n{self.auth}{headers}"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        try:
            self.writer.write(head.encode() + b"\r\n" + body)
            status_line = await self.reader.readuntil(b"\r\n")
            length, close = 0, False
            while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            payload = await self.reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()
            raise
        if close:
            self.close()
        return int(status_line.split()[1]), payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run_load(base: str, key: str, rps: float, duration_s: float, create_share: float, seed_id: str) -> dict:
    host, port = base.removeprefix("http://").split(":")
    created: list[str] = []
    known: list[str] = [seed_id]  # ids to poll: the warm-up video, then every acknowledged create
    latencies: dict[str, list[float]] = {"create": [], "retrieve": []}
    errors: dict[str, int] = {}
    lag_s: list[float] = []
    response_s: list[float] = []  # from each request's scheduled time: includes waiting for a free connection
    rng = random.Random(0)
    # At most MAX_IN_FLIGHT requests on the wire, one a connection; the rest wait for a free connection.
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(MAX_IN_FLIGHT):
        pool.put_nowait(Connection(host, int(port), key))

    async def send(method: str, path: str, body: bytes = b"", headers: str = "") -> tuple[int, bytes, float]:
        conn = await pool.get()
        try:
            t0 = time.perf_counter()
            # A request not answered in 10 s counts as an error, so a server that falls behind cannot stretch the
            # run without bound.
            status, payload = await asyncio.wait_for(conn.request(method, path, body, headers), 10.0)
            return status, payload, time.perf_counter() - t0
        except BaseException:
            conn.close()
            raise
        finally:
            pool.put_nowait(conn)

    async def create(n: int, due: float) -> None:
        body = json.dumps({"prompt": PROMPTS[n % len(PROMPTS)], "seconds": "4", "size": "1280x720", "seed": n})
        idem = f"Idempotency-Key: load-{uuid.uuid4().hex}\r\n"
        for _attempt in range(3):  # a retry after a transport error reuses the key: never a duplicate
            try:
                status, payload, latency = await send("POST", "/v1/videos", body.encode(), idem)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                continue
            latencies["create"].append(latency)
            response_s.append(time.perf_counter() - due)
            if status == 200:
                created.append(json.loads(payload)["id"])
                known.append(created[-1])
            else:
                errors[str(status)] = errors.get(str(status), 0) + 1
            return

    async def retrieve(due: float) -> None:
        video_id = rng.choice(known)
        try:
            status, _payload, latency = await send("GET", f"/v1/videos/{video_id}")
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            return
        latencies["retrieve"].append(latency)
        response_s.append(time.perf_counter() - due)
        if status != 200:
            errors[str(status)] = errors.get(str(status), 0) + 1

    tasks = []
    cpu0 = time.process_time()
    start = time.perf_counter()
    total = int(rps * duration_s)
    for n in range(total):
        due = start + n / rps
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lag_s.append(max(0.0, time.perf_counter() - due))
        is_create = rng.random() < create_share
        tasks.append(asyncio.create_task(create(n, due) if is_create else retrieve(due)))
    await asyncio.gather(*tasks)
    elapsed_s = time.perf_counter() - start
    client_cpu_s = time.process_time() - cpu0
    while not pool.empty():
        pool.get_nowait().close()
    done = len(latencies["create"]) + len(latencies["retrieve"])
    return {
        "created": created,
        "latencies": latencies,
        "errors": errors,
        "sent": total,
        "completed": done,
        "elapsed_s": elapsed_s,
        "client_cpu_s": client_cpu_s,
        "schedule_lag_p99_ms": round(percentile(lag_s, 99) * 1000, 2),
        "response_s": response_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rps", type=float, default=200.0)
    parser.add_argument("--duration-s", type=float, default=60.0)
    # The SDK's create_and_poll: one create, then a poll a second (openai-poll-after-ms) until the clip is done.
    parser.add_argument("--create-share", type=float, default=0.1)
    args = parser.parse_args()

    from garrison.store import open_store

    load_before = round(os.getloadavg()[0], 2)

    with tempfile.TemporaryDirectory(prefix="garrison-load-") as tmp:
        env = {**os.environ, "GARRISON_HOME": str(Path(tmp) / "home")}
        os.environ["GARRISON_HOME"] = env["GARRISON_HOME"]
        url = f"sqlite:///{Path(tmp) / 'garrison.db'}"
        store = open_store(url)
        tenant, key = store.create_tenant("load")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with open(Path(tmp) / "server.log", "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "garrison.server.app", "--port", str(port), "--store", url,
                 "--content-dir", str(Path(tmp) / "content")],
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
                            raise SystemExit("the server did not start; see its log") from None
                    time.sleep(0.2)
                # Warm-up: the first create loads the prompt policy's sentence encoder.
                h = {"Authorization": f"Bearer {key}"}
                warm = httpx.post(f"{base}/v1/videos", headers=h, json={"prompt": PROMPTS[0]}, timeout=300).json()["id"]
                server_cpu0 = cpu_s(server.pid)
                result = asyncio.run(run_load(base, key, args.rps, args.duration_s, args.create_share, warm))
                server_cpu = cpu_s(server.pid) - server_cpu0
            finally:
                stop(server)
        create_parts = create_breakdown(Path(tmp) / "server.log")
        rows, after = [], None
        while True:
            page, more = store.list_videos(tenant.id, after=after, limit=1000, order="asc")
            rows += [v.id for v in page]
            if not more:
                break
            after = page[-1].id
    acknowledged = set(result["created"])
    stored = set(rows)
    all_latencies = result["latencies"]["create"] + result["latencies"]["retrieve"]
    print(
        json.dumps(
            {
                "benchmark": "server_load",
                "target_rps": args.rps,
                "duration_s": args.duration_s,
                "achieved_rps": round(result["completed"] / result["elapsed_s"], 1),
                "requests": result["completed"],
                "errors": result["errors"],
                "creates_acknowledged": len(result["created"]),
                "lost": len(acknowledged - stored),
                "duplicated": len(rows) - 1 - len(acknowledged & stored),  # minus the warm-up create
                "latency_ms": summary_ms(all_latencies),
                "create_ms": summary_ms(result["latencies"]["create"]),
                "retrieve_ms": summary_ms(result["latencies"]["retrieve"]),
                # Inside the server, from its log: waiting for the prompt policy's process, and the rest of a create
                # (audit record, quotas, admission, the store's insert) in a worker thread.
                "create_inside_server_ms": create_parts,
                # From the time each request was due: what a client at this rate waits, queueing included.
                "response_from_schedule_ms": summary_ms(result["response_s"]),
                "schedule_lag_p99_ms": result["schedule_lag_p99_ms"],
                # CPU per answered request: the server's, and this load generator's (both share the machine).
                "server_cpu_ms_per_request": round(server_cpu / max(1, result["completed"]) * 1000, 3),
                "client_cpu_ms_per_request": round(result["client_cpu_s"] / max(1, result["completed"]) * 1000, 3),
                "target_p99_ms": 50,
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                # Other work on the machine during the run, and the server's event loop and HTTP parser (uvicorn
                # uses uvloop and httptools when they are installed).
                "loadavg_1m_before_after": [load_before, round(os.getloadavg()[0], 2)],
                # This process's scheduling class, which the server and its children inherit. On a machine shared
                # with other work, `chrt -o 0` (SCHED_OTHER) over work at SCHED_IDLE keeps that work off the figure.
                "sched_policy": SCHED_NAMES.get(os.sched_getscheduler(0), str(os.sched_getscheduler(0))),
                "uvloop": importlib.util.find_spec("uvloop") is not None,
                "httptools": importlib.util.find_spec("httptools") is not None,
            }
        )
    )


if __name__ == "__main__":
    main()

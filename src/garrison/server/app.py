"""The garrison HTTP service: `create_app(...)` builds the FastAPI app over a store.

The app is stateless over the store (the queue and all shared state live there), so any number of server
processes can share one database; workers and the governor are separate processes on the same store.

Run it alone (the embedded defaults: SQLite under $GARRISON_HOME, content in $GARRISON_HOME/content)::

    python -m garrison.server.app --host 127.0.0.1 --port 8000
    uvicorn --factory garrison.server.app:app_from_env      # GARRISON_DB_URL, GARRISON_CONTENT_DIR, ...

`garrison up` starts it together with the governor and workers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from garrison.governor.executors.serving_worker import default_content_dir
from garrison.server.admission import Admission
from garrison.server.auth import KeyCache, RateLimiter
from garrison.server.dashboard import dashboard_router
from garrison.server.errors import error_body, install_error_handlers
from garrison.server.logs import configure_json_logging, log_fields
from garrison.server.metrics import AppMetrics
from garrison.server.policy_pool import PolicyPool, policy_processes_from_env
from garrison.server.routes import jobs, ops, videos

log = logging.getLogger("garrison.server.access")

MAX_BODY_BYTES = 1 << 20  # every request but uploads to /v1/verify: a prompt is at most 1,000 characters
API_VERSION = "1"
GIL_SWITCH_INTERVAL_S = 0.0005  # see configure_server_process


class BodyTooLarge(StarletteHTTPException):
    """A request body that grew past the limit while it was read (an HTTPException, so FastAPI passes it through
    to the error handlers instead of calling it a parse error)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


class BodyLimitAndAccessLog:
    """Pure ASGI middleware: refuse a declared oversized body with a JSON 413 before reading it, time every request
    into the latency histogram (by route template, so ids do not explode the label set) and log one JSON line."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics, limits: dict[str, int], default_limit: int) -> None:
        self.app = app
        self.metrics = metrics
        self.limits = limits
        self.default_limit = default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        limit = self.limits.get(scope["path"], self.default_limit)
        received = {"bytes": 0}

        async def receive_with_limit() -> Message:
            # A body without Content-Length (chunked) is counted as it arrives.
            message = await receive()
            if message["type"] == "http.request":
                received["bytes"] += len(message.get("body", b""))
                if received["bytes"] > limit:
                    raise BodyTooLarge(limit)
            return message

        declared = _content_length(scope)
        try:
            if declared is not None and declared > limit:
                await _send_json(send_with_status, 413, _too_large_body(declared, limit))
            else:
                await self.app(scope, receive_with_limit, send_with_status)
        finally:
            elapsed_s = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request_latency_s.labels(scope["method"], template, str(status["code"])).observe(elapsed_s)
            state = scope.get("state") or {}
            log_fields(
                log,
                logging.INFO,
                "request",
                method=scope["method"],
                path=scope["path"][:200],
                route=template,
                status=status["code"],
                ms=round(elapsed_s * 1000, 2),
                tenant_id=state.get("tenant_id"),
            )


def _too_large_body(declared: int | None, limit: int) -> dict[str, Any]:
    size = f"of {declared} bytes " if declared is not None else ""
    message = f"request body {size}exceeds the limit of {limit} bytes"
    return error_body(message, "invalid_request_error", None, "request_too_large")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send: Send, status_code: int, body: dict[str, Any]) -> None:
    import json

    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status_code, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def create_app(
    store: Any | None = None,
    *,
    store_url: str | None = None,
    content_dir: str | Path | None = None,
    cors_origins: list[str] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    key_cache_ttl_s: float = 2.0,
    policy_processes: int = 0,
) -> FastAPI:
    """The garrison API over a store.

    Args:
        store: an open `garrison.store.Store`; None opens `store_url`.
        store_url: SQLAlchemy URL when `store` is None (None: GARRISON_DB_URL, else SQLite under $GARRISON_HOME).
        content_dir: where workers write the MP4s and previews (default $GARRISON_HOME/content).
        cors_origins: origins allowed by CORS; None or empty leaves CORS off (no CORS headers at all).
        max_body_bytes: request body limit for every route but /v1/verify (ops.MAX_VERIFY_UPLOAD_BYTES).
        key_cache_ttl_s: how long a verified API key is trusted without asking the store again.
        policy_processes: child processes that screen prompts (server/policy_pool.py), started with the app and
            stopped with it; 0 screens them in the API process's worker threads. The serving entry points
            (`garrison up`, `python -m garrison.server.app`, `app_from_env`) use GARRISON_POLICY_PROCESSES (default 1).
    """
    if store is None:
        from garrison.store import open_store

        store = open_store(store_url)
    content_dir = Path(content_dir) if content_dir is not None else default_content_dir()
    content_dir.mkdir(parents=True, exist_ok=True)

    policy_pool = PolicyPool(policy_processes) if policy_processes > 0 else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if policy_pool is not None:
            # Load the policy in its process before the first request, off the event loop.
            await asyncio.get_running_loop().run_in_executor(None, policy_pool.start)
        try:
            yield
        finally:
            if policy_pool is not None:
                policy_pool.close()

    app = FastAPI(
        lifespan=lifespan,
        title="garrison",
        version=API_VERSION,
        summary="Text-to-video in the shape of OpenAI's Videos API, with energy and provenance.",
    )
    app.state.store = store
    app.state.policy_pool = policy_pool
    app.state.content_dir = content_dir
    app.state.key_cache = KeyCache(ttl_s=key_cache_ttl_s)
    app.state.rate_limiter = RateLimiter()
    app.state.metrics = AppMetrics(store)
    app.state.admission = Admission(store)
    install_error_handlers(app)
    app.include_router(videos.router)
    app.include_router(jobs.router)
    app.include_router(ops.router)
    app.include_router(dashboard_router(lambda: app.state.store))
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        )
    app.add_middleware(
        BodyLimitAndAccessLog,
        metrics=app.state.metrics,
        limits={"/v1/verify": ops.MAX_VERIFY_UPLOAD_BYTES},
        default_limit=max_body_bytes,
    )
    return app


def configure_server_process() -> None:
    """Process-wide settings for a process that serves the API; call once, before serving.

    The BLAS under NumPy runs one thread: the only model the server runs is the prompt policy's sentence encoder
    (NumPy, shield/policy.py), on one prompt a request, so parallelism comes from concurrent requests, and a pool of
    BLAS threads per matrix product (one per core by default) only spins against the event loop and the other
    requests for the same cores (with torch's OpenMP pool, on 2 cores, it doubled the CPU time of a create and made
    its latency erratic under load). threadpoolctl sets the limit on the BLAS libraries already loaded, so NumPy is
    imported first; the server does not import torch at all.
    """
    import numpy as np  # noqa: F401 - loads the BLAS whose pool is limited below
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    # The event loop and the worker threads (store calls) share one GIL; a thread that wants it waits for the
    # holder to drop it, at most the switch interval (Python's default 5 ms). Requests here cost about 2 ms of CPU,
    # so the default lets one store call hold up the loop for several of them: 0.5 ms hands the GIL over sooner.
    # benchmarks/server_load.py (200 req/s, the policy in its own process): p99 54 ms at 5 ms, 37-43 ms at 0.5-1 ms.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


def app_from_env() -> FastAPI:
    """The app configured from the environment (for `uvicorn --factory`): GARRISON_DB_URL, GARRISON_CONTENT_DIR,
    GARRISON_CORS_ORIGINS (comma-separated; unset = CORS off)."""
    configure_json_logging()
    configure_server_process()
    origins = [o.strip() for o in os.environ.get("GARRISON_CORS_ORIGINS", "").split(",") if o.strip()]
    return create_app(
        store_url=os.environ.get("GARRISON_DB_URL") or None,
        content_dir=os.environ.get("GARRISON_CONTENT_DIR") or None,
        cors_origins=origins or None,
        policy_processes=policy_processes_from_env(),
    )


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve the garrison API (no governor, no workers).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--store", default=None, help="Store URL (default: GARRISON_DB_URL or SQLite in GARRISON_HOME)."
    )
    parser.add_argument("--content-dir", default=None)
    parser.add_argument("--cors-origin", action="append", default=None, help="Allow this origin (repeatable).")
    args = parser.parse_args(argv)
    configure_json_logging()
    configure_server_process()
    app = create_app(
        store_url=args.store,
        content_dir=args.content_dir,
        cors_origins=args.cors_origin,
        policy_processes=policy_processes_from_env(),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

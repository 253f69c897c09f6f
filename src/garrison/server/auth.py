"""API keys and per-tenant limits: `Authorization: Bearer <key>` -> the tenant, or a 401.

Keys are checked by the store (it keeps only their sha256). A verified key is remembered for `cache_ttl_s` (2 s)
so that a client polling at hundreds of requests a second does not cost a database read each; a revocation
therefore takes effect within that time.

The requests-per-minute limit is a fixed one-minute window per tenant, counted in this process. It is written here
rather than taken from a library (slowapi/limits) because it is a dozen lines keyed by the tenant the store
returned, and its answer must be OpenAI's error object with the exact Retry-After; with several server processes
each enforces the limit on its own share.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from garrison.server.errors import APIError

KEY_CACHE_SIZE = 4096
RATE_WINDOW_S = 60.0


def bearer_key(request: Request) -> str:
    """The API key from `Authorization: Bearer <key>`; 401 when there is none."""
    header = request.headers.get("authorization")
    if not header:
        raise APIError(
            401,
            "no API key: send 'Authorization: Bearer <key>' (make one with `garrison tenants create NAME`)",
            code="missing_api_key",
        )
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise APIError(401, "the Authorization header must be 'Bearer <key>'", code="invalid_api_key")
    if len(key) > 256 or not key.isascii():
        raise APIError(401, "invalid API key", code="invalid_api_key")
    return key


class KeyCache:
    """Tenants of recently verified keys, for `ttl_s` seconds."""

    def __init__(self, ttl_s: float = 2.0, size: int = KEY_CACHE_SIZE) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or now - entry[0] > self.ttl_s:
                return None
            return entry[1]

    def put(self, key: str, tenant: Any) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic(), tenant)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


@dataclass
class _Window:
    start_s: float
    count: int


class RateLimiter:
    """Requests per minute per tenant, in fixed one-minute windows."""

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def check(self, tenant_id: str, per_minute: int | None, now_s: float | None = None) -> None:
        """Count one request; raise a 429 with Retry-After when the tenant is over its limit."""
        if per_minute is None:
            return
        now_s = time.time() if now_s is None else now_s
        with self._lock:
            window = self._windows.get(tenant_id)
            if window is None or now_s - window.start_s >= RATE_WINDOW_S:
                window = self._windows[tenant_id] = _Window(now_s, 0)
            if window.count >= per_minute:
                retry_after_s = max(1, int(window.start_s + RATE_WINDOW_S - now_s + 0.999))
                raise APIError(
                    429,
                    f"rate limit reached: {per_minute} requests per minute for this tenant; retry in {retry_after_s} s",
                    code="rate_limit_exceeded",
                    error_type="requests",
                    headers={"Retry-After": str(retry_after_s)},
                )
            window.count += 1


async def authenticate(request: Request) -> Any:
    """FastAPI dependency: the calling tenant (a store Tenant row), after its rate limit is counted.

    Async so that a key verified in the last `ttl_s` costs no hop to a worker thread (FastAPI runs a sync
    dependency in the thread pool, on top of the endpoint's own hop): only a cache miss reads the store, there.
    """
    key = bearer_key(request)
    state = request.app.state
    tenant = state.key_cache.get(key)
    if tenant is None:
        tenant = await run_in_threadpool(state.store.authenticate, key)
        if tenant is None:
            raise APIError(401, "invalid or revoked API key", code="invalid_api_key")
        state.key_cache.put(key, tenant)
    request.state.tenant_id = tenant.id
    state.rate_limiter.check(tenant.id, tenant.requests_per_minute)
    return tenant


async def require_admin(request: Request) -> Any:
    """FastAPI dependency: the calling tenant, which must be an admin (training jobs are an operator's business)."""
    tenant = await authenticate(request)
    if not tenant.admin:
        raise APIError(403, "this needs an admin tenant's key", code="forbidden")
    return tenant

"""The operators' dashboard: one page, its JSON feed, and the thumbnails it shows.

`GET /dashboard` serves the page (static HTML, a small vanilla JS file, CSS, and uPlot 1.6.32 vendored under
`static/vendor/` with its MIT license, because the machine has no internet at run time). The page asks for the
admin tenant's key once, keeps it in sessionStorage, and polls `GET /dashboard/data` with `Authorization: Bearer`
every 1.5 s; thumbnails come from `GET /dashboard/thumbnails/{video_id}`, fetched by the script with the same header
(an `<img src>` cannot send one) and shown as blob URLs. Everything on the page is read from the store the governor
and the workers write: samples (power against the cap, allocation, queue, SLO attainment), the gate, decisions,
videos. Only the page and its static files are public; the data and the thumbnails need an admin key, and a missing
or wrong key is a 401 (a non-admin key a 403) in OpenAI's error shape.

The store's calls are blocking, so the data and thumbnail endpoints are plain `def` (FastAPI runs them in its
thread pool). Errors are answered here as JSON responses rather than raised, so the router keeps OpenAI's error
shape on any app, with or without the server's error handlers.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from garrison.core.fleet import QUALITY_LADDER
from garrison.server.errors import APIError
from garrison.store import NotFound, StoreError

log = logging.getLogger("garrison.server.dashboard")

STATIC_DIR = Path(__file__).parent / "static"
# The only files /dashboard/static/ serves (no path from the client ever reaches the filesystem).
STATIC_FILES: dict[str, tuple[str, str]] = {
    "dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "uPlot.min.css": ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
    "uPlot.LICENSE": ("vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
}
THUMBNAIL_MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
VIDEO_ID_RE = re.compile(r"video_[0-9a-zA-Z]{1,64}")

DEFAULT_WINDOW_S = 900.0  # the charts' time span: 15 min of control periods
MAX_WINDOW_S = 7 * 86400.0
MAX_SAMPLES = 2000
DECISIONS_SHOWN = 25
VIDEOS_SHOWN = 12
GOVERNOR_STALE_S = 30.0  # same threshold as the /metrics gauge garrison_governor_reporting
NO_STORE = {"Cache-Control": "no-store"}


def _error(status_code: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    err = APIError(status_code, message, code=code, param=param)
    return JSONResponse(err.body(), status_code=status_code, headers=NO_STORE)


def _store_unavailable(exc: StoreError) -> JSONResponse:
    # The database is down or locked too long: a 503 to retry, not a bare 500. The details (which may name the
    # database) go to the log, not to a caller not yet authenticated.
    log.error("dashboard: the store is unavailable: %s", exc)
    err = APIError(503, "the store is unavailable; retry shortly (the server log says why)", code="store_unavailable")
    return JSONResponse(err.body(), status_code=503, headers={**NO_STORE, "Retry-After": "2"})


def _admin_or_error(request: Request, store: Any) -> JSONResponse | None:
    """None when the request carries an admin tenant's key; otherwise the 401/403 to answer."""
    header = request.headers.get("authorization")
    if not header:
        return _error(
            401,
            "no API key: send 'Authorization: Bearer <key>' with an admin tenant's key "
            "(make one with `garrison tenants create NAME --admin`)",
            "missing_api_key",
        )
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return _error(401, "the Authorization header must be 'Bearer <key>'", "invalid_api_key")
    if len(key) > 256 or not key.isascii():
        return _error(401, "invalid API key", "invalid_api_key")
    tenant = store.authenticate(key)
    if tenant is None:
        return _error(401, "invalid or revoked API key", "invalid_api_key")
    if not tenant.admin:
        return _error(403, f"the dashboard is for operators: tenant {tenant.name!r} is not an admin", "forbidden")
    return None


def _finite(value: Any) -> float | None:
    """A float for JSON, or None for missing, non-numeric, NaN or infinite values (JSON has no NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> float | None:
    """A pool's size in an allocation: a number, or the length of a list of device ids."""
    if isinstance(value, list | tuple | set):
        return float(len(value))
    return _finite(value)


def _quality(level: Any) -> dict[str, Any] | None:
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < len(QUALITY_LADDER):
        return None if level is None else {"level": level, "name": None}
    rung = QUALITY_LADDER[level]
    return {"level": rung.level, "name": rung.name}


def _samples(store: Any, since_s: float) -> dict[str, Any]:
    # The latest MAX_SAMPLES, then the window: list_samples(since=...) would give the *oldest* ones after `since`.
    rows = [row for row in store.list_samples(limit=MAX_SAMPLES) if row.ts > since_s]
    pools: list[str] = []
    for row in rows:
        for name in row.allocation:
            if name not in pools:
                pools.append(name)
    return {
        "ts": [row.ts for row in rows],
        "power_w": [_finite(row.power_w) for row in rows],
        "power_cap_w": [_finite(row.power_cap_w) for row in rows],
        "queue_depth": [row.queue_depth for row in rows],
        "slo_attainment": [_finite(row.extra.get("slo_attainment")) for row in rows],
        "quality_level": [_finite(row.extra.get("quality_level")) for row in rows],
        "gate": [row.gate for row in rows],
        "allocation": {name: [_count(row.allocation.get(name, 0)) for row in rows] for name in pools},
    }


def _recent_videos(store: Any, limit: int) -> list[dict[str, Any]]:
    """The newest videos of every tenant, newest first, with what they took."""
    tenants = {t.id: t for t in store.list_tenants()}
    rows = []
    for tenant_id in tenants:
        page, _ = store.list_videos(tenant_id, limit=limit, order="desc")
        rows.extend(page)
    rows.sort(key=lambda v: (v.created_at, v.id), reverse=True)
    out = []
    for v in rows[:limit]:
        tenant = tenants.get(v.tenant_id)
        out.append(
            {
                "id": v.id,
                "tenant": tenant.name if tenant is not None else v.tenant_id,
                "prompt": v.prompt,
                "status": str(v.status),
                "progress": v.progress,
                "seconds": v.seconds,
                "size": v.size,
                "created_at": v.created_at,
                "completed_at": v.completed_at,
                "seconds_wall": _finite(v.seconds_wall),
                "joules": _finite(v.joules),
                "energy_source": v.energy_source,
                "cost_usd": _finite(v.cost_usd),
                "co2_g": _finite(v.co2_g),
                "quality": _quality(v.quality_level),
                "device_id": v.device_id,
                "error_code": v.error_code,
                "thumbnail_url": f"/dashboard/thumbnails/{v.id}" if v.thumbnail_path else None,
            }
        )
    return out


def dashboard_data(store: Any, *, window_s: float = DEFAULT_WINDOW_S, now_s: float | None = None) -> dict[str, Any]:
    """Everything the page shows, as one JSON-ready dict.

    Args:
        store: a garrison Store.
        window_s: how far back the charts reach.
        now_s: the time to take as now (unix seconds); default the clock.
    """
    now_s = time.time() if now_s is None else now_s
    samples = _samples(store, now_s - window_s)
    latest = store.list_samples(limit=1)
    last = latest[-1] if latest else None
    gate_state = store.get_setting("gate.state", None)
    if gate_state is None:
        gate = {"state": "offline", "reason": "the governor has not reported"}
    else:
        gate = {"state": str(gate_state), "reason": str(store.get_setting("gate.reason", "") or "")}
    stats = store.queue_stats()
    decisions = store.list_decisions(limit=DECISIONS_SHOWN)[::-1]  # the latest, newest first
    videos = _recent_videos(store, VIDEOS_SHOWN)
    completed = [v for v in videos if v["status"] == "completed"]
    devices = store.get_setting("fleet.devices", None)
    return {
        "now": now_s,
        "window_s": window_s,
        "governor": {
            "reporting": last is not None and now_s - last.ts <= GOVERNOR_STALE_S,
            "last_sample_ts": last.ts if last else None,
        },
        "power": {
            "power_w": _finite(last.power_w) if last else None,
            "power_cap_w": _finite(last.power_cap_w) if last else None,
        },
        "allocation": {k: _count(v) for k, v in last.allocation.items()} if last else {},
        "gate": gate,
        "serving": {
            "quality": _quality(store.get_setting("serving.quality_level", None)),
            "admission_mode": store.get_setting("admission.mode", None),
        },
        "fleet": {"devices": devices if isinstance(devices, list | int | dict) else None},
        "queue": {
            "queued": stats.queued,
            "in_progress": stats.in_progress,
            "oldest_queued_age_s": _finite(stats.oldest_queued_age_s),
            "completed_last_minute": stats.completed_last_minute,
            "failed_last_minute": stats.failed_last_minute,
            "joules_last_minute": _finite(stats.joules_last_minute),
        },
        "slo": {"attainment": _finite(last.extra.get("slo_attainment")) if last else None},
        "samples": samples,
        "decisions": [
            {"ts": d.ts, "tick": d.tick, "action": d.action, "target": d.target, "reason": d.reason} for d in decisions
        ],
        "videos": videos,
        "totals": {
            "videos_shown": len(videos),
            "joules": sum(v["joules"] or 0.0 for v in completed),
            "cost_usd": sum(v["cost_usd"] or 0.0 for v in completed),
        },
    }


def _data_response(request: Request, store: Any, window_s: str | None) -> Response:
    denied = _admin_or_error(request, store)
    if denied is not None:
        return denied
    # Parsed here rather than typed as a float, so a bad value is this 400 on any app, not FastAPI's 422.
    try:
        span_s = DEFAULT_WINDOW_S if window_s is None else float(window_s)
    except ValueError:
        span_s = math.nan
    if not math.isfinite(span_s) or not 0 < span_s <= MAX_WINDOW_S:
        return _error(
            400,
            f"window_s must be a number of seconds in (0, {MAX_WINDOW_S:.0f}], got {str(window_s)[:40]!r}",
            "invalid_value",
            param="window_s",
        )
    return JSONResponse(dashboard_data(store, window_s=span_s), headers=NO_STORE)


def _thumbnail_response(request: Request, store: Any, video_id: str) -> Response:
    denied = _admin_or_error(request, store)
    if denied is not None:
        return denied
    if not VIDEO_ID_RE.fullmatch(video_id):
        return _error(400, f"invalid video id {video_id[:40]!r}: ids look like video_<hex>", "invalid_id")
    try:
        row = store.get_video(video_id)
    except NotFound:
        return _error(404, f"no video {video_id}", "not_found", param="video_id")
    path = Path(row.thumbnail_path) if row.thumbnail_path else None
    media_type = THUMBNAIL_MEDIA_TYPES.get(path.suffix.lower()) if path is not None else None
    if path is None or media_type is None or not path.is_file():
        return _error(404, f"video {video_id} has no stored thumbnail", "not_found", param="video_id")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=300"})


def dashboard_router(store_getter: Callable[[], Any]) -> APIRouter:
    """The dashboard's routes: the page, its static files, its data (admin key) and thumbnails (admin key).

    Args:
        store_getter: returns the Store to read (called per request, so the app may open it after startup).
    """
    router = APIRouter(tags=["dashboard"])

    @router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html; charset=utf-8")

    @router.get("/dashboard/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        entry = STATIC_FILES.get(name)
        if entry is None:
            return _error(404, f"no such dashboard file: {name[:60]!r}", "not_found", param="name")
        return FileResponse(STATIC_DIR / entry[0], media_type=entry[1])

    @router.get("/dashboard/data", summary="Dashboard data (admin)")
    def data(
        request: Request,
        window_s: Annotated[str | None, Query(description="How far back the charts reach, seconds.")] = None,
    ) -> Response:
        """Samples for the charts, the gate and its reason, recent decisions, the queue and SLO attainment, and the
        newest videos of every tenant with their joules and cost."""
        try:
            return _data_response(request, store_getter(), window_s)
        except StoreError as exc:
            return _store_unavailable(exc)

    @router.get("/dashboard/thumbnails/{video_id}", include_in_schema=False)
    def thumbnail(request: Request, video_id: str) -> Response:
        try:
            return _thumbnail_response(request, store_getter(), video_id)
        except StoreError as exc:
            return _store_unavailable(exc)

    return router

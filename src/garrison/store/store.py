"""The durable store: tenants, the video request queue, training jobs, and the governor's decisions, samples,
settings and events, on SQLite (default, one machine) or PostgreSQL (shared deployments), through SQLAlchemy Core.

Every method is one transaction and returns frozen dataclasses (`garrison.store.rows`), so a Store is safe to share
between threads, and any number of processes (server, governor, workers) may open the same database at once.

The queue is hand-written because it has to live in the same database as everything else (a request is a row the
API shows, bills and deletes): claims are `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL and run under SQLite's
single writer lock (`BEGIN IMMEDIATE`, taken before the first read) on SQLite, so two workers never take one video.
Ownership is fenced: heartbeat, complete and fail by a worker only touch a video that worker holds now, so a worker
whose lease expired (and whose video went back to the queue) cannot overwrite its successor.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from garrison.core.fleet import QUALITY_LADDER, Cost, JobStatus, VideoStatus
from garrison.core.types import ENERGY_SOURCES
from garrison.store import migrate
from garrison.store.errors import Conflict, NotFound, StoreError
from garrison.store.models import decisions, events, jobs, samples, settings, tenants, videos
from garrison.store.rows import Decision, Event, Job, QueueStats, Sample, Tenant, Usage, Video

SQLITE_BUSY_TIMEOUT_MS = 30_000
MAX_NAME_CHARS = 200
MAX_IDEMPOTENCY_KEY_CHARS = 255
MAX_PAGE = 1000
CANCELLED = "cancelled"
WORKER_LOST = "worker_lost"

_SIZE_RE = re.compile(r"^[1-9][0-9]{0,5}x[1-9][0-9]{0,5}$")
_INT64 = 2**63
_INT32_MAX = 2**31 - 1
_ACTIVE = (VideoStatus.QUEUED.value, VideoStatus.IN_PROGRESS.value)
# The parameters that define a request: a retry with the same idempotency key must repeat them exactly.
_REQUEST_FIELDS = ("prompt", "model", "seconds", "size", "steps", "guidance", "seed")
_JOB_UPDATABLE = (
    "status",
    "started_at",
    "finished_at",
    "devices_held",
    "pid",
    "throughput",
    "steps_done",
    "joules",
    "error",
)


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""Default of `set_quotas` arguments: leave that quota as it is (None means unlimited)."""


def garrison_home() -> Path:
    """$GARRISON_HOME, else ~/.garrison (as the shield resolves it)."""
    return Path(os.environ.get("GARRISON_HOME") or Path.home() / ".garrison")


def default_url() -> str:
    """$GARRISON_DB_URL, else a SQLite file in $GARRISON_HOME."""
    return os.environ.get("GARRISON_DB_URL") or f"sqlite:///{garrison_home() / 'garrison.db'}"


def open_store(url: str | None = None) -> Store:
    """Open (creating and migrating to head as needed) the store at `url`.

    Args:
        url: `sqlite:///PATH`, `postgresql+psycopg://USER:PASS@HOST:PORT/DB` (`postgresql://` means the same), or
            None for $GARRISON_DB_URL, else `sqlite:///$GARRISON_HOME/garrison.db`.
    """
    return Store(url if url is not None else default_url())


# --- validation: bad input is a ValueError that says what to change ------------------------------------------------


def _text(value: object, what: str, *, max_chars: int | None = None, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise ValueError(f"{what} is empty")
    if max_chars is not None and len(value) > max_chars:
        raise ValueError(f"{what} has {len(value)} characters; the limit is {max_chars}")
    if "\x00" in value:  # PostgreSQL text cannot hold NUL; refuse it on both backends alike
        raise ValueError(f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{what} is not valid Unicode text: {error}") from None
    return value


def _optional_text(value: object, what: str, **kwargs: Any) -> str | None:
    return None if value is None else _text(value, what, **kwargs)


def _int(value: object, what: str, *, minimum: int | None = None, maximum: int = _INT32_MAX) -> int:
    """An integer in range; by default one that fits the 32-bit INTEGER columns PostgreSQL enforces."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    if value > maximum:
        raise ValueError(f"{what} must be <= {maximum}, got {value}")
    return value


def _number(value: object, what: str, *, minimum: float | None = None, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{what} must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    return value


def _optional_number(value: object, what: str, **kwargs: Any) -> float | None:
    return None if value is None else _number(value, what, **kwargs)


def _json(value: object, what: str) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{what} must be JSON (dicts, lists, strings, finite numbers, booleans, None): {error}"
        ) from None
    if _has_nul(value):
        raise ValueError(f"{what} contains a NUL character")
    return value


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


def _dict(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a dict, got {type(value).__name__}")
    return _json(dict(value), what)


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: in history (a meter that gave no reading) they are stored as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(item) for item in value]
    return value


def _history_dict(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a dict, got {type(value).__name__}")
    return _json(_finite_or_none(value), what)


def _quota(value: object, what: str, *, integer: bool) -> Any:
    if value is None:
        return None
    if integer:
        return _int(value, what, minimum=0)
    return _number(value, what, minimum=0.0)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _key_sha256(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


# --- rows -> dataclasses --------------------------------------------------------------------------------------------

_TENANT_FIELDS = tuple(f.name for f in fields(Tenant))
_VIDEO_FIELDS = tuple(f.name for f in fields(Video))
_JOB_FIELDS = tuple(f.name for f in fields(Job))


def _tenant(row: sa.Row) -> Tenant:
    m = row._mapping
    return Tenant(**{name: m[name] for name in _TENANT_FIELDS} | {"admin": bool(m["admin"])})


def _video(row: sa.Row) -> Video:
    m = row._mapping
    values = {name: m[name] for name in _VIDEO_FIELDS}
    values["status"] = VideoStatus(m["status"])
    values["scaled"] = None if m["scaled"] is None else bool(m["scaled"])
    return Video(**values)


def _job(row: sa.Row) -> Job:
    m = row._mapping
    return Job(**{name: m[name] for name in _JOB_FIELDS} | {"status": JobStatus(m["status"])})


class Store:
    """The durable store over one database. Thread-safe; open one per process (a forked copy reconnects itself).

    Use `open_store()` to get one; `close()` (or a `with` block) releases its connections.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine, self._memory = _make_engine(url)
        # An in-memory SQLite database is one connection; transactions on it must take turns.
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self._memory else contextlib.nullcontext()
        )
        self._pid = os.getpid()
        try:
            with self._lock:
                migrate.upgrade(self._engine)
        except sa.exc.SQLAlchemyError as error:
            self._engine.dispose()
            raise StoreError(f"cannot open the store at {self._redacted()}: {error}") from error
        except BaseException:
            self._engine.dispose()
            raise

    # --- plumbing -------------------------------------------------------------------------------------------------

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._engine.dialect.name

    def _redacted(self) -> str:
        return sa.make_url(self.url).render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"Store({self._redacted()!r})"

    def close(self) -> None:
        """Release the store's connections (the Store must not be used afterwards)."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sa.Connection]:
        if os.getpid() != self._pid:
            # A forked child must not use its parent's sockets or file handles; start a fresh pool.
            self._engine.dispose(close=False)
            self._pid = os.getpid()
        try:
            with self._lock, self._engine.connect().execution_options(garrison_write=write) as conn, conn.begin():
                yield conn
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
            raise StoreError(f"the store at {self._redacted()} failed: {error.orig or error}") from error

    def _read(self) -> contextlib.AbstractContextManager[sa.Connection]:
        return self._transaction(write=False)

    def _write(self) -> contextlib.AbstractContextManager[sa.Connection]:
        """A write transaction; on SQLite it holds the database's writer lock from its first statement."""
        return self._transaction(write=True)

    def _insert(self, table: sa.Table) -> Any:
        """INSERT with ON CONFLICT support in this backend's dialect."""
        return (pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert)(table)

    # --- tenants --------------------------------------------------------------------------------------------------

    def create_tenant(
        self,
        name: str,
        *,
        admin: bool = False,
        videos_per_day: int | None = None,
        joules_per_day: float | None = None,
        requests_per_minute: int | None = None,
    ) -> tuple[Tenant, str]:
        """Create a tenant and its API key.

        Returns:
            (tenant, api_key): the key (`gk-...`, 256 random bits) is shown here once; only its sha256 is stored.

        Raises:
            Conflict: a tenant of that name exists. ValueError: an empty name or a negative quota.
        """
        name = _text(name, "tenant name", max_chars=MAX_NAME_CHARS)
        values = {
            "videos_per_day": _quota(videos_per_day, "videos_per_day", integer=True),
            "joules_per_day": _quota(joules_per_day, "joules_per_day", integer=False),
            "requests_per_minute": _quota(requests_per_minute, "requests_per_minute", integer=True),
        }
        api_key = "gk-" + secrets.token_urlsafe(32)
        tenant_id = _new_id("ten")
        try:
            with self._write() as conn:
                if conn.execute(sa.select(tenants.c.id).where(tenants.c.name == name)).first() is not None:
                    raise Conflict(f"a tenant named {name!r} exists already")
                conn.execute(
                    tenants.insert().values(
                        id=tenant_id,
                        name=name,
                        admin=bool(admin),
                        key_sha256=_key_sha256(api_key),
                        key_prefix=api_key[:8],
                        created_at=time.time(),
                        **values,
                    )
                )
                row = conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id)).one()
        except sa.exc.IntegrityError as error:  # a concurrent create of the same name won the race
            raise Conflict(f"a tenant named {name!r} exists already") from error
        return _tenant(row), api_key

    def authenticate(self, api_key: str) -> Tenant | None:
        """The tenant this key belongs to, or None for an unknown key or a revoked tenant."""
        if not isinstance(api_key, str) or not api_key.startswith("gk-") or "\x00" in api_key:
            return None
        try:
            digest = _key_sha256(api_key)
        except UnicodeEncodeError:
            return None
        with self._read() as conn:
            row = conn.execute(sa.select(tenants).where(tenants.c.key_sha256 == digest)).first()
        if row is None or row.revoked_at is not None:
            return None
        return _tenant(row)

    def get_tenant(self, tenant_id: str) -> Tenant:
        """The tenant with this id. Raises NotFound."""
        with self._read() as conn:
            row = conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id)).first()
        if row is None:
            raise NotFound(f"no tenant with id {tenant_id!r}")
        return _tenant(row)

    def tenant_by_name(self, name: str) -> Tenant:
        """The tenant with this name. Raises NotFound."""
        with self._read() as conn:
            row = conn.execute(sa.select(tenants).where(tenants.c.name == name)).first()
        if row is None:
            raise NotFound(f"no tenant named {name!r}")
        return _tenant(row)

    def list_tenants(self) -> list[Tenant]:
        """Every tenant, revoked ones included, oldest first."""
        with self._read() as conn:
            rows = conn.execute(sa.select(tenants).order_by(tenants.c.created_at, tenants.c.id)).all()
        return [_tenant(row) for row in rows]

    def revoke_tenant(self, name: str) -> Tenant:
        """Revoke a tenant's key (idempotent: a second revoke keeps the first time). Raises NotFound."""
        with self._write() as conn:
            conn.execute(
                tenants.update()
                .where(tenants.c.name == name, tenants.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            row = conn.execute(sa.select(tenants).where(tenants.c.name == name)).first()
        if row is None:
            raise NotFound(f"no tenant named {name!r}")
        return _tenant(row)

    def set_quotas(
        self,
        name: str,
        *,
        videos_per_day: int | None = UNSET,
        joules_per_day: float | None = UNSET,
        requests_per_minute: int | None = UNSET,
    ) -> Tenant:
        """Change a tenant's quotas; an argument left out keeps its quota, None makes it unlimited.

        Raises:
            NotFound: no such tenant. ValueError: a negative quota.
        """
        values: dict[str, Any] = {}
        if videos_per_day is not UNSET:
            values["videos_per_day"] = _quota(videos_per_day, "videos_per_day", integer=True)
        if joules_per_day is not UNSET:
            values["joules_per_day"] = _quota(joules_per_day, "joules_per_day", integer=False)
        if requests_per_minute is not UNSET:
            values["requests_per_minute"] = _quota(requests_per_minute, "requests_per_minute", integer=True)
        with self._write() as conn:
            if values:
                conn.execute(tenants.update().where(tenants.c.name == name).values(**values))
            row = conn.execute(sa.select(tenants).where(tenants.c.name == name)).first()
        if row is None:
            raise NotFound(f"no tenant named {name!r}")
        return _tenant(row)

    def tenant_usage(self, tenant_id: str, since: float) -> Usage:
        """Videos the tenant created since `since` and the joules of those that completed.

        A video that never ran and was failed by the system (a refusal, an admission no, a queue timeout: failed
        with no attempt and a code other than `cancelled`) is not counted; one the tenant cancelled is.
        """
        since = _number(since, "since")
        refused = sa.and_(
            videos.c.status == VideoStatus.FAILED.value,
            videos.c.attempts == 0,
            sa.func.coalesce(videos.c.error_code, "") != CANCELLED,
        )
        mine = sa.and_(videos.c.tenant_id == tenant_id, videos.c.created_at >= since)
        with self._read() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(videos).where(mine, sa.not_(refused))).scalar()
            joules = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(videos.c.joules), 0.0)).where(
                    mine, videos.c.status == VideoStatus.COMPLETED.value
                )
            ).scalar()
        return Usage(videos=int(count or 0), joules=float(joules or 0.0))

    # --- videos: the request queue --------------------------------------------------------------------------------

    def create_video(
        self,
        tenant_id: str,
        *,
        prompt: str,
        model: str,
        seconds: int,
        size: str,
        steps: int,
        guidance: float,
        seed: int,
        idempotency_key: str | None = None,
        estimated_cost: Cost | None = None,
        policy: dict | None = None,
    ) -> tuple[Video, bool]:
        """Queue a video request.

        Returns:
            (video, created): with an idempotency key the tenant used before, the existing video and False.

        Raises:
            Conflict: the key was used with other parameters, or for a video since deleted.
            NotFound: no such tenant. ValueError: a parameter out of range.
        """
        request = {
            "prompt": _text(prompt, "prompt"),
            "model": _text(model, "model", max_chars=MAX_NAME_CHARS),
            "seconds": _int(seconds, "seconds", minimum=1),
            "size": _text(size, "size"),
            "steps": _int(steps, "steps", minimum=1),
            "guidance": _number(guidance, "guidance", minimum=0.0),
            "seed": _int(seed, "seed", minimum=-_INT64, maximum=_INT64 - 1),
        }
        if not _SIZE_RE.match(request["size"]):
            raise ValueError(f"size must be WIDTHxHEIGHT in pixels, like 1280x720; got {size!r}")
        idempotency_key = _optional_text(idempotency_key, "idempotency key", max_chars=MAX_IDEMPOTENCY_KEY_CHARS)
        if estimated_cost is not None and not isinstance(estimated_cost, Cost):
            raise ValueError(f"estimated_cost must be a garrison.core.fleet.Cost, got {type(estimated_cost).__name__}")
        policy = _dict(policy if policy is not None else {}, "policy")
        video_id = _new_id("video")
        try:
            with self._write() as conn:
                if idempotency_key is not None:
                    existing = self._by_idempotency_key(conn, tenant_id, idempotency_key)
                    if existing is not None:
                        return _same_request(existing, request), False
                if conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tenant_id)).first() is None:
                    raise NotFound(f"no tenant with id {tenant_id!r}")
                conn.execute(
                    videos.insert().values(
                        id=video_id,
                        tenant_id=tenant_id,
                        status=VideoStatus.QUEUED.value,
                        progress=0,
                        created_at=time.time(),
                        idempotency_key=idempotency_key,
                        attempts=0,
                        estimated_device_s=None if estimated_cost is None else float(estimated_cost.device_s),
                        estimated_joules=None if estimated_cost is None else float(estimated_cost.joules),
                        estimated_flops=None if estimated_cost is None else float(estimated_cost.flops),
                        policy=policy,
                        provenance={},
                        **request,
                    )
                )
                row = conn.execute(sa.select(videos).where(videos.c.id == video_id)).one()
        except sa.exc.IntegrityError:
            # PostgreSQL: a concurrent request with the same key committed first; the unique constraint stopped us.
            if idempotency_key is None:
                raise
            with self._read() as conn:
                existing = self._by_idempotency_key(conn, tenant_id, idempotency_key)
            if existing is None:
                raise
            return _same_request(existing, request), False
        return _video(row), True

    @staticmethod
    def _by_idempotency_key(conn: sa.Connection, tenant_id: str, key: str) -> sa.Row | None:
        return conn.execute(
            sa.select(videos).where(videos.c.tenant_id == tenant_id, videos.c.idempotency_key == key)
        ).first()

    def get_video(self, video_id: str, tenant_id: str | None = None) -> Video:
        """A video that is not deleted (and, with `tenant_id`, belongs to that tenant). Raises NotFound."""
        query = sa.select(videos).where(videos.c.id == video_id, videos.c.deleted_at.is_(None))
        if tenant_id is not None:
            query = query.where(videos.c.tenant_id == tenant_id)
        with self._read() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"no video with id {video_id!r}")
        return _video(row)

    def list_videos(
        self,
        tenant_id: str,
        *,
        after: str | None = None,
        limit: int = 20,
        order: Literal["asc", "desc"] = "desc",
    ) -> tuple[list[Video], bool]:
        """A page of the tenant's videos (deleted ones left out), ordered by (created_at, id).

        Args:
            after: the id of the last video of the previous page (it may since have been deleted).
            limit: 1..1000 videos a page.
            order: `desc` newest first, `asc` oldest first.

        Returns:
            (videos, has_more).

        Raises:
            ValueError: a bad limit or order, or `after` not a video of this tenant.
        """
        limit = _int(limit, "limit", minimum=1, maximum=MAX_PAGE)
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', got {order!r}")
        query = sa.select(videos).where(videos.c.tenant_id == tenant_id, videos.c.deleted_at.is_(None))
        with self._read() as conn:
            if after is not None:
                cursor = conn.execute(
                    sa.select(videos.c.created_at, videos.c.id).where(
                        videos.c.id == after, videos.c.tenant_id == tenant_id
                    )
                ).first()
                if cursor is None:
                    raise ValueError(f"after={after!r} is not one of this tenant's videos")
                # Rows may share a created_at; (created_at, id) is a total order, so no row is skipped or repeated.
                if order == "asc":
                    beyond = sa.or_(
                        videos.c.created_at > cursor.created_at,
                        sa.and_(videos.c.created_at == cursor.created_at, videos.c.id > cursor.id),
                    )
                else:
                    beyond = sa.or_(
                        videos.c.created_at < cursor.created_at,
                        sa.and_(videos.c.created_at == cursor.created_at, videos.c.id < cursor.id),
                    )
                query = query.where(beyond)
            if order == "asc":
                query = query.order_by(videos.c.created_at.asc(), videos.c.id.asc())
            else:
                query = query.order_by(videos.c.created_at.desc(), videos.c.id.desc())
            rows = conn.execute(query.limit(limit + 1)).all()
        return [_video(row) for row in rows[:limit]], len(rows) > limit

    def delete_video(self, video_id: str, tenant_id: str | None) -> Video:
        """Soft-delete a video (None as tenant: whoever owns it) and return it, so the caller can remove its files.

        A queued or in-progress video is cancelled first (failed, code `cancelled`): no worker can complete it later.
        Raises NotFound (also for a video deleted already).
        """
        query = sa.select(videos).where(videos.c.id == video_id, videos.c.deleted_at.is_(None))
        if tenant_id is not None:
            query = query.where(videos.c.tenant_id == tenant_id)
        with self._write() as conn:
            row = conn.execute(query.with_for_update()).first()
            if row is None:
                raise NotFound(f"no video with id {video_id!r}")
            now = time.time()
            values: dict[str, Any] = {"deleted_at": now}
            if row.status in _ACTIVE:
                values |= {
                    "status": VideoStatus.FAILED.value,
                    "error_code": CANCELLED,
                    "error_message": "deleted by its owner before it finished",
                    "completed_at": now,
                    "lease_expires_at": None,
                }
            conn.execute(videos.update().where(videos.c.id == video_id).values(**values))
            self._event(conn, "video.deleted", video_id, {"status_before": row.status})
            row = conn.execute(sa.select(videos).where(videos.c.id == video_id)).one()
        return _video(row)

    def claim_video(self, worker_id: str, device_id: str, lease_s: float, quality_level: int) -> Video | None:
        """Take the oldest queued video for this worker, or None when the queue is empty.

        The video becomes in_progress with a lease of `lease_s` seconds, which the worker renews by `heartbeat`.
        """
        worker_id = _text(worker_id, "worker_id", max_chars=MAX_NAME_CHARS)
        device_id = _text(device_id, "device_id", max_chars=MAX_NAME_CHARS)
        lease_s = _number(lease_s, "lease_s", positive=True)
        quality_level = _int(quality_level, "quality_level", minimum=0, maximum=len(QUALITY_LADDER) - 1)
        oldest = (
            sa.select(videos.c.id)
            .where(videos.c.status == VideoStatus.QUEUED.value, videos.c.deleted_at.is_(None))
            .order_by(videos.c.created_at, videos.c.id)
            .limit(1)
            # PostgreSQL: rows other claimers hold are skipped, not waited for. SQLite ignores this; there the write
            # transaction (BEGIN IMMEDIATE) already makes this claim the only writer.
            .with_for_update(skip_locked=True)
        )
        with self._write() as conn:
            video_id = conn.execute(oldest).scalar()
            if video_id is None:
                return None
            now = time.time()
            conn.execute(
                videos.update()
                .where(videos.c.id == video_id)
                .values(
                    status=VideoStatus.IN_PROGRESS.value,
                    progress=0,
                    started_at=now,
                    worker_id=worker_id,
                    device_id=device_id,
                    lease_expires_at=now + lease_s,
                    attempts=videos.c.attempts + 1,
                    quality_level=quality_level,
                )
            )
            row = conn.execute(sa.select(videos).where(videos.c.id == video_id)).one()
        return _video(row)

    def _owned(self, video_id: str, worker_id: str) -> sa.ColumnElement[bool]:
        """The fence: this worker holds this video now (in progress, not deleted, not requeued or taken over)."""
        return sa.and_(
            videos.c.id == video_id,
            videos.c.worker_id == worker_id,
            videos.c.status == VideoStatus.IN_PROGRESS.value,
            videos.c.deleted_at.is_(None),
        )

    def heartbeat(self, video_id: str, worker_id: str, progress: int, lease_s: float) -> bool:
        """Renew the lease and record progress (0..100). False, changing nothing, if the worker no longer holds the
        video (requeued, cancelled, deleted, or taken over): the worker should stop."""
        progress = _int(progress, "progress", minimum=0, maximum=100)
        lease_s = _number(lease_s, "lease_s", positive=True)
        with self._write() as conn:
            result = conn.execute(
                videos.update()
                .where(self._owned(video_id, worker_id))
                .values(progress=progress, lease_expires_at=time.time() + lease_s)
            )
        return result.rowcount == 1

    def complete_video(
        self,
        video_id: str,
        worker_id: str,
        *,
        path: str,
        thumbnail_path: str | None,
        seconds_wall: float,
        joules: float,
        energy_source: str,
        cost_usd: float | None,
        co2_g: float | None,
        flops: float,
        steps_used: int,
        native_size: str,
        scaled: bool,
        provenance: dict,
    ) -> bool:
        """Record the finished video. False, changing nothing, if this worker no longer holds it (fencing)."""
        if energy_source not in ENERGY_SOURCES:
            raise ValueError(f"energy_source must be one of {ENERGY_SOURCES}, got {energy_source!r}")
        values = {
            "path": _text(path, "path"),
            "thumbnail_path": _optional_text(thumbnail_path, "thumbnail_path"),
            "seconds_wall": _number(seconds_wall, "seconds_wall", minimum=0.0),
            "joules": _number(joules, "joules", minimum=0.0),
            "energy_source": energy_source,
            "cost_usd": _optional_number(cost_usd, "cost_usd", minimum=0.0),
            "co2_g": _optional_number(co2_g, "co2_g", minimum=0.0),
            "flops": _number(flops, "flops", minimum=0.0),
            "steps_used": _int(steps_used, "steps_used", minimum=0),
            "native_size": _text(native_size, "native_size"),
            "scaled": bool(scaled),
            "provenance": _dict(provenance, "provenance"),
        }
        with self._write() as conn:
            result = conn.execute(
                videos.update()
                .where(self._owned(video_id, worker_id))
                .values(
                    status=VideoStatus.COMPLETED.value,
                    progress=100,
                    completed_at=time.time(),
                    lease_expires_at=None,
                    **values,
                )
            )
        return result.rowcount == 1

    def fail_video(self, video_id: str, worker_id: str | None, code: str, message: str) -> bool:
        """Mark a video failed with an error code and a message a user can read.

        `worker_id` None is the system (admission, policy, drain): it may fail any queued or in-progress video.
        A worker may fail only a video it holds now. False when nothing was changed.
        """
        code = _text(code, "error code", max_chars=MAX_NAME_CHARS)
        message = _text(message, "error message", empty_ok=True)
        if worker_id is None:
            where = sa.and_(videos.c.id == video_id, videos.c.status.in_(_ACTIVE), videos.c.deleted_at.is_(None))
        else:
            where = self._owned(video_id, worker_id)
        with self._write() as conn:
            result = conn.execute(
                videos.update()
                .where(where)
                .values(
                    status=VideoStatus.FAILED.value,
                    error_code=code,
                    error_message=message,
                    completed_at=time.time(),
                    lease_expires_at=None,
                )
            )
        return result.rowcount == 1

    def requeue_video(self, video_id: str, reason: str) -> bool:
        """Put an in-progress video back at its place in the queue (reclaim, drain); attempts are kept.

        Its worker loses it: that worker's next heartbeat returns False. False if it was not in progress.
        """
        reason = _text(reason, "reason", empty_ok=True)
        with self._write() as conn:
            row = conn.execute(
                sa.select(videos.c.worker_id, videos.c.attempts)
                .where(
                    videos.c.id == video_id,
                    videos.c.status == VideoStatus.IN_PROGRESS.value,
                    videos.c.deleted_at.is_(None),
                )
                .with_for_update()
            ).first()
            if row is None:
                return False
            self._requeue(conn, video_id)
            self._event(
                conn,
                "video.requeued",
                video_id,
                {"reason": reason, "worker_id": row.worker_id, "attempts": row.attempts},
            )
        return True

    @staticmethod
    def _requeue(conn: sa.Connection, video_id: str) -> None:
        conn.execute(
            videos.update()
            .where(videos.c.id == video_id)
            .values(
                status=VideoStatus.QUEUED.value,
                progress=0,
                started_at=None,
                worker_id=None,
                device_id=None,
                lease_expires_at=None,
                quality_level=None,
            )
        )

    def recover_expired(self, now: float | None = None, max_attempts: int = 3) -> list[tuple[str, str]]:
        """Requeue every in-progress video whose lease ran out, or fail it (`worker_lost`) once it has had
        `max_attempts` attempts. This is how a killed worker or server loses no request.

        Returns:
            (video_id, "requeued" | "failed") for each video recovered.
        """
        now = time.time() if now is None else _number(now, "now")
        max_attempts = _int(max_attempts, "max_attempts", minimum=1)
        recovered: list[tuple[str, str]] = []
        with self._write() as conn:
            expired = conn.execute(
                sa.select(videos.c.id, videos.c.attempts, videos.c.worker_id)
                .where(
                    videos.c.status == VideoStatus.IN_PROGRESS.value,
                    videos.c.deleted_at.is_(None),
                    videos.c.lease_expires_at < now,
                )
                .order_by(videos.c.id)
                # A row whose worker is renewing its lease right now is skipped; it is not lost.
                .with_for_update(skip_locked=True)
            ).all()
            for row in expired:
                data = {"worker_id": row.worker_id, "attempts": row.attempts, "max_attempts": max_attempts}
                if row.attempts >= max_attempts:
                    conn.execute(
                        videos.update()
                        .where(videos.c.id == row.id)
                        .values(
                            status=VideoStatus.FAILED.value,
                            error_code=WORKER_LOST,
                            error_message=(
                                f"its worker stopped renewing the lease on each of {row.attempts} attempts; "
                                "not retried again"
                            ),
                            completed_at=now,
                            lease_expires_at=None,
                        )
                    )
                    self._event(conn, "video.worker_lost", row.id, data)
                    recovered.append((row.id, "failed"))
                else:
                    self._requeue(conn, row.id)
                    self._event(conn, "video.requeued", row.id, data | {"reason": "lease expired"})
                    recovered.append((row.id, "requeued"))
        return recovered

    def videos_in_progress(self) -> list[Video]:
        """Every video a worker holds now, across tenants (the governor's view of what runs where)."""
        query = sa.select(videos).where(videos.c.status == VideoStatus.IN_PROGRESS.value, videos.c.deleted_at.is_(None))
        with self._read() as conn:
            return [_video(row) for row in conn.execute(query.order_by(videos.c.started_at, videos.c.id)).all()]

    def videos_held_by(self, worker_id: str) -> list[Video]:
        """The videos worker `worker_id` holds now (what must be requeued when it is stopped or dies)."""
        query = sa.select(videos).where(
            videos.c.status == VideoStatus.IN_PROGRESS.value, videos.c.worker_id == worker_id
        )
        with self._read() as conn:
            return [_video(row) for row in conn.execute(query.order_by(videos.c.started_at, videos.c.id)).all()]

    def recent_videos(self, since: float, limit: int = 1000) -> list[Video]:
        """Videos created or completed since `since`, across tenants, oldest first (service times, arrival rate,
        SLO attainment; the dashboard's recent videos)."""
        limit = _int(limit, "limit", minimum=1, maximum=100_000)
        since = _number(since, "since")
        query = (
            sa.select(videos)
            .where(sa.or_(videos.c.created_at >= since, videos.c.completed_at >= since))
            .order_by(videos.c.created_at, videos.c.id)
            .limit(limit)
        )
        with self._read() as conn:
            return [_video(row) for row in conn.execute(query).all()]

    def completed_videos(self, since: float, limit: int = 50) -> list[Video]:
        """The last `limit` videos completed since `since`, across tenants, oldest first (cost calibration).

        Reads only those rows (through the completed_at index), however many videos were created meanwhile.
        """
        limit = _int(limit, "limit", minimum=1, maximum=100_000)
        since = _number(since, "since")
        query = (
            sa.select(videos)
            .where(videos.c.status == VideoStatus.COMPLETED.value, videos.c.completed_at >= since)
            .order_by(videos.c.completed_at.desc(), videos.c.id.desc())
            .limit(limit)
        )
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [_video(row) for row in reversed(rows)]

    def queue_stats(self) -> QueueStats:
        """The queue now: depths, the oldest wait, and what finished in the last minute."""
        now = time.time()
        live = videos.c.deleted_at.is_(None)
        recent = videos.c.completed_at >= now - 60.0
        with self._read() as conn:
            counts = dict(
                conn.execute(
                    sa.select(videos.c.status, sa.func.count())
                    .where(live, videos.c.status.in_(_ACTIVE))
                    .group_by(videos.c.status)
                ).all()
            )
            oldest = conn.execute(
                sa.select(sa.func.min(videos.c.created_at)).where(live, videos.c.status == VideoStatus.QUEUED.value)
            ).scalar()
            finished = dict(
                conn.execute(
                    sa.select(videos.c.status, sa.func.count())
                    .where(recent, videos.c.status.in_((VideoStatus.COMPLETED.value, VideoStatus.FAILED.value)))
                    .group_by(videos.c.status)
                ).all()
            )
            joules = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(videos.c.joules), 0.0)).where(
                    recent, videos.c.status == VideoStatus.COMPLETED.value
                )
            ).scalar()
        return QueueStats(
            queued=int(counts.get(VideoStatus.QUEUED.value, 0)),
            in_progress=int(counts.get(VideoStatus.IN_PROGRESS.value, 0)),
            oldest_queued_age_s=None if oldest is None else max(0.0, now - float(oldest)),
            completed_last_minute=int(finished.get(VideoStatus.COMPLETED.value, 0)),
            failed_last_minute=int(finished.get(VideoStatus.FAILED.value, 0)),
            joules_last_minute=float(joules or 0.0),
        )

    # --- training jobs --------------------------------------------------------------------------------------------

    def create_job(self, name: str, *, command: list[str], devices: int, tenant_id: str | None = None) -> Job:
        """Record a training job, `waiting` for its devices. Raises ValueError, NotFound (unknown tenant)."""
        name = _text(name, "job name", max_chars=MAX_NAME_CHARS)
        if not isinstance(command, list | tuple) or not command:
            raise ValueError("command must be a non-empty list of strings")
        command = [_text(part, "command argument", empty_ok=True) for part in command]
        devices = _int(devices, "devices", minimum=1)
        job_id = _new_id("job")
        with self._write() as conn:
            if (
                tenant_id is not None
                and conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tenant_id)).first() is None
            ):
                raise NotFound(f"no tenant with id {tenant_id!r}")
            conn.execute(
                jobs.insert().values(
                    id=job_id,
                    name=name,
                    command=command,
                    devices_requested=devices,
                    devices_held=[],
                    status=JobStatus.WAITING.value,
                    created_at=time.time(),
                    steps_done=0,
                    joules=0.0,
                    tenant_id=tenant_id,
                )
            )
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one()
        return _job(row)

    def get_job(self, job_id: str) -> Job:
        """The job with this id. Raises NotFound."""
        with self._read() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise NotFound(f"no job with id {job_id!r}")
        return _job(row)

    def list_jobs(self, status: str | None = None) -> list[Job]:
        """Jobs (of one JobStatus if given), oldest first."""
        query = sa.select(jobs).order_by(jobs.c.created_at, jobs.c.id)
        if status is not None:
            query = query.where(jobs.c.status == _job_status(status).value)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [_job(row) for row in rows]

    def update_job(self, job_id: str, **fields: Any) -> Job:
        """Set some of: status, started_at, finished_at, devices_held (list of device ids), pid, throughput,
        steps_done, joules, error. Raises NotFound, ValueError (an unknown field or a bad value)."""
        unknown = sorted(set(fields) - set(_JOB_UPDATABLE))
        if unknown:
            raise ValueError(f"update_job cannot set {', '.join(unknown)}; it sets {', '.join(_JOB_UPDATABLE)}")
        values: dict[str, Any] = {}
        for key, value in fields.items():
            if key == "status":
                values[key] = _job_status(value).value
            elif key == "devices_held":
                if not isinstance(value, list | tuple):
                    raise ValueError("devices_held must be a list of device ids")
                values[key] = [_text(device, "device id") for device in value]
            elif key in ("pid", "steps_done"):
                maximum = _INT64 - 1 if key == "steps_done" else _INT32_MAX
                values[key] = None if value is None and key == "pid" else _int(value, key, minimum=0, maximum=maximum)
            elif key == "error":
                values[key] = _optional_text(value, "error", empty_ok=True)
            elif key == "joules":
                values[key] = _number(value, key, minimum=0.0)
            else:
                values[key] = _optional_number(value, key, minimum=0.0)
        with self._write() as conn:
            if values:
                conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise NotFound(f"no job with id {job_id!r}")
        return _job(row)

    def cancel_job(self, job_id: str) -> Job:
        """Cancel a waiting or running job (the governor stops its process); a finished job is returned as it is."""
        with self._write() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status.in_((JobStatus.WAITING.value, JobStatus.RUNNING.value)))
                .values(status=JobStatus.CANCELLED.value, finished_at=time.time())
            )
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise NotFound(f"no job with id {job_id!r}")
        return _job(row)

    # --- governor state and history -------------------------------------------------------------------------------

    def record_decision(self, tick: int, action: str, target: str | None, reason: str, reading: dict) -> None:
        """Record one governor decision and the reading it was made on.

        In `reading` (as in samples' `allocation` and `extra` and events' `data`) a NaN or infinite number, which
        JSON cannot hold, is stored as None: a meter that gave no reading."""
        values = {
            "ts": time.time(),
            "tick": _int(tick, "tick", maximum=_INT64 - 1),
            "action": _text(action, "action"),
            "target": _optional_text(target, "target", empty_ok=True),
            "reason": _text(reason, "reason", empty_ok=True),
            "reading": _history_dict(reading, "reading"),
        }
        with self._write() as conn:
            conn.execute(decisions.insert().values(**values))

    def list_decisions(self, since: float | None = None, limit: int = 200) -> list[Decision]:
        """Decisions in time order: the first `limit` after `since`, or with `since` None the latest `limit`."""
        rows = self._history(decisions, since, limit)
        return [Decision(**row._mapping) for row in rows]

    def record_sample(
        self,
        ts: float,
        power_w: float,
        power_cap_w: float,
        allocation: dict,
        queue_depth: int,
        gate: str,
        extra: dict,
    ) -> None:
        """Record one sample of the governor's state, for the dashboard's charts."""
        values = {
            "ts": _number(ts, "ts"),
            "power_w": _number(power_w, "power_w", minimum=0.0),
            "power_cap_w": _number(power_cap_w, "power_cap_w", minimum=0.0),
            "allocation": _history_dict(allocation, "allocation"),
            "queue_depth": _int(queue_depth, "queue_depth", minimum=0),
            "gate": _text(gate, "gate", empty_ok=True),
            "extra": _history_dict(extra, "extra"),
        }
        with self._write() as conn:
            conn.execute(samples.insert().values(**values))

    def list_samples(self, since: float | None = None, limit: int = 1000) -> list[Sample]:
        """Samples in time order: the first `limit` after `since`, or with `since` None the latest `limit`."""
        rows = self._history(samples, since, limit)
        return [Sample(**row._mapping) for row in rows]

    def _history(
        self, table: sa.Table, since: float | None, limit: int, where: tuple[sa.ColumnElement[bool], ...] = ()
    ) -> list[sa.Row]:
        limit = _int(limit, "limit", minimum=1)
        query = sa.select(table).where(*where)
        with self._read() as conn:
            if since is None:
                # The latest `limit`, then back into time order.
                rows = conn.execute(query.order_by(table.c.ts.desc(), table.c.id.desc()).limit(limit)).all()
                return rows[::-1]
            since = _number(since, "since")
            query = query.where(table.c.ts > since).order_by(table.c.ts, table.c.id).limit(limit)
            return conn.execute(query).all()

    def get_setting(self, key: str, default: Any = None) -> Any:
        """A setting's value (JSON), or `default` when it was never set."""
        with self._read() as conn:
            row = conn.execute(sa.select(settings.c.value).where(settings.c.key == key)).first()
        return default if row is None else row.value

    def set_setting(self, key: str, value: Any) -> None:
        """Set a setting to a JSON value (e.g. `serving.quality_level`, `admission.mode`, `gate.state`)."""
        key = _text(key, "setting key", max_chars=255)
        value = _json(value, f"setting {key!r}")
        now = time.time()
        statement = self._insert(settings).values(key=key, value=value, updated_at=now)
        statement = statement.on_conflict_do_update(
            index_elements=[settings.c.key], set_={"value": statement.excluded.value, "updated_at": now}
        )
        with self._write() as conn:
            conn.execute(statement)

    def record_event(self, kind: str, subject_id: str | None, data: dict) -> None:
        """Record that something happened to a subject (a video, job or tenant id; None for the fleet)."""
        kind = _text(kind, "event kind", max_chars=MAX_NAME_CHARS)
        subject_id = _optional_text(subject_id, "subject_id")
        data = _history_dict(data, "event data")
        with self._write() as conn:
            self._event(conn, kind, subject_id, data)

    @staticmethod
    def _event(conn: sa.Connection, kind: str, subject_id: str | None, data: dict[str, Any]) -> None:
        conn.execute(events.insert().values(ts=time.time(), kind=kind, subject_id=subject_id, data=data))

    def list_events(
        self,
        *,
        kind: str | None = None,
        subject_id: str | None = None,
        since: float | None = None,
        limit: int = 200,
    ) -> list[Event]:
        """Events in time order, of one kind and/or subject if given; as `list_decisions` for `since` and `limit`."""
        where: list[sa.ColumnElement[bool]] = []
        if kind is not None:
            where.append(events.c.kind == kind)
        if subject_id is not None:
            where.append(events.c.subject_id == subject_id)
        rows = self._history(events, since, limit, tuple(where))
        return [Event(**row._mapping) for row in rows]


def _job_status(value: object) -> JobStatus:
    try:
        return JobStatus(value)
    except ValueError:
        raise ValueError(f"job status must be one of {', '.join(s.value for s in JobStatus)}, got {value!r}") from None


def _same_request(existing: sa.Row, request: dict[str, Any]) -> Video:
    """The stored video for a reused idempotency key, if the retry asks for the same thing; else Conflict."""
    video = _video(existing)
    if video.deleted_at is not None:
        raise Conflict(f"idempotency key {video.idempotency_key!r} was used for video {video.id}, since deleted")
    differing = [name for name in _REQUEST_FIELDS if getattr(video, name) != request[name]]
    if differing:
        raise Conflict(
            f"idempotency key {video.idempotency_key!r} was used for video {video.id} with a different "
            f"{', '.join(differing)}; use a new key for a new request"
        )
    return video


def _make_engine(url: str) -> tuple[sa.Engine, bool]:
    """An engine for `url` (SQLite or PostgreSQL via psycopg 3) and whether it is an in-memory SQLite database."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as error:
        raise StoreError(f"not a database URL: {url!r} (use sqlite:///PATH or postgresql+psycopg://...)") from error
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is what garrison installs
        if parsed.drivername != "postgresql+psycopg":
            raise StoreError(
                f"PostgreSQL is reached through psycopg 3: use postgresql+psycopg://, not {parsed.drivername}://"
            )
        return sa.create_engine(parsed, pool_pre_ping=True), False
    if backend != "sqlite" or parsed.drivername not in ("sqlite", "sqlite+pysqlite"):
        raise StoreError(f"unsupported database {parsed.drivername!r}: use sqlite:///PATH or postgresql+psycopg://...")
    memory = parsed.database in (None, "", ":memory:")
    if memory:
        engine = sa.create_engine(parsed, poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False})
    else:
        try:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(
                f"cannot create the directory of the SQLite database {parsed.database}: {error}"
            ) from error
        engine = sa.create_engine(parsed)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below): pysqlite's own transaction handling would defer the writer lock.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not memory and cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cursor.execute("PRAGMA journal_mode = WAL")  # readers never wait for the writer
        # In WAL mode NORMAL loses no committed transaction when a process dies, only (maybe) at an OS crash.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # A write transaction takes the writer lock at once, so a read-then-write can never fail halfway with
        # SQLITE_BUSY and two claimers can never read the same queued row.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("garrison_write") else "BEGIN")

    return engine, memory

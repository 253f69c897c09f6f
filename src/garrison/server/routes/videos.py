"""`/v1/videos`: OpenAI's Videos API shape, served by garrison's queue in the store.

POST validates, screens the prompt (shield), checks the tenant's quotas, asks the governor's admission, and writes a
queued row; workers (separate processes) pick it up. GET, list, DELETE and /content read the store and the content
folder. Files are named by the server (`<content_dir>/<video_id>.mp4`); the id is checked against a strict pattern
and must belong to the caller, so nothing a client sends becomes part of a path.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from garrison.core.fleet import QUALITY_LADDER, VideoStatus
from garrison.governor.executors.serving_worker import CONTENT_MEDIA_TYPES, content_path
from garrison.server.auth import authenticate
from garrison.server.errors import APIError, bad_request, not_found
from garrison.server.logs import log_fields
from garrison.server.policy_pool import PolicyPool, PolicyUnavailable
from garrison.server.schemas import (
    ErrorResponse,
    GarrisonVideoInfo,
    VideoCreate,
    VideoDeleted,
    VideoList,
    VideoObject,
)
from garrison.shield.policy import PolicyDecision
from garrison.store import Conflict, NotFound

log = logging.getLogger("garrison.server.videos")
router = APIRouter(prefix="/v1/videos", tags=["videos"])

VIDEO_ID_RE = re.compile(r"video_[0-9a-f]{32}")
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces
MAX_LIST_LIMIT = 100
POLL_AFTER_QUEUED_MS = 1000
POLL_AFTER_IN_PROGRESS_MS = 500
BUILTIN_MODEL = "garrison-builtin-dit"

ERRORS = {
    400: {"model": ErrorResponse, "description": "Bad input; the message says why."},
    401: {"model": ErrorResponse, "description": "No or invalid API key."},
    404: {"model": ErrorResponse, "description": "No such video for this tenant."},
    429: {"model": ErrorResponse, "description": "Quota or rate limit; see Retry-After."},
}

# Inline (VideoCreate is parsed by hand, for both content types, so FastAPI would not list it among the components).
_CREATE_SCHEMA = VideoCreate.model_json_schema()
_CREATE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _CREATE_SCHEMA},
            "multipart/form-data": {"schema": _CREATE_SCHEMA},
        },
    }
}


def check_video_id(video_id: str) -> str:
    """The id if it has the store's shape; a 400 naming the shape otherwise."""
    if not VIDEO_ID_RE.fullmatch(video_id):
        shown = video_id[:40]
        raise bad_request(f"invalid video id {shown!r}: ids look like video_<hex>", param="video_id", code="invalid_id")
    return video_id


def native_render(size: str, quality_level: int | None) -> tuple[str, bool]:
    """The native size the built-in model renders `size` at (on a quality rung) and whether it is scaled."""
    from garrison.core.types import VideoSpec
    from garrison.video.pipelines.sizes import render_size  # not builtin: that imports torch

    width, height = (int(x) for x in size.split("x"))
    rung = QUALITY_LADDER[quality_level or 0]
    (w, h), scaled = render_size(VideoSpec("x", width=width, height=height, native_scale=rung.native_scale))
    return f"{w}x{h}", scaled


def video_object(row: Any) -> dict[str, Any]:
    """A store Video row as OpenAI's Video object, with garrison's facts under `garrison`."""
    if row.native_size is not None:
        native_size, scaled = row.native_size, bool(row.scaled)
    else:
        native_size, scaled = native_render(row.size, row.quality_level)
    rung = QUALITY_LADDER[row.quality_level] if row.quality_level is not None else None
    error = None
    if row.status == VideoStatus.FAILED:
        error = {"code": row.error_code or "generation_failed", "message": row.error_message or "generation failed"}
    info = GarrisonVideoInfo(
        model_used=BUILTIN_MODEL,
        quality_level=row.quality_level,
        quality_name=rung.name if rung else None,
        steps_requested=row.steps,
        steps_used=row.steps_used,
        native_size=native_size,
        scaled=scaled,
        joules=row.joules,
        energy_source=row.energy_source,
        cost_usd=row.cost_usd,
        co2_g=row.co2_g,
        flops=row.flops,
        seconds_wall=row.seconds_wall,
        device_id=row.device_id,
        attempts=row.attempts,
        seed=row.seed,
        guidance=row.guidance,
        provenance=row.provenance or None,
        estimated={"device_s": row.estimated_device_s, "joules": row.estimated_joules},
    )
    return VideoObject(
        id=row.id,
        created_at=int(row.created_at),
        completed_at=int(row.completed_at) if row.completed_at is not None else None,
        model=row.model,
        progress=int(row.progress),
        prompt=row.prompt,
        seconds=str(row.seconds),
        size=row.size,
        status=str(row.status),
        error=error,
        garrison=info,
    ).model_dump()


async def _read_create_body(request: Request) -> dict[str, Any]:
    """The create parameters from JSON or multipart/form-data (what the SDK sends)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from e
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object", code="invalid_json")
        return body
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=4, max_fields=32, max_part_size=64 * 1024)
        except APIError:
            raise
        except Exception as e:  # the multipart parser's errors are all bad input
            if getattr(e, "status_code", None) == 413:
                raise
            raise bad_request(f"the form body cannot be parsed: {str(e)[:200]}", code="invalid_form") from e
        body: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key == "input_reference":
                    raise bad_request(
                        "input_reference is not supported: the built-in model generates from text only",
                        param="input_reference",
                        code="unsupported_parameter",
                    )
                raise bad_request(f"unexpected file field {key[:40]!r}", param=key[:40])
            body[key] = value
        return body
    raise APIError(
        415,
        "send the parameters as application/json or multipart/form-data",
        code="unsupported_media_type",
    )


def _validation_error(e: ValidationError) -> APIError:
    first = e.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ())) or None
    msg = first.get("msg", "invalid").removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        msg = "unknown parameter"
        if param == "input_reference":
            msg = "input_reference is not supported: the built-in model generates from text only"
    if first.get("type") == "missing":
        msg = "this parameter is required"
    return APIError(400, f"{param}: {msg}" if param else msg, code="invalid_value", param=param)


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise bad_request(
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
            param="Idempotency-Key",
            code="invalid_idempotency_key",
        )
    return key


def _create(
    request: Request, tenant: Any, params: VideoCreate, idempotency_key: str | None, decision: PolicyDecision | None
) -> tuple[Any, bool]:
    """The blocking part of a create (the policy's audit record, quotas, admission, the store), run in a worker
    thread. `decision` is the policy's, made in the policy process; None screens the prompt here."""
    from garrison.shield.verify import default_shield

    state = request.app.state
    shield = default_shield()
    if decision is None:
        decision = shield.screen_prompt(params.prompt)  # audited by the shield
    else:
        shield.record_policy_decision(params.prompt, decision)
    if decision.refused:
        raise APIError(
            400,
            f"prompt refused by the content policy ({decision.category}: {decision.reason})",
            code="content_policy_violation",
            param="prompt",
            extra={"category": decision.category, "reason": decision.reason},
        )
    estimate = state.admission.admit_video(tenant, params, now_s=time.time())
    try:
        return state.store.create_video(
            tenant.id,
            prompt=params.prompt,
            model=params.model,
            seconds=int(params.seconds),
            size=params.size,
            steps=params.steps,
            guidance=params.guidance,
            seed=params.seed,
            idempotency_key=idempotency_key,
            estimated_cost=estimate,
            policy=decision.to_dict(),
        )
    except ValueError as e:  # a parameter the store refuses that the schema let through
        raise bad_request(str(e)) from e
    except Conflict as e:
        raise APIError(
            409, f"Idempotency-Key already used with other parameters: {e}", code="idempotency_conflict"
        ) from e


@router.post(
    "",
    response_model=VideoObject,
    responses=ERRORS | {409: {"model": ErrorResponse}, 415: {"model": ErrorResponse}},
    openapi_extra=_CREATE_OPENAPI,
    summary="Create a video",
)
async def create_video(request: Request, tenant: Annotated[Any, Depends(authenticate)]) -> JSONResponse:
    """Queue a video: `prompt`, `model`, `seconds`, `size` (and garrison's `steps`, `guidance`, `seed`)."""
    idempotency_key = _idempotency_key(request)
    body = await _read_create_body(request)
    try:
        params = VideoCreate.model_validate(body)
    except ValidationError as e:
        raise _validation_error(e) from e
    decision = None
    pool: PolicyPool | None = request.app.state.policy_pool
    t0 = time.perf_counter()
    if pool is not None:
        try:
            decision = await pool.check(params.prompt)
        except PolicyUnavailable as e:
            raise APIError(503, f"the prompt policy is unavailable: {e}; retry", code="policy_unavailable") from e
    t1 = time.perf_counter()
    row, created = await run_in_threadpool(_create, request, tenant, params, idempotency_key, decision)
    t2 = time.perf_counter()
    log_fields(
        log,
        logging.INFO,
        "video queued" if created else "video create replayed",
        video_id=row.id,
        tenant_id=tenant.id,
        seconds=row.seconds,
        size=row.size,
        policy_ms=round((t1 - t0) * 1000, 2),  # waiting for the policy process (0 when screened in the thread)
        store_ms=round((t2 - t1) * 1000, 2),  # audit, quotas, admission and the store, in a worker thread
    )
    headers = {} if created else {"Idempotent-Replayed": "true"}
    return JSONResponse(video_object(row), headers=headers)


@router.get("", response_model=VideoList, responses=ERRORS, summary="List videos")
def list_videos(
    request: Request,
    tenant: Annotated[Any, Depends(authenticate)],
    after: Annotated[str | None, Query(max_length=80, description="Id of the last video of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 20,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> dict[str, Any]:
    """The caller's videos, newest first by default, with cursor pagination (`after`, `has_more`)."""
    if after is not None:
        check_video_id(after)
    try:
        rows, has_more = request.app.state.store.list_videos(tenant.id, after=after, limit=limit, order=order)
    except ValueError as e:
        raise bad_request(f"after: {e}", param="after", code="invalid_cursor") from e
    data = [video_object(r) for r in rows]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def _owned_video(request: Request, tenant: Any, video_id: str) -> Any:
    check_video_id(video_id)
    try:
        return request.app.state.store.get_video(video_id, tenant.id)
    except NotFound as e:
        raise not_found(f"no video {video_id} for this key", param="video_id") from e


@router.get("/{video_id}", response_model=VideoObject, responses=ERRORS, summary="Retrieve a video")
def retrieve_video(request: Request, video_id: str, tenant: Annotated[Any, Depends(authenticate)]) -> JSONResponse:
    """Status, progress, timestamps, error, and garrison's energy and provenance facts.

    `openai-poll-after-ms` tells the SDK's create_and_poll how soon to ask again.
    """
    row = _owned_video(request, tenant, video_id)
    headers = {}
    if row.status == VideoStatus.QUEUED:
        headers["openai-poll-after-ms"] = str(POLL_AFTER_QUEUED_MS)
    elif row.status == VideoStatus.IN_PROGRESS:
        headers["openai-poll-after-ms"] = str(POLL_AFTER_IN_PROGRESS_MS)
    return JSONResponse(video_object(row), headers=headers)


@router.delete("/{video_id}", response_model=VideoDeleted, responses=ERRORS, summary="Delete a video")
def delete_video(request: Request, video_id: str, tenant: Annotated[Any, Depends(authenticate)]) -> dict[str, Any]:
    """Delete a video and its files; a queued or running one is cancelled first, so no worker completes it."""
    check_video_id(video_id)
    store = request.app.state.store
    try:
        store.delete_video(video_id, tenant.id)
    except NotFound as e:
        raise not_found(f"no video {video_id} for this key", param="video_id") from e
    content_dir: Path = request.app.state.content_dir
    for variant in CONTENT_MEDIA_TYPES:
        content_path(content_dir, video_id, variant).unlink(missing_ok=True)
    log_fields(log, logging.INFO, "video deleted", video_id=video_id, tenant_id=tenant.id)
    return {"id": video_id, "object": "video.deleted", "deleted": True}


@router.get(
    "/{video_id}/content",
    responses=ERRORS
    | {
        200: {"content": {"video/mp4": {}, "image/jpeg": {}}, "description": "The MP4, or a JPEG preview."},
        409: {"model": ErrorResponse, "description": "The video is not completed."},
    },
    response_class=FileResponse,
    summary="Download video content",
)
def download_content(
    request: Request,
    video_id: str,
    tenant: Annotated[Any, Depends(authenticate)],
    variant: Annotated[Literal["video", "thumbnail", "spritesheet"], Query()] = "video",
) -> FileResponse:
    """The MP4 (`variant=video`), a JPEG thumbnail, or a JPEG spritesheet of frames."""
    row = _owned_video(request, tenant, video_id)
    if row.status != VideoStatus.COMPLETED:
        raise APIError(
            409, f"video {video_id} is {row.status}; content exists once it is completed", code="video_not_ready"
        )
    content_dir: Path = request.app.state.content_dir
    path = content_path(content_dir, row.id, variant)
    # Defence in depth: the name is ours, but never serve anything outside the content folder.
    if path.resolve().parent != content_dir.resolve() or not path.is_file():
        raise not_found(f"the {variant} of video {video_id} is no longer stored", param="variant")
    suffix = path.suffix
    return FileResponse(path, media_type=CONTENT_MEDIA_TYPES[variant], filename=f"{row.id}{suffix}")

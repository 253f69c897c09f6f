"""Operations: `/v1/fleet` (what the governor last reported), `/metrics` (Prometheus), `/v1/verify`, `/healthz`.

The fleet view shows what the store holds and says when that is nothing: a governor that never reported is
"offline" with that reason, never a made-up fleet.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from garrison.server.auth import authenticate
from garrison.server.errors import bad_request
from garrison.server.metrics import GOVERNOR_STALE_S, gate_state
from garrison.server.schemas import ErrorResponse, FleetObject

router = APIRouter(tags=["operations"])
MAX_VERIFY_UPLOAD_BYTES = 64 << 20
RECENT_DECISIONS = 20
UPLOAD_CHUNK_BYTES = 1 << 20


def fleet_view(store: Any, now_s: float | None = None) -> dict[str, Any]:
    """Devices, pools, power against the cap, gate, serving state, queue and recent decisions, from the store."""
    now_s = time.time() if now_s is None else now_s
    samples = store.list_samples(limit=1)
    sample = samples[-1] if samples else None
    if sample is None:
        governor = "offline"
        power: dict[str, Any] = {}
    else:
        age_s = now_s - sample.ts
        governor = "reporting" if age_s <= GOVERNOR_STALE_S else "stale"
        power = {
            "power_w": sample.power_w,
            "power_cap_w": sample.power_cap_w,
            "headroom_w": sample.power_cap_w - sample.power_w,
            "sampled_at": sample.ts,
            "age_s": round(age_s, 3),
        }
    state, reason = gate_state(store)
    stats = store.queue_stats()
    decisions = store.list_decisions(limit=RECENT_DECISIONS)
    return FleetObject(
        governor=governor,
        devices=store.get_setting("fleet.devices", None) or [],
        pools=store.get_setting("fleet.pools", None) or {},
        power=power,
        gate={"state": state, "reason": reason},
        serving={
            "quality_level": store.get_setting("serving.quality_level", None),
            "admission_mode": store.get_setting("admission.mode", None),
            "allocation": sample.allocation if sample is not None else None,
        },
        queue={
            "queued": stats.queued,
            "in_progress": stats.in_progress,
            "oldest_queued_age_s": stats.oldest_queued_age_s,
            "completed_last_minute": stats.completed_last_minute,
            "failed_last_minute": stats.failed_last_minute,
            "joules_last_minute": stats.joules_last_minute,
        },
        decisions=[
            {"ts": d.ts, "tick": d.tick, "action": d.action, "target": d.target, "reason": d.reason} for d in decisions
        ],
    ).model_dump()


@router.get("/v1/fleet", response_model=FleetObject, responses={401: {"model": ErrorResponse}}, summary="Fleet state")
def get_fleet(request: Request, tenant: Annotated[Any, Depends(authenticate)]) -> dict[str, Any]:
    return fleet_view(request.app.state.store)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.post(
    "/v1/verify",
    responses={400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 413: {"model": ErrorResponse}},
    summary="Verify an MP4: content credentials, watermark, originating request",
)
def verify(
    request: Request,
    tenant: Annotated[Any, Depends(authenticate)],
    file: Annotated[UploadFile, File(description="The MP4 to check.")],
) -> dict[str, Any]:
    """The same JSON as `garrison verify --json`; `file` is the uploaded file's name."""
    from garrison.shield.verify import verify_file

    fd, tmp = tempfile.mkstemp(prefix="garrison-verify-", suffix=".mp4")
    try:
        with os.fdopen(fd, "wb") as out:
            size = 0
            while chunk := file.file.read(UPLOAD_CHUNK_BYTES):
                size += len(chunk)
                out.write(chunk)
        if size == 0:
            raise bad_request("the uploaded file is empty", param="file", code="empty_file")
        result = verify_file(Path(tmp))
    finally:
        Path(tmp).unlink(missing_ok=True)
    result["file"] = (file.filename or "upload")[:200]
    return result

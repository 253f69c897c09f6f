"""`/v1/jobs`: submit and watch training jobs (admin keys only: a job runs a command on the fleet).

A job is a row in the store; the governor grants it devices and its executor runs the command. Either the caller
gives `command` (argv), or `preset: "train"` runs the built-in model's `garrison train` into a run folder the
server names under $GARRISON_HOME/runs.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from garrison.core.fleet import JobStatus
from garrison.server.auth import require_admin
from garrison.server.errors import bad_request, not_found
from garrison.server.schemas import ErrorResponse, JobCreate, JobList, JobObject
from garrison.store import Conflict, NotFound

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
JOB_ID_RE = re.compile(r"job_[0-9a-f]{32}")
DEFAULT_TRAIN_STEPS = 3000
ERRORS = {
    400: {"model": ErrorResponse},
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
}


def job_object(job: Any) -> dict[str, Any]:
    return JobObject(
        id=job.id,
        name=job.name,
        command=list(job.command),
        devices_requested=job.devices_requested,
        devices_held=list(job.devices_held or []),
        status=str(job.status),
        created_at=int(job.created_at),
        started_at=int(job.started_at) if job.started_at is not None else None,
        finished_at=int(job.finished_at) if job.finished_at is not None else None,
        pid=job.pid,
        steps_done=job.steps_done,
        throughput=job.throughput,
        joules=job.joules,
        error=job.error,
    ).model_dump()


def train_preset_command(steps: int) -> list[str]:
    """argv of the built-in `garrison train`, into a fresh run folder named by the server."""
    home = Path(os.environ.get("GARRISON_HOME") or Path.home() / ".garrison")
    out = home / "runs" / f"train-{uuid.uuid4().hex[:12]}"
    return [sys.executable, "-m", "garrison.cli.main", "train", "--steps", str(steps), "--out", str(out), "--json"]


def _check_job_id(job_id: str) -> str:
    if not JOB_ID_RE.fullmatch(job_id):
        raise bad_request(f"invalid job id {job_id[:40]!r}: ids look like job_<hex>", param="job_id", code="invalid_id")
    return job_id


@router.post("", response_model=JobObject, responses=ERRORS, summary="Submit a training job")
def create_job(request: Request, body: JobCreate, tenant: Annotated[Any, Depends(require_admin)]) -> dict[str, Any]:
    """Queue a training job with its guaranteed device count."""
    if (body.command is None) == (body.preset is None):
        raise bad_request('give either command (argv) or preset: "train"', param="command")
    if body.steps is not None and body.preset is None:
        raise bad_request('steps goes with preset: "train"', param="steps")
    command = body.command if body.command is not None else train_preset_command(body.steps or DEFAULT_TRAIN_STEPS)
    try:
        job = request.app.state.store.create_job(body.name, command=command, devices=body.devices, tenant_id=tenant.id)
    except (ValueError, Conflict) as e:
        raise bad_request(str(e)) from e
    return job_object(job)


@router.get("", response_model=JobList, responses=ERRORS, summary="List training jobs")
def list_jobs(
    request: Request,
    tenant: Annotated[Any, Depends(require_admin)],
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
) -> dict[str, Any]:
    jobs = request.app.state.store.list_jobs(status=str(status) if status is not None else None)
    return {"object": "list", "data": [job_object(j) for j in jobs]}


@router.get("/{job_id}", response_model=JobObject, responses=ERRORS, summary="Retrieve a training job")
def get_job(request: Request, job_id: str, tenant: Annotated[Any, Depends(require_admin)]) -> dict[str, Any]:
    _check_job_id(job_id)
    try:
        return job_object(request.app.state.store.get_job(job_id))
    except NotFound as e:
        raise not_found(f"no job {job_id}", param="job_id") from e


@router.delete("/{job_id}", response_model=JobObject, responses=ERRORS, summary="Cancel a training job")
def cancel_job(request: Request, job_id: str, tenant: Annotated[Any, Depends(require_admin)]) -> dict[str, Any]:
    """Cancel a job: the governor stops its process and returns its devices."""
    _check_job_id(job_id)
    try:
        return job_object(request.app.state.store.cancel_job(job_id))
    except NotFound as e:
        raise not_found(f"no job {job_id}", param="job_id") from e

"""Before a video is queued: its cost estimate, the tenant's daily quotas, and the governor's admission.

The estimate: the request's analytic FLOPs (video/pipelines/flops.py, from the model's config and the prompt's token
count; no weights are loaded in the server) at the quality rung serving renders at now, turned into device-seconds
and joules by `governor.cost.estimate_cost` with a device profile `governor.cost.calibrate_profile` fits to the
videos completed recently (their measured FLOPs, wall seconds and joules). Before any video has completed there is
no profile, and no estimate is stored.

The decision: `governor.admission.admit` with the serving state the governor writes to the store (admission mode,
quality level, serving devices) and the queue as the store counts it. When no governor has reported (a server with
bare workers, no `garrison up`), there are no serving devices to predict a wait from: only the tenant's quotas are
enforced then, and the response says nothing about an SLO it cannot predict.

The serving view is refreshed at most every `refresh_s` (1 s) so that a create costs two small reads, not a scan.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from garrison.core.fleet import QUALITY_LADDER, Cost
from garrison.governor.admission import TenantBudget, admit, seconds_to_next_utc_day
from garrison.governor.cost import DeviceProfile, calibrate_profile, estimate_cost
from garrison.governor.cost import Sample as CostSample
from garrison.governor.state import GovernorConfig, ServingState
from garrison.server.errors import APIError

DAY_S = 86_400.0
PROFILE_WINDOW_S = 600.0  # calibrate on the last ten minutes of completed videos
PROFILE_SAMPLES = 50
# Without a governor no SLO can be predicted; a bound no request reaches keeps admit() to its quota checks.
UNGOVERNED_SLO_S = 1e12
DEFAULT_SLO_S: float = GovernorConfig.__dataclass_fields__["slo_s"].default  # the governor's own default
ERROR_CODES = {
    "slo": "queue_full",
    "shed": "fleet_overloaded",
    "no_capacity": "no_capacity",
    "too_large": "request_too_costly",
}


def utc_day_start(now_s: float) -> float:
    """Unix seconds of the most recent 00:00 UTC."""
    return math.floor(now_s / DAY_S) * DAY_S


@lru_cache(maxsize=1)
def _model_config() -> Any:
    # the torch-free homes of these names (configs.py, checkpoint_config.py): the server never imports torch
    from garrison.video.models.configs import DiTConfig
    from garrison.video.training.checkpoint_config import load_config, shipped_checkpoint_dir

    return DiTConfig(**load_config(shipped_checkpoint_dir())["model"])


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    """The text encoder's tokenizer (its `tokenizer.json`, read by `tokenizers`: transformers' AutoTokenizer gives
    the same ids but would import transformers into the server for nothing), truncated as the encoder truncates."""
    from tokenizers import Tokenizer

    from garrison.video.models.configs import MAX_TEXT_TOKENS, model_dir

    tokenizer = Tokenizer.from_file(str(Path(model_dir()) / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=MAX_TEXT_TOKENS)
    tokenizer.no_padding()
    return tokenizer


def token_count(prompt: str) -> int:
    """Tokens of `prompt` the text encoder attends to (special tokens included, truncated)."""
    return len(_tokenizer().encode(prompt).ids)


def estimate_flops(prompt: str, seconds: int, size: str, steps: int, guidance: float, level: int) -> float:
    """Analytic FLOPs of a request on the built-in model at quality rung `level` (no weights loaded)."""
    from garrison.core.types import VideoSpec
    from garrison.video.data.world import load_world
    from garrison.video.pipelines.flops import generation_flops
    from garrison.video.pipelines.sizes import render_size

    cfg = _model_config()
    rung = QUALITY_LADDER[level]
    width, height = (int(x) for x in size.split("x"))
    spec = VideoSpec(prompt, seconds, width, height, rung.steps_for(steps), guidance, 0, native_scale=rung.native_scale)
    (w, h), _ = render_size(spec, cfg.patch_hw)
    frames = seconds * load_world().fps
    grid = (frames // cfg.patch_t, h // cfg.patch_hw, w // cfg.patch_hw)
    return float(generation_flops(cfg, grid, token_count(prompt), token_count(""), spec.steps, guidance != 1.0))


@dataclass(frozen=True)
class ServingView:
    """What admission needs of the fleet, read from the store."""

    governed: bool
    serving: ServingState
    serving_devices: int
    profile: DeviceProfile | None
    slo_s: float


class Admission:
    """Cost estimates and admission decisions for one app, over its store."""

    def __init__(self, store: Any, refresh_s: float = 1.0, slo_s: float | None = None) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.slo_s = slo_s
        self._view: ServingView | None = None
        self._view_at = -math.inf
        self._lock = threading.Lock()

    def view(self, now_s: float) -> ServingView:
        with self._lock:
            if self._view is None or time.monotonic() - self._view_at >= self.refresh_s:
                self._view = self._read_view(now_s)
                self._view_at = time.monotonic()
            return self._view

    def _read_view(self, now_s: float) -> ServingView:
        store = self.store
        devices = store.get_setting("fleet.devices", None)
        governed = isinstance(devices, list)
        serving_devices = sum(
            1
            for d in devices or []
            if isinstance(d, dict) and d.get("assignment") == "serving" and d.get("healthy", True)
        )
        level = min(max(int(store.get_setting("serving.quality_level", 0) or 0), 0), len(QUALITY_LADDER) - 1)
        mode = store.get_setting("admission.mode", "open")
        if mode not in ("open", "queue", "shed"):
            mode = "open"
        recent = [
            v
            for v in store.completed_videos(since=now_s - PROFILE_WINDOW_S, limit=PROFILE_SAMPLES)
            if v.flops and v.seconds_wall and v.joules is not None
        ]
        profile = None
        if recent:
            try:
                profile = calibrate_profile([CostSample(v.flops, v.seconds_wall, v.joules) for v in recent])
            except ValueError:
                profile = None
        stats = store.queue_stats()
        per_request_s = None
        if profile is not None and recent:
            per_request_s = sum(v.seconds_wall for v in recent) / len(recent)
        serving = ServingState(
            quality_level=level,
            admission=mode,
            queue_depth=stats.queued,
            queued_device_s=stats.queued * per_request_s if per_request_s else 0.0,
        )
        slo_s = self.slo_s or float(store.get_setting("governor.slo_s", None) or DEFAULT_SLO_S)
        return ServingView(governed, serving, serving_devices, profile, slo_s)

    def estimate(self, params: Any, view: ServingView) -> Cost | None:
        """The request's predicted cost at the rung serving renders at now; None before any profile exists."""
        flops = estimate_flops(
            params.prompt, int(params.seconds), params.size, params.steps, params.guidance, view.serving.quality_level
        )
        if view.profile is None:
            return None
        return estimate_cost(flops, view.profile)

    def admit_video(self, tenant: Any, params: Any, now_s: float) -> Cost | None:
        """Admit a request or raise a 429 with Retry-After; returns the cost estimate to store with the video."""
        view = self.view(now_s)
        cost = self.estimate(params, view)
        budget = TenantBudget(videos_per_day=tenant.videos_per_day, joules_per_day=tenant.joules_per_day)
        if tenant.videos_per_day is not None or tenant.joules_per_day is not None:
            usage = self.store.tenant_usage(tenant.id, utc_day_start(now_s))
            budget = TenantBudget(usage.videos, usage.joules, tenant.videos_per_day, tenant.joules_per_day)
        if view.governed:
            decision = admit(
                cost or Cost(0.0, 0.0),
                serving=view.serving,
                serving_devices=view.serving_devices,
                tenant=budget,
                slo_s=view.slo_s,
                now_s=now_s,
            )
        else:  # no governor: quotas only (admit's capacity checks need serving devices it cannot know)
            decision = admit(
                cost or Cost(0.0, 0.0),
                serving=ServingState(),
                serving_devices=1,
                tenant=budget,
                slo_s=UNGOVERNED_SLO_S,
                now_s=now_s,
            )
        if not decision.admitted:
            retry_s = decision.retry_after_s
            headers = {"Retry-After": str(max(1, math.ceil(retry_s)))} if retry_s is not None else {}
            quota = decision.code.startswith("quota_")
            status = 429 if (retry_s is not None or quota) else 400
            raise APIError(
                status,
                decision.reason,
                code="insufficient_quota" if quota else ERROR_CODES.get(decision.code, decision.code),
                error_type="insufficient_quota" if quota else None,
                headers=headers,
            )
        return cost


__all__ = ["Admission", "estimate_flops", "seconds_to_next_utc_day", "utc_day_start"]

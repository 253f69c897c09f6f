"""The sizes the built-in model renders a request at, and the checks a request passes before any work starts.

Torch-free, so the API server can answer "what native size, scaled or not" and estimate a request's cost without
importing the pipeline (builtin.py imports torch and the models: ~200 MB the server would hold for nothing).
builtin.py imports these from here and re-exports them under its own name.
"""

from __future__ import annotations

from functools import lru_cache

from garrison.core.types import InvalidSpecError, VideoSpec
from garrison.video.data.world import ASPECTS, DURATIONS_S, native_sizes
from garrison.video.training.checkpoint_config import load_config, shipped_checkpoint_dir

SCALED_SIZES: dict[str, str] = {  # OpenAI video API size -> the native aspect it is rendered at
    "1280x720": "landscape",
    "1792x1024": "landscape",
    "720x1280": "portrait",
    "1024x1792": "portrait",
}


def supported_sizes() -> list[str]:
    return native_sizes() + list(SCALED_SIZES)


def resolve_size(width: int, height: int) -> tuple[tuple[int, int], bool]:
    """(native width, height) to render at, and whether the output is scaled from it."""
    size = f"{width}x{height}"
    for w, h in ASPECTS.values():
        if (w, h) == (width, height):
            return (w, h), False
    if size in SCALED_SIZES:
        return ASPECTS[SCALED_SIZES[size]], True
    raise InvalidSpecError(f"size {size} is not supported; use one of {', '.join(supported_sizes())}")


@lru_cache(maxsize=1)
def shipped_patch_px() -> int:
    """The spatial patch of the shipped checkpoint, read from its config (no weights loaded)."""
    return int(load_config(shipped_checkpoint_dir())["model"]["patch_hw"])


def render_size(spec: VideoSpec, patch_px: int | None = None) -> tuple[tuple[int, int], bool]:
    """(width, height) the model renders `spec` at, and whether the output is scaled from it.

    A `native_scale` below 1 (the quality ladder's cheapest rungs) shrinks the native size to a multiple of the
    model's spatial patch (`patch_px`, default: the shipped checkpoint's), never below one patch, and scales the
    result up to the asked size.
    """
    (w, h), scaled = resolve_size(spec.width, spec.height)
    if spec.native_scale >= 1.0:
        return (w, h), scaled
    patch = patch_px or shipped_patch_px()
    w_s = max(patch, int(round(w * spec.native_scale / patch)) * patch)
    h_s = max(patch, int(round(h * spec.native_scale / patch)) * patch)
    return (w_s, h_s), scaled or (w_s, h_s) != (w, h)


def check_spec(spec: VideoSpec) -> None:
    """Everything that can be refused before any work starts."""
    spec.validate()
    if spec.seconds not in DURATIONS_S:
        raise InvalidSpecError(f"seconds must be one of {', '.join(map(str, DURATIONS_S))}, got {spec.seconds}")
    resolve_size(spec.width, spec.height)

"""Which pipeline runs a request: the built-in model, or an open model from a local diffusers folder.

Named models live in `$GARRISON_HOME/models.json` (`{"wan-1.3b": "/data/Wan2.1-T2V-1.3B-Diffusers"}`) or as folders
`$GARRISON_HOME/models/NAME/`; `garrison-builtin-dit` (or no name) is the built-in model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from garrison.core.types import VideoSpec
from garrison.hardware.catalog import garrison_home
from garrison.video.pipelines.builtin import MODEL_NAME, BuiltinPipeline, Generation, ProgressFn, check_spec
from garrison.video.pipelines.diffusers_backend import DiffusersPipeline, ModelDirError


class TextToVideoPipeline(Protocol):
    """What the CLI, the workers and admission call on any pipeline (specs are checked with `check_spec_for`)."""

    bf16: bool

    def estimate_flops(self, spec: VideoSpec) -> int: ...

    def __call__(self, spec: VideoSpec, progress: ProgressFn | None = None) -> Generation: ...


def models_file() -> Path:
    return garrison_home() / "models.json"


def named_models() -> dict[str, Path]:
    """Model names this machine knows: models.json entries, then folders under $GARRISON_HOME/models/."""
    names: dict[str, Path] = {}
    folder = garrison_home() / "models"
    if folder.is_dir():
        names.update({p.name: p for p in sorted(folder.iterdir()) if p.is_dir()})
    path = models_file()
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ModelDirError(f"{path} is not valid JSON ({e})") from e
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ModelDirError(f'{path} must map model names to folders: {{"name": "/path/to/folder"}}')
        names.update({k: Path(v).expanduser() for k, v in data.items()})
    return names


def resolve_model(model: str) -> Path:
    """The folder of a named model; ModelDirError lists the known names when `model` is not one."""
    known = named_models()
    if model not in known:
        listed = ", ".join([MODEL_NAME, *sorted(known)])
        raise ModelDirError(
            f"unknown model {model!r}; known: {listed} (add one to {models_file()} or use --model-path)"
        )
    return known[model]


def load_pipeline(
    model: str | None = None,
    model_path: str | Path | None = None,
    device: str = "auto",
    checkpoint: str | Path | None = None,
    memory_bytes: int | None = None,
) -> BuiltinPipeline | DiffusersPipeline:
    """The pipeline for `model` (a name) or `model_path` (a diffusers folder); neither means the built-in model.

    A missing, partial, unsupported or too-big model folder raises ModelDirError (a CheckpointError) before any
    weights are read. `device` and `memory_bytes` apply to diffusers models; the built-in model runs on the CPU
    from `checkpoint` (default: the shipped one).
    """
    if model is not None and model_path is not None:
        raise ModelDirError("give either a model name or a model path, not both")
    if model_path is None and model in (None, MODEL_NAME):
        return BuiltinPipeline.load(checkpoint)
    path = Path(model_path) if model_path is not None else resolve_model(str(model))
    return DiffusersPipeline.load(path, device=device, memory_bytes=memory_bytes, name=model)


def check_spec_for(pipeline: BuiltinPipeline | DiffusersPipeline, spec: VideoSpec) -> None:
    """Refuse `spec` before any work if `pipeline` cannot generate it (InvalidSpecError says why)."""
    if isinstance(pipeline, BuiltinPipeline):
        check_spec(spec)
    else:
        pipeline.check_spec(spec)

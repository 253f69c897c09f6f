"""A checkpoint's config.json and where the shipped checkpoint lives, without torch.

The API server reads the shipped model's config for cost estimates and render sizes but never loads its weights;
checkpoint.py imports torch (to load and save them), which would cost the server ~200 MB for nothing. So reading the
config lives here and checkpoint.py imports it from here (and re-exports the names it had).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from garrison.video.models.configs import DiTConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, partial or corrupt; the message names the file and what is wrong."""


def shipped_checkpoint_dir() -> Path:
    return Path(str(resources.files("garrison.video.weights").joinpath("builtin")))


def load_config(directory: Path) -> dict[str, Any]:
    """The checkpoint's config.json, checked to describe a DiTConfig. Raises CheckpointError."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: not a garrison checkpoint folder")
    try:
        config = json.loads(path.read_text())
        DiTConfig(**config["model"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is corrupt: {e}") from e
    return config

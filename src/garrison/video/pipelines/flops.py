"""Analytic FLOP counts of the built-in model, per spec.

Matrix multiplies only (2 FLOP per multiply-add), the convention of torch.utils.flop_counter, the MLPerf and
Epoch AI accounting and the ML.ENERGY efficiency figures: element-wise work (norms, activations, RoPE) is a few
percent and is left out. A test checks these formulas against torch's FlopCounterMode on the real modules.
"""

from __future__ import annotations

# configs.py, not dit.py / text_encoder.py: the API server counts FLOPs without importing torch
from garrison.video.models.configs import MINILM_LAYERS, MINILM_MLP, MINILM_WIDTH, TEXT_DIM, DiTConfig


def dit_forward_flops(cfg: DiTConfig, grid: tuple[int, int, int], text_tokens: int, batch: int = 1) -> int:
    """FLOPs of one SpacetimeDiT forward over a (T, H, W) token grid with `text_tokens` text tokens per sample."""
    n = grid[0] * grid[1] * grid[2]
    w, pd, lt = cfg.width, cfg.patch_dim, text_tokens
    hidden = int(w * cfg.mlp_ratio)
    per_sample = 0
    per_sample += 2 * n * pd * w  # patch embedding
    per_sample += 2 * w * w * 2  # timestep MLP
    per_sample += 2 * lt * (TEXT_DIM * w + w * w)  # text projection
    per_sample += 2 * TEXT_DIM * w  # pooled text
    block = 0
    block += 2 * n * w * (3 * w) + 2 * n * w * w  # self-attention q, kv, out
    block += 4 * n * n * w  # QK^T and AV
    block += 2 * n * w * w * 2 + 2 * lt * w * 2 * w  # cross-attention q, out; kv over text
    block += 4 * n * lt * w  # cross QK^T and AV
    block += 2 * n * w * hidden * 2  # MLP
    block += 2 * w * 6 * w  # adaLN modulation
    per_sample += cfg.depth * block
    per_sample += 2 * w * 2 * w + 2 * n * w * pd  # final modulation and head
    shared = 2 * n * 6 * cfg.pos_freqs * w  # fractional-position features: once per grid, shared by the batch
    return batch * per_sample + shared


def text_encoder_flops(tokens: int) -> int:
    """FLOPs of one MiniLM-L6 forward over `tokens` tokens (the BERT layers; the encoder runs no pooler)."""
    w, m = MINILM_WIDTH, MINILM_MLP
    layer = 2 * tokens * w * w * 4 + 4 * tokens * tokens * w + 2 * tokens * w * m * 2
    return MINILM_LAYERS * layer


def generation_flops(
    cfg: DiTConfig, grid: tuple[int, int, int], prompt_tokens: int, null_tokens: int, steps: int, guidance: bool
) -> int:
    """A whole generation: text encoding, then `steps` forwards, batched cond + uncond under guidance.

    Under guidance the cond and uncond halves are padded to the longer text, as the pipeline batches them.
    """
    text = text_encoder_flops(prompt_tokens) + (text_encoder_flops(null_tokens) if guidance else 0)
    text_len = max(prompt_tokens, null_tokens) if guidance else prompt_tokens
    return text + steps * dit_forward_flops(cfg, grid, text_len, batch=2 if guidance else 1)

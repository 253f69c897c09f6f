"""The built-in model: a diffusion transformer over spacetime patches, in pixel space.

Design (the why, briefly):
- Pixel space, not a learned latent. The clip world is flat colour and hard edges: a VAE would cost training
  time and blur exactly the edges the judge reads shape from. Patches of 4 frames x 16 x 16 pixels (3,072 values)
  turn a 2 s square clip into 64 tokens, a 12 s landscape clip into 672. Large patches are what make training on
  a 2-core CPU possible: the first recipe (8 x 8 px patches, 4x the tokens) learned background and colour but
  drew fragments after 3,000 steps; with 16 px patches the same compute sees 4x the clips. A rank-256 linear
  basis still reconstructs these patches at 32 dB and the judge reads every reconstructed clip right (measured
  with PCA on rendered clips: `benchmarks/patch_linear_head.py`), so the linear head is no bottleneck.
- x-prediction (the network outputs the clean clip), trained with the flow-matching velocity loss, as in
  "Back to Basics: Let Denoising Generative Models Denoise" (Li & He, 2025): clean pixels lie on a low-dimensional
  manifold that a narrow transformer can hit, while noise and velocity do not. The pipeline turns the prediction
  into a velocity for the sampler.
- Any duration and aspect ratio natively: 3D rotary embeddings over the (t, y, x) token grid (as in Wan 2.1) for
  relative position, plus sinusoidal features of each token's *fractional* position in the clip so the model
  knows where the frame edges are (objects must stay fully visible at both ends).
- Text: token states of all-MiniLM-L6-v2 through cross-attention (PixArt/Wan style), so "a red circle on a blue
  background" keeps which colour belongs to what; the mean-pooled embedding joins the timestep in adaLN-Zero.
- QK-norm for stable training at a high learning rate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from garrison.video.models.configs import DiTConfig as DiTConfig  # re-exported: its home before configs.py


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1], scaled to 0..1000 as in DiT."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rope_angles(grid: tuple[int, int, int], dims: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """Rotary angles (N, head_dim // 2) for a (T, H, W) token grid, t-major order."""
    parts = []
    for axis, (n, d) in enumerate(zip(grid, dims, strict=True)):
        freqs = 1.0 / (10000 ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d))
        pos = torch.arange(n, device=device, dtype=torch.float32)
        ang = pos[:, None] * freqs[None]  # (n, d/2)
        shape = [1, 1, 1, d // 2]
        shape[axis] = n
        parts.append(ang.view(shape).expand(*grid, d // 2))
    return torch.cat(parts, dim=-1).reshape(-1, sum(dims) // 2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, heads, N, head_dim); rotate consecutive pairs."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2).to(x.dtype)


def fractional_position_features(grid: tuple[int, int, int], n_freqs: int, device: torch.device) -> torch.Tensor:
    """(N, 3 * 2 * n_freqs): sin/cos of each token centre's position as a fraction of the clip along t, y, x."""
    feats = []
    for axis, n in enumerate(grid):
        frac = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n  # (n,)
        freqs = math.pi * (2.0 ** torch.arange(n_freqs, device=device, dtype=torch.float32)) / 8
        ang = frac[:, None] * freqs[None]
        f = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)  # (n, 2F)
        shape = [1, 1, 1, 2 * n_freqs]
        shape[axis] = n
        feats.append(f.view(shape).expand(*grid, 2 * n_freqs))
    return torch.cat(feats, dim=-1).reshape(-1, 6 * n_freqs)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, kv_dim: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(kv_dim or width, 2 * width)
        self.out = nn.Linear(width, width)
        hd = width // heads
        self.q_norm = nn.RMSNorm(hd, eps=1e-6)
        self.k_norm = nn.RMSNorm(hd, eps=1e-6)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, n, c = x.shape
        ctx = x if context is None else context
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(ctx).view(b, ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """adaLN-Zero self-attention (with RoPE), cross-attention to text, and an MLP."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        w = cfg.width
        self.norm1 = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(w, cfg.heads)
        self.norm_cross = nn.LayerNorm(w, eps=1e-6)
        self.cross = Attention(w, cfg.heads, kv_dim=w)
        self.norm2 = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        hidden = int(w * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(w, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, w))
        self.modulation = nn.Linear(w, 6 * w)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(cond))[:, None].chunk(6, dim=-1)
        x = x + gate1 * self.attn(self.norm1(x) * (1 + scale1) + shift1, rope=rope)
        x = x + self.cross(self.norm_cross(x), context=text, mask=text_mask)
        x = x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)
        return x


class SpacetimeDiT(nn.Module):
    """Predicts the clean clip from a noisy one. Input and output: (B, C, T, H, W) in [-1, 1]."""

    def __init__(self, cfg: DiTConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or DiTConfig()
        w = cfg.width
        self.patch_embed = nn.Linear(cfg.patch_dim, w)
        self.pos_embed = nn.Linear(6 * cfg.pos_freqs, w)
        self.time_embed = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, w), nn.GELU(approximate="tanh"), nn.Linear(w, w))
        self.pooled_proj = nn.Linear(cfg.text_dim, w)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(w, 2 * w)
        self.head = nn.Linear(w, cfg.patch_dim)
        self._grid_cache: dict[
            tuple[tuple[int, int, int], str], tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]
        ] = {}
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for blk in self.blocks:  # adaLN-Zero: every residual branch starts as identity
            nn.init.zeros_(blk.modulation.weight)
            nn.init.zeros_(blk.cross.out.weight)
        nn.init.zeros_(self.final_modulation.weight)
        nn.init.zeros_(self.head.weight)

    def grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        c = self.cfg
        if frames % c.patch_t or height % c.patch_hw or width % c.patch_hw:
            raise ValueError(f"clip {frames}x{height}x{width} is not a multiple of the patch {c.patch_t}x{c.patch_hw}")
        return frames // c.patch_t, height // c.patch_hw, width // c.patch_hw

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        b, ch, t, h, w = x.shape
        gt, gh, gw = self.grid(t, h, w)
        c = self.cfg
        x = x.view(b, ch, gt, c.patch_t, gh, c.patch_hw, gw, c.patch_hw)
        return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, gt * gh * gw, c.patch_dim)

    def unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        b = tokens.shape[0]
        gt, gh, gw = grid
        c = self.cfg
        x = tokens.view(b, gt, gh, gw, c.channels, c.patch_t, c.patch_hw, c.patch_hw)
        return x.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(
            b, c.channels, gt * c.patch_t, gh * c.patch_hw, gw * c.patch_hw
        )

    def _grid_constants(
        self, grid: tuple[int, int, int], device: torch.device
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Position features and rotary cos/sin of a token grid, computed once per grid (a handful exist)."""
        key = (grid, str(device))
        if key not in self._grid_cache:
            ang = rope_angles(grid, self.cfg.rope_dims, device)
            self._grid_cache[key] = (
                fractional_position_features(grid, self.cfg.pos_freqs, device),
                (ang.cos(), ang.sin()),
            )
        return self._grid_cache[key]

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        """x (B, C, T, H, W) noisy clip; t (B,) noise level in [0, 1] (1 = pure noise);
        text_states (B, L, text_dim); text_mask (B, L) bool, True for real tokens."""
        grid = self.grid(*x.shape[2:])
        tokens = self.patch_embed(self.patchify(x))
        pos_features, rope = self._grid_constants(grid, x.device)
        tokens = tokens + self.pos_embed(pos_features.to(tokens.dtype))

        m = text_mask.to(text_states.dtype)[..., None]
        pooled = (text_states * m).sum(1) / m.sum(1).clamp(min=1.0)
        cond = self.time_embed(timestep_embedding(t, self.cfg.width).to(tokens.dtype)) + self.pooled_proj(pooled)
        text = self.text_proj(text_states)
        attn_mask = text_mask[:, None, None, :]  # broadcast over heads and queries

        for blk in self.blocks:
            tokens = blk(tokens, cond, text, attn_mask, rope)
        shift, scale = self.final_modulation(F.silu(cond))[:, None].chunk(2, dim=-1)
        tokens = self.head(self.final_norm(tokens) * (1 + scale) + shift)
        return self.unpatchify(tokens, grid)

"""One sampler step of the built-in model against diffusers' WanTransformer3DModel, same machine, same run.

The peer is built with random weights on the same spacetime patching (Conv3d patches of the shipped model's
4 x 16 x 16 pixels, so the token count is identical), the same width, heads, MLP width and text width (384), and as many layers as
bring its parameter count closest to ours. A sampler step is one forward of a 4 s 16:9 clip at batch 2 (classifier-free guidance)
in bf16 on the CPU. A second row keeps the depth equal instead, for the reader who prefers that match.
Prints one JSON line; ratio > 1 means ours is faster.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from garrison.video.models.dit import DiTConfig, SpacetimeDiT


def params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def wan(cfg: DiTConfig, layers: int) -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(cfg.patch_t, cfg.patch_hw, cfg.patch_hw),
        num_attention_heads=cfg.heads,
        attention_head_dim=cfg.head_dim,
        in_channels=cfg.channels,
        out_channels=cfg.channels,
        text_dim=cfg.text_dim,
        freq_dim=256,
        ffn_dim=int(cfg.width * cfg.mlp_ratio),
        num_layers=layers,
    )


def time_forward(fn, repeats: int = 7) -> float:
    with torch.no_grad():
        for _ in range(2):
            fn()
        walls = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def main() -> None:
    torch.manual_seed(0)
    cfg = DiTConfig()
    ours = SpacetimeDiT(cfg).eval().to(torch.bfloat16)
    # Ours has per-block adaLN projections that Wan shares across blocks: match parameters by Wan's depth.
    best = min(range(1, 3 * cfg.depth), key=lambda n: abs(params(wan(cfg, n)) - params(ours)))
    rows = []
    x = torch.randn(2, 3, 32, 64, 112, dtype=torch.bfloat16)  # a 4 s 16:9 clip, cond + uncond
    tokens = 1
    for n in ours.grid(32, 64, 112):
        tokens *= n
    text = torch.randn(2, 12, cfg.text_dim, dtype=torch.bfloat16)
    mask = torch.ones(2, 12, dtype=torch.bool)
    t = torch.full((2,), 0.5)
    ours_s = time_forward(lambda: ours(x, t, text, mask))
    for label, layers in (("matched_params", best), ("matched_depth", cfg.depth)):
        peer = wan(cfg, layers).eval().to(torch.bfloat16)
        peer_s = time_forward(lambda p=peer: p(x, t * 1000, text, return_dict=False))
        rows.append(
            {
                "match": label,
                "peer_layers": layers,
                "peer_params": params(peer),
                "peer_step_s": round(peer_s, 4),
                "ratio_peer_over_ours": round(peer_s / ours_s, 3),
            }
        )
    print(
        json.dumps(
            {
                "benchmark": "peer_step_ratio",
                "tokens": tokens,
                "batch": 2,
                "dtype": "bfloat16",
                "threads": torch.get_num_threads(),
                "ours_params": params(ours),
                "ours_step_s": round(ours_s, 4),
                "peers": rows,
            }
        )
    )


if __name__ == "__main__":
    main()

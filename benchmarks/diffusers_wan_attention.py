"""Figure: one Wan 2.1 1.3B transformer forward per attention backend, eager, then compiled with the fastest.

Why it exists: `benchmarks/diffusers_wan_gpu.py`'s `kernels` mode (a forced attention kernel + fused QKV) ran slower
than stock diffusers on an H100 (2026-11-27). This times the candidates one by one on the reference configuration's
inputs (480x832, 81 frames: a 21x30x52 latent grid, 512 text tokens, bf16, batch 1, fused QKV) so the choice in
`choose_attention_backend` follows a measurement. Each backend: one untimed forward, then the median of `--repeats`
synchronised forwards, and its output's relative L2 distance from the first backend's (`native`: PyTorch's own SDPA
dispatch). A backend that cannot run here is reported with its error. Then the fastest forced backend under
torch.compile (`--no-compile` skips that; compiling takes about 2 minutes on an H100).

`--tiny` runs the same code on a tiny random config on the CPU (the smoke test). One JSON line per backend on
stderr as it finishes, then one summary line on stdout (also written to --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diffusers_wan_gpu import forward_once  # noqa: E402  (the same forward the step-time benchmark checks)
from garrison.video.pipelines.diffusers_backend import DiffusersPipeline, Optimizations  # noqa: E402
from garrison.video.pipelines.diffusers_random import build_random_pipeline  # noqa: E402

BACKENDS = ["native", "_native_flash", "_native_cudnn", "_native_efficient"]


def timed(
    pipeline: DiffusersPipeline, inputs: dict[str, torch.Tensor], repeats: int
) -> tuple[torch.Tensor, float, float]:
    """(output, first forward's seconds, median of the timed forwards' seconds)."""
    device = pipeline.device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    t0 = time.perf_counter()
    out = forward_once(pipeline, inputs)
    sync()
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        forward_once(pipeline, inputs)
        sync()
        times.append(time.perf_counter() - t)
    return out, first_s, statistics.median(times)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny random config (smoke test on a CPU)")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        pipe = build_random_pipeline("wan", "tiny" if args.tiny else "full", dtype=dtype)
    pipe.to(device)
    pipeline = DiffusersPipeline.from_pipe(pipe, name="wan")
    cfg = pipeline.info.transformer_config
    grid = (5, 8, 8) if args.tiny else (21, 60, 104)  # latent frames, height, width (480x832, 81 frames)
    generator = torch.Generator("cpu").manual_seed(1)
    inputs = {
        "hidden_states": torch.randn((1, cfg["in_channels"], *grid), generator=generator).to(device, dtype),
        "timestep": torch.tensor([500.0], device=device),
        "encoder_hidden_states": torch.randn(1, pipeline.text_tokens, cfg["text_dim"], generator=generator).to(
            device, dtype
        ),
    }
    rows: list[dict[str, Any]] = []
    reference: torch.Tensor | None = None
    for backend in BACKENDS:
        row: dict[str, Any] = {"attention": backend, "compiled": False}
        try:
            pipeline.optimize(Optimizations(attention=backend, compile=False))
            out, _first, median_s = timed(pipeline, inputs, args.repeats)
        except Exception as e:  # a kernel this build or device lacks: report it, time the others
            row["error"] = f"{type(e).__name__}: {e}"[:300]
        else:
            reference = out if reference is None else reference
            row.update(forward_s=median_s, rel_l2_vs_native=rel_l2(out, reference))
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    timed_rows = [r for r in rows if "forward_s" in r and r["attention"] != "native"]
    best = min(timed_rows, key=lambda r: r["forward_s"])["attention"] if timed_rows else None
    if best is not None and not args.no_compile and reference is not None:
        pipeline.optimize(Optimizations(attention=best))
        out, first_s, median_s = timed(pipeline, inputs, args.repeats)
        row = {"attention": best, "compiled": True, "compile_s": first_s, "forward_s": median_s}
        row["rel_l2_vs_native"] = rel_l2(out, reference)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    pipeline.reset_optimizations()
    line = {
        "benchmark": "diffusers_wan_attention",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": "bf16" if dtype == torch.bfloat16 else "fp32",
        "latent_grid": grid,
        "repeats": args.repeats,
        "rows": rows,
        "fastest_forced_backend": best,
    }
    text = json.dumps(line)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

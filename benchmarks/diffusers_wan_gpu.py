"""Figure: Wan 2.1 1.3B text-to-video, stock diffusers vs garrison's optimised path, side by side on one device.

The full-size Wan 2.1 T2V 1.3B architecture (transformer, VAE, UMT5-XXL text encoder) with random weights, bf16,
480x832, 81 frames, 50 steps, guidance 5 (two transformer forwards a step), as ML.ENERGY measures it. Random weights
do the same work as trained ones: every shape, kernel and FLOP is the same. Modes, each on the same pipeline object:

- `stock`: diffusers as shipped (native SDPA, eager).
- `kernels`: the attention kernel `choose_attention_backend` forces (FlashAttention-3 when installed on Hopper, else
  none: PyTorch's own SDPA dispatch, which runs cuDNN attention on an H100) + fused QKV.
- `compiled`: kernels + torch.compile of the transformer.
- `cudagraphs`: compiled with CUDA graphs (mode reduce-overhead).
- `fbcache`: kernels + first-block cache (threshold 0.05): skips work, CHANGES OUTPUTS; kept apart from the targets.

Each mode: a 2-step warm-up generation (compilation, graph capture, kernel autotune), then one timed generation
under an energy window (garrison.energy.meters.get_meter: NVML on a GPU). Per step: the median interval between
step-end callbacks, each after a device synchronise. FLOPs are garrison's analytic count (video/pipelines/
diffusers_backend.py; the VAE decode is not counted, so MFU and efficiency_vs_limit are slightly conservative).

Numerical equivalence: one transformer forward on fixed random inputs in each mode against stock; the relative L2
error must be within FORWARD_REL_TOL (bf16: 2e-2, the rounding of bf16 GEMMs and attention with other reduction
orders; fp32: 1e-4). The finished videos are compared too (mean absolute difference in pixel levels and PSNR), for
information: 50 steps of a random-weight model amplify rounding, so the video is not held to a tolerance.

`--tiny` runs the same code on a tiny random config (CPU-friendly), which tests/benchmarks use as a smoke test.
A 10-minute limit per command fits `--modes stock,compiled` at 50 steps on an H100 (about 95 s per stock video);
run the other modes in a second invocation. Prints one JSON line (also written to --out).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from garrison.core.types import VideoSpec
from garrison.energy.meters import get_meter
from garrison.energy.report import energy_fields
from garrison.hardware.cpu import cpu_model_name
from garrison.hardware.devices import chip_for_device
from garrison.video.pipelines.diffusers_backend import DiffusersPipeline, Optimizations
from garrison.video.pipelines.diffusers_random import build_random_pipeline

MODES: dict[str, Optimizations | None] = {
    "stock": None,
    "kernels": Optimizations(compile=False),
    "compiled": Optimizations(),
    "cudagraphs": Optimizations(cuda_graphs=True),
    "fbcache": Optimizations(compile=False, first_block_cache=0.05),
}
OUTPUT_CHANGING = {"fbcache"}
FORWARD_REL_TOL = {"bf16": 2e-2, "fp32": 1e-4}
TARGET_SPEEDUP = 1.3
MLENERGY_GPU = {"h100-sxm": "H100", "b200": "B200"}
PROMPT = "a red fox runs through fresh snow in a birch forest at dawn, cinematic"


def mlenergy_reference(chip: str | None, spec: VideoSpec, frames: int) -> dict[str, Any] | None:
    """ML.ENERGY's single-GPU, batch-1 measurement of Wan 2.1 1.3B at this exact configuration, if it has one."""
    from garrison.planner.profiles import mlenergy_csv_path

    path = mlenergy_csv_path()
    gpu = MLENERGY_GPU.get(chip or "")
    if gpu is None or not path.is_file():
        return None
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if (
                row["nickname"] == "Wan 2.1 1.3B"
                and row["gpu_model"] == gpu
                and row["num_gpus"] == "1"
                and row["batch_size"] == "1"
                and int(row["video_width"]) == spec.width
                and int(row["video_height"]) == spec.height
                and int(row["num_frames"]) == frames
                and int(row["inference_steps"]) == spec.steps
            ):
                return {
                    "joules_per_video": float(row["energy_per_video_joules"]),
                    "latency_s": float(row["batch_latency_s"]),
                    "avg_power_w": float(row["avg_power_watts"]),
                    "gpu": gpu,
                    "source": f"ML.ENERGY Leaderboard v3 ({path.name})",
                }
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_once(pipeline: DiffusersPipeline, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    transformer = pipeline.pipe.transformer
    with torch.no_grad(), transformer.cache_context("cond"):
        out = transformer(**inputs, return_dict=False)[0]
    return out.float().clone()


def run_mode(
    name: str, pipeline: DiffusersPipeline, spec: VideoSpec, inputs: dict[str, torch.Tensor], meter: Any
) -> tuple[dict[str, Any], torch.Tensor, Any]:
    opts = MODES[name]
    if opts is None:
        pipeline.reset_optimizations()
        applied: dict[str, Any] = {}
    else:
        applied = pipeline.optimize(opts)
    device = pipeline.device
    t0 = time.perf_counter()
    forward = forward_once(pipeline, inputs) if name not in OUTPUT_CHANGING else None
    warm = VideoSpec(spec.prompt, spec.seconds, spec.width, spec.height, min(2, spec.steps), spec.guidance, spec.seed)
    pipeline(warm)  # compilation, CUDA graph capture, kernel selection
    sync(device)
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    stamps: list[float] = []

    def on_step(i: int, n: int) -> None:
        sync(device)
        stamps.append(time.perf_counter())

    sync(device)
    meter.begin_window(f"wan-{name}")
    result = pipeline(spec, on_step)
    sync(device)
    measurement = meter.end_window(f"wan-{name}")
    intervals = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    step_s = statistics.median(intervals) if intervals else result.wall_s / spec.steps
    record = {
        "applied": applied,
        "warmup_s": round(warmup_s, 2),
        "wall_s": round(result.wall_s, 3),
        "step_s": step_s,
        "step_s_all": [round(x, 4) for x in intervals],
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    }
    return record, forward, (result, measurement)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny random config (smoke test on a CPU)")
    parser.add_argument("--modes", default=None, help=f"comma-separated, stock first: {', '.join(MODES)}")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: 50, tiny: 2)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON line here")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else None
    device = device or torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    dtype_name = "bf16" if dtype == torch.bfloat16 else "fp32"
    default_modes = "stock,kernels,fbcache" if args.tiny else "stock,compiled"
    modes = [m.strip() for m in (args.modes or default_modes).split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes or modes[0] != "stock":
        parser.error(f"--modes must start with stock and name only {', '.join(MODES)}; got {args.modes!r}")
    steps = args.steps or (2 if args.tiny else 50)
    if args.tiny:
        spec = VideoSpec(PROMPT, seconds=1, width=64, height=64, steps=steps, guidance=5.0)
    else:  # 81 frames at Wan's 16 fps
        spec = VideoSpec(PROMPT, seconds=5, width=832, height=480, steps=steps, guidance=5.0)

    t0 = time.perf_counter()
    with torch.device(device):  # initialise the random weights where they will run: minutes faster for 7 B params
        pipe = build_random_pipeline("wan", "tiny" if args.tiny else "full", dtype=dtype)
    pipe.to(device)
    build_s = time.perf_counter() - t0
    pipeline = DiffusersPipeline.from_pipe(pipe, name="wan2.1-t2v-1.3b-random" if not args.tiny else "wan-tiny")
    pipeline.check_spec(spec)
    frames = pipeline.num_frames(spec.seconds)
    grid = pipeline.latent_grid(frames, spec.width, spec.height)
    cfg = pipeline.info.transformer_config
    generator = torch.Generator("cpu").manual_seed(1)
    t_ratio, s_ratio = pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial
    latent_shape = (1, cfg["in_channels"], (frames - 1) // t_ratio + 1, spec.height // s_ratio, spec.width // s_ratio)
    inputs = {
        "hidden_states": torch.randn(latent_shape, generator=generator).to(device, dtype),
        "timestep": torch.tensor([500.0], device=device),
        "encoder_hidden_states": torch.randn(1, pipeline.text_tokens, cfg["text_dim"], generator=generator).to(
            device, dtype
        ),
    }

    energy_device = pipeline.energy_device()
    chip = chip_for_device(energy_device)
    peak_flops = chip.peak_flops(dtype_name)
    guided = spec.guidance > 1.0
    step_flops = pipeline.forwards_per_step() * pipeline.family.forward_flops(
        cfg, grid, pipeline.text_tokens, 2 if guided else 1
    )
    video_flops = pipeline.estimate_flops(spec)
    meter = get_meter()
    reference = mlenergy_reference(chip.key, spec, frames)

    results: dict[str, Any] = {}
    stock_forward: torch.Tensor | None = None
    stock_video: torch.Tensor | None = None
    tolerance = FORWARD_REL_TOL[dtype_name]
    for name in modes:
        try:
            record, forward, (generation, measurement) = run_mode(name, pipeline, spec, inputs, meter)
        except Exception as e:  # one mode failing (a missing kernel, a compile error) must not hide the others
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            if name == "stock":
                raise
            continue
        video = torch.from_numpy(generation.clip.frames).float()
        if name == "stock":
            stock_forward, stock_video = forward, video
        achieved = step_flops / record["step_s"]  # under a step cache: effective, as if every block had run
        record.update(
            {
                "achieved_flop_per_s": achieved,
                "mfu": achieved / peak_flops,
                **energy_fields(measurement, video_flops, energy_device, dtype=dtype_name),
                "seconds": record["wall_s"],
            }
        )
        if forward is not None and stock_forward is not None:
            rel = (torch.linalg.vector_norm(forward - stock_forward) / torch.linalg.vector_norm(stock_forward)).item()
            record["forward_rel_l2_vs_stock"] = rel
            record["equivalent"] = rel <= tolerance
        if stock_video is not None:
            mse = torch.mean((video - stock_video) ** 2).item()
            record["video_mean_abs_diff_levels"] = torch.mean((video - stock_video).abs()).item()
            record["video_psnr_db_vs_stock"] = math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
        if name != "stock" and "step_s" in results.get("stock", {}):
            record["speedup_vs_stock"] = results["stock"]["step_s"] / record["step_s"]
        results[name] = record
        # Each mode as it finishes, so a run stopped at a time limit keeps the modes it completed
        print(json.dumps({"mode": name, **record}, default=str), file=sys.stderr, flush=True)

    exact = [m for m in modes if m != "stock" and m not in OUTPUT_CHANGING and "speedup_vs_stock" in results[m]]
    best = max(exact, key=lambda m: results[m]["speedup_vs_stock"], default=None)
    best_joules = min((results[m]["joules"] for m in ["stock", *exact] if "joules" in results[m]), default=None)
    line = {
        "benchmark": "diffusers_wan_gpu",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model_name(),
        "host": platform.node(),
        "device": str(device),
        "chip": chip.key,
        "peak_flop_per_s": peak_flops,
        "torch": torch.__version__,
        "config": {
            "model": "Wan 2.1 T2V 1.3B architecture, random weights" if not args.tiny else "Wan tiny, random weights",
            "parameters": pipeline.info.parameters_by_component,
            "dtype": dtype_name,
            "size": spec.size,
            "frames": frames,
            "steps": spec.steps,
            "guidance": spec.guidance,
            "latent_grid": grid,
            "text_tokens": pipeline.text_tokens,
        },
        "flops_per_step": step_flops,
        "flops_per_video": video_flops,
        "meter": type(meter).__name__,
        "build_s": round(build_s, 1),
        "forward_rel_tol": tolerance,
        "modes": results,
        "best_exact_mode": best,
        "best_exact_speedup": results[best]["speedup_vs_stock"] if best else None,
        "mlenergy_reference": reference,
        "targets": {
            "speedup_at_least": TARGET_SPEEDUP,
            "speedup_met": bool(best and results[best]["speedup_vs_stock"] >= TARGET_SPEEDUP),
            "joules_at_most_mlenergy": (best_joules <= reference["joules_per_video"])
            if reference and best_joules is not None
            else None,
            "all_exact_modes_equivalent": all(results[m].get("equivalent", False) for m in exact),
        },
    }
    text = json.dumps(line, default=str)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

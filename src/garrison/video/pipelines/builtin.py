"""The built-in text-to-video pipeline: prompt -> Clip, with the denoising loop written out.

Sizes: the model renders natively at 64x64, 112x64 and 64x112 (width x height). The sizes of OpenAI's video API
(1280x720, 720x1280, 1792x1024, 1024x1792) are produced at the native size of the nearest aspect ratio and scaled
up; the result says so (`native_size`, `scaled`). Durations are 2, 4, 8 or 12 s at 8 fps, all native.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from garrison.core.types import DEFAULT_GUIDANCE as DEFAULT_GUIDANCE  # re-exported: the CLI and API defaults
from garrison.core.types import DEFAULT_STEPS as DEFAULT_STEPS
from garrison.core.types import Clip, VideoSpec
from garrison.hardware.cpu import bf16_is_fast
from garrison.video.data.world import load_world
from garrison.video.models.dit import SpacetimeDiT
from garrison.video.models.text_encoder import TextEncoder, shared_text_encoder
from garrison.video.pipelines.flops import generation_flops

# re-exported: their home before sizes.py
from garrison.video.pipelines.sizes import SCALED_SIZES as SCALED_SIZES
from garrison.video.pipelines.sizes import check_spec as check_spec
from garrison.video.pipelines.sizes import render_size as render_size
from garrison.video.pipelines.sizes import resolve_size as resolve_size
from garrison.video.pipelines.sizes import shipped_patch_px as shipped_patch_px
from garrison.video.pipelines.sizes import supported_sizes as supported_sizes
from garrison.video.sampling.flow_euler import FlowMatchEulerSampler
from garrison.video.training.checkpoint import load_model, shipped_checkpoint_dir

MODEL_NAME = "garrison-builtin-dit"
SAMPLER_SHIFT = 3.0

ProgressFn = Callable[[int, int], None]


@dataclass
class Generation:
    clip: Clip
    flops: int
    wall_s: float
    native_size: str
    scaled: bool
    model: str = MODEL_NAME
    info: dict[str, Any] = field(default_factory=dict)


class BuiltinPipeline:
    """Text -> Clip with the built-in spacetime DiT. Load once, call many times."""

    def __init__(
        self,
        model: SpacetimeDiT,
        text_encoder: TextEncoder,
        device: str | torch.device = "cpu",
        bf16: bool | None = None,
        checkpoint: dict[str, Any] | None = None,
    ) -> None:
        # Inference runs the weights in bf16 outright rather than under autocast: autocast re-casts every weight
        # on every call, which costs more than the matmuls at this model size. None: bf16 where the device runs it
        # at least as fast as fp32 (an AVX2-only CPU emulates it: a 4 s 112x64 clip 13.07 s against 2.50 s).
        if bf16 is None:
            bf16 = bf16_is_fast(torch.device(device).type)
        self.bf16 = bf16
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        self.model = model.eval().to(self.dtype)
        self.text_encoder = text_encoder
        self.device = torch.device(device)
        self.checkpoint = checkpoint or {}
        self.fps = load_world().fps

    @classmethod
    def load(
        cls, checkpoint_dir: str | Path | None = None, device: str = "cpu", bf16: bool | None = None
    ) -> BuiltinPipeline:
        """Load a checkpoint folder (default: the one shipped inside the package). Raises CheckpointError."""
        directory = Path(checkpoint_dir) if checkpoint_dir is not None else shipped_checkpoint_dir()
        model, config = load_model(directory, device)
        return cls(model, shared_text_encoder(str(device)), device, bf16, {"path": str(directory), **config})

    def estimate_flops(self, spec: VideoSpec) -> int:
        """Analytic FLOPs of `spec` without running it (the governor's admission uses this)."""
        (w, h), _ = render_size(spec, self.model.cfg.patch_hw)
        grid = self.model.grid(spec.seconds * self.fps, h, w)
        guided = spec.guidance != 1.0
        prompt_tokens = self.text_encoder.token_count(spec.prompt)
        null_tokens = self.text_encoder.token_count("")
        return generation_flops(self.model.cfg, grid, prompt_tokens, null_tokens, spec.steps, guided)

    @torch.no_grad()
    def __call__(self, spec: VideoSpec, progress: ProgressFn | None = None) -> Generation:
        check_spec(spec)
        start = time.perf_counter()
        (native_w, native_h), scaled = render_size(spec, self.model.cfg.patch_hw)
        frames = spec.seconds * self.fps
        guided = spec.guidance != 1.0  # guidance 1 is the conditional model alone: skip the uncond half

        prompts = [spec.prompt, ""] if guided else [spec.prompt]
        text_states, text_mask = self.text_encoder.encode(prompts)
        generator = torch.Generator("cpu").manual_seed(spec.seed)
        latents = torch.randn((1, 3, frames, native_h, native_w), generator=generator).to(self.device)

        sampler = FlowMatchEulerSampler(shift=SAMPLER_SHIFT)
        sampler.set_timesteps(spec.steps)
        text_states = text_states.to(self.dtype)
        for i, t in enumerate(sampler.timesteps):
            model_in = latents.to(self.dtype).expand(len(prompts), -1, -1, -1, -1)
            x0 = self.model(model_in, t.expand(len(prompts)).to(self.device), text_states, text_mask).float()
            if guided:
                x0_cond, x0_uncond = x0.chunk(2)
                x0 = x0_uncond + spec.guidance * (x0_cond - x0_uncond)
            velocity = (latents - x0) / t  # x-prediction -> flow velocity (noise - data); t > 0 on every step
            latents = sampler.step(velocity, t, latents)
            if progress is not None:
                progress(i + 1, spec.steps)

        video = latents.clamp(-1, 1)
        if scaled:
            video = F.interpolate(video[0].transpose(0, 1), size=(spec.height, spec.width), mode="bilinear")
            video = video.transpose(0, 1)[None]
        pixels = ((video[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        clip = Clip(np.ascontiguousarray(pixels.permute(1, 2, 3, 0).cpu().numpy()), self.fps)
        wall_s = time.perf_counter() - start
        clip.metadata.update({"prompt": spec.prompt, "seed": spec.seed, "steps": spec.steps, "model": MODEL_NAME})
        return Generation(
            clip=clip,
            flops=self.estimate_flops(spec),
            wall_s=wall_s,
            native_size=f"{native_w}x{native_h}",
            scaled=scaled,
            info={"guidance": spec.guidance, "sampler": f"flow-euler(shift={SAMPLER_SHIFT})"},
        )

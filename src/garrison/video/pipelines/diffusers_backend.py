"""Open text-to-video models (Wan 2.1, LTX-Video, CogVideoX) from a local diffusers folder, behind the same pipeline
protocol as the built-in model: `load`, `check_spec`, `estimate_flops`, `estimate_memory_bytes`,
`__call__(spec, progress) -> Generation`.

diffusers runs the models; garrison adds what diffusers does not do: the checks that refuse a missing, partial,
unsupported or too-big model folder before any weight is read (`inspect_model_dir`, `check_fits`), the mapping of a
`VideoSpec` (seconds, size, quality ladder's `native_scale`) onto each family's frame and size grid, and analytic
FLOPs per architecture. The FLOP formulas are hand-written because no library gives them for these architectures; a
test checks each against torch's FlopCounterMode on tiny configs of the real classes.

FLOPs follow garrison's convention (video/pipelines/flops.py): matrix multiplies only, 2 FLOP per multiply-add.
Counted: the T5 text encoder and every transformer forward. Not counted: the VAE decode (convolutions, once per
video): for Wan 2.1 at 480x832, 81 frames it is 2.75e14 FLOP (FlopCounterMode on meta tensors), 1% of the 2.83e16 of
a 50-step video, so `efficiency_vs_limit` and MFU are that much conservative.
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from garrison.core.types import Clip, Device, InvalidSpecError, VideoSpec
from garrison.video.pipelines.builtin import Generation, ProgressFn
from garrison.video.training.checkpoint import CheckpointError

GIB = 1024**3
REQUIRED_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Room kept free beside the weights when deciding whether a model fits at all (CUDA context, allocator slack,
# activations of the smallest clip); a spec's own activations are checked per request by `estimate_memory_bytes`.
LOAD_HEADROOM_BYTES = 512 * 1024**2
LOAD_HEADROOM_FRACTION = 0.1


class ModelDirError(CheckpointError):
    """A model folder that is missing, partial, of an unsupported architecture, or too big for the device."""


class ModelTooLargeError(ModelDirError):
    """The model's weights do not fit the device's memory."""


# --- analytic FLOPs per architecture --------------------------------------------------------------------------------


def t5_encoder_flops(cfg: dict[str, Any], tokens: int) -> int:
    """One T5 / UMT5 encoder forward over `tokens` tokens (attention projections, scores, gated or plain FFN)."""
    d, inner, ff = cfg["d_model"], cfg["num_heads"] * cfg["d_kv"], cfg["d_ff"]
    gated = str(cfg.get("feed_forward_proj", "relu")).startswith("gated")
    layer = 2 * tokens * d * inner * 4 + 4 * tokens * tokens * inner + 2 * tokens * d * ff * (3 if gated else 2)
    return cfg["num_layers"] * layer


def wan_forward_flops(cfg: dict[str, Any], grid: tuple[int, int, int], text_tokens: int, batch: int = 1) -> int:
    """One WanTransformer3DModel forward over a (T, H, W) grid of patches with `text_tokens` text tokens."""
    n, lt = math.prod(grid), text_tokens
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    patch = math.prod(cfg["patch_size"])
    per = 2 * n * cfg["in_channels"] * patch * d  # patch embedding (a strided Conv3d)
    per += 2 * (cfg["freq_dim"] * d + d * d) + 2 * d * 6 * d  # timestep MLP and its 6-way modulation projection
    per += 2 * lt * (cfg["text_dim"] * d + d * d)  # text projection
    block = 2 * n * d * d * 4 + 4 * n * n * d  # self-attention: q, k, v, out; scores and values
    block += 2 * n * d * d * 2 + 2 * lt * d * d * 2 + 4 * n * lt * d  # cross-attention: q, out; k, v over text
    block += 2 * n * d * cfg["ffn_dim"] * 2  # FFN
    per += cfg["num_layers"] * block
    per += 2 * n * d * (cfg.get("out_channels") or cfg["in_channels"]) * patch  # output projection
    return batch * per


def ltx_forward_flops(cfg: dict[str, Any], grid: tuple[int, int, int], text_tokens: int, batch: int = 1) -> int:
    """One LTXVideoTransformer3DModel forward over a (T, H, W) grid of patches with `text_tokens` text tokens."""
    n, lt = math.prod(grid), text_tokens
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    cross = cfg["cross_attention_dim"]
    per = 2 * n * cfg["in_channels"] * d  # proj_in
    per += 2 * (256 * d + d * d) + 2 * d * 6 * d  # AdaLayerNormSingle: 256-channel timestep MLP and 6-way projection
    per += 2 * lt * (cfg["caption_channels"] * d + d * d)  # caption projection
    block = 2 * n * d * d * 4 + 4 * n * n * d  # self-attention
    block += 2 * n * d * d * 2 + 2 * lt * cross * d * 2 + 4 * n * lt * d  # cross-attention
    block += 2 * n * d * 4 * d * 2  # FFN (4x)
    per += cfg["num_layers"] * block
    per += 2 * n * d * (cfg.get("out_channels") or cfg["in_channels"])  # proj_out
    return batch * per


def cogvideox_forward_flops(cfg: dict[str, Any], grid: tuple[int, int, int], text_tokens: int, batch: int = 1) -> int:
    """One CogVideoXTransformer3DModel forward: joint attention over text and video tokens in every block."""
    n, lt = math.prod(grid), text_tokens
    s = n + lt
    d, t_dim = cfg["num_attention_heads"] * cfg["attention_head_dim"], cfg["time_embed_dim"]
    patch = cfg["patch_size"] ** 2 * (cfg.get("patch_size_t") or 1)
    per = 2 * n * cfg["in_channels"] * patch * d + 2 * lt * cfg["text_embed_dim"] * d  # patch and text embedding
    per += 2 * (d * t_dim + t_dim * t_dim)  # timestep MLP
    block = 2 * t_dim * 6 * d * 2  # two LayerNormZero modulations
    block += 2 * s * d * d * 4 + 4 * s * s * d  # joint self-attention over text + video
    block += 2 * s * d * 4 * d * 2  # FFN (4x) over text + video
    per += cfg["num_layers"] * block
    per += 2 * t_dim * 2 * d  # AdaLayerNorm of the output
    per += 2 * n * d * (cfg.get("out_channels") or cfg["in_channels"]) * patch  # proj_out
    return batch * per


# --- families ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """What garrison needs to know about one diffusers pipeline class beyond what diffusers exposes."""

    name: str
    pipeline_class: str
    fps: int  # the frame rate the family was trained at
    frame_multiple: int  # frame counts are k * frame_multiple + 1 (the VAE's causal temporal compression)
    max_frames: int | None  # longest clip the family is made for (None: the transformer config says)
    text_tokens: int  # prompts are padded to this many tokens (None-free: CogVideoX reads its transformer config)
    forward_flops: Callable[[dict[str, Any], tuple[int, int, int], int, int], int]
    decode_frames_in_flight: int | None = None  # the VAE decodes this many pixel frames at once (None: all)


FAMILIES: dict[str, Family] = {
    f.pipeline_class: f
    for f in (
        Family("wan", "WanPipeline", 16, 4, 81, 512, wan_forward_flops, decode_frames_in_flight=8),
        Family("ltx", "LTXPipeline", 24, 8, 257, 128, ltx_forward_flops),
        Family("cogvideox", "CogVideoXPipeline", 8, 4, None, 226, cogvideox_forward_flops),
    )
}


# --- inspecting a model folder before loading it -----------------------------------------------------------------------


def _safetensors_parameters(path: Path) -> int:
    """Parameter count from a safetensors header (8-byte length, then JSON), without reading the tensors."""
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
    except (OSError, struct.error, ValueError) as e:
        raise ModelDirError(f"{path} is not a readable safetensors file ({e})") from e
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def _component_parameters(folder: Path) -> int:
    """Parameters of one component folder; sharded weights must have every shard their index names."""
    for index in sorted(folder.glob("*.index.json")):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError) as e:
            raise ModelDirError(f"{index} is not a valid shard index ({e})") from e
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise ModelDirError(f"{folder} is partial: the shard index names {', '.join(missing)}, which are missing")
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        raise ModelDirError(f"{folder} has no weights (*.safetensors or *.bin): the download is partial")
    total = 0
    for p in files:
        # .bin pickles cannot be read without loading; count them at 4 bytes a parameter, their usual dtype
        total += _safetensors_parameters(p) if p.suffix == ".safetensors" else p.stat().st_size // 4
    return total


@dataclass(frozen=True)
class ModelInfo:
    """What a diffusers folder holds, read from its configs and weight headers without loading anything."""

    path: Path
    family: Family
    transformer_config: dict[str, Any]
    text_encoder_config: dict[str, Any]
    vae_config: dict[str, Any]
    parameters_by_component: dict[str, int] = field(default_factory=dict)

    @property
    def parameters(self) -> int:
        return sum(self.parameters_by_component.values())

    def weight_bytes(self, dtype: torch.dtype) -> int:
        return self.parameters * torch.finfo(dtype).bits // 8


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelDirError(f"{path} is missing: the model folder is partial")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelDirError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ModelDirError(f"{path} does not hold a JSON object")
    return data


def inspect_model_dir(path: str | Path) -> ModelInfo:
    """Check a diffusers text-to-video folder and read what it holds. Raises ModelDirError saying what is wrong."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelDirError(f"model folder {path} does not exist")
    if not path.is_dir():
        raise ModelDirError(f"{path} is a file; give the folder that holds model_index.json")
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelDirError(f"{path} has no model_index.json: not a diffusers pipeline folder (or a partial download)")
    class_name = _read_json(index).get("_class_name")
    if class_name not in FAMILIES:
        supported = ", ".join(FAMILIES)
        raise ModelDirError(f"{path} holds a {class_name!r} pipeline; garrison runs text-to-video {supported}")
    missing = [c for c in REQUIRED_COMPONENTS if not (path / c).is_dir()]
    if missing:
        raise ModelDirError(f"{path} is partial: no {', '.join(missing)} folder")
    tokenizer_files = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
    if not any((path / "tokenizer" / f).is_file() for f in tokenizer_files):
        raise ModelDirError(f"{path / 'tokenizer'} has none of {', '.join(tokenizer_files)}: the folder is partial")
    _read_json(path / "scheduler" / "scheduler_config.json")
    configs = {c: _read_json(path / c / "config.json") for c in ("transformer", "text_encoder", "vae")}
    params = {c: _component_parameters(path / c) for c in ("transformer", "text_encoder", "vae")}
    return ModelInfo(
        path, FAMILIES[class_name], configs["transformer"], configs["text_encoder"], configs["vae"], params
    )


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device for `device`; "auto" is the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelDirError(f"device {device!r} asked for, but no CUDA device is visible")
    if dev.type not in ("cpu", "cuda"):
        raise ModelDirError(f"device {device!r} is not supported; use auto, cpu or cuda[:N]")
    return dev


def device_memory_bytes(device: torch.device) -> int:
    """Memory a model can use on `device`: free GPU memory, or the host's MemAvailable for the CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(info: ModelInfo, dtype: torch.dtype, memory_bytes: int) -> None:
    """Raise ModelTooLargeError when the weights at `dtype` and the load headroom exceed `memory_bytes`."""
    weights = info.weight_bytes(dtype)
    need = weights + LOAD_HEADROOM_BYTES + int(LOAD_HEADROOM_FRACTION * weights)
    if need > memory_bytes:
        raise ModelTooLargeError(
            f"{info.path.name} ({info.family.pipeline_class}, {info.parameters / 1e9:.2f} B parameters) needs about "
            f"{need / GIB:.1f} GiB at {str(dtype).removeprefix('torch.')} with headroom; the device has "
            f"{memory_bytes / GIB:.1f} GiB free: use a bigger device or a smaller model"
        )


# --- speed ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Optimizations:
    """What `DiffusersPipeline.optimize` applies. The defaults keep outputs equal up to rounding."""

    attention: str | None = "auto"  # a diffusers attention backend name; "auto": the fastest this machine has
    fuse_qkv: bool = True  # one GEMM for q, k and v instead of three
    compile: bool = True  # torch.compile of the whole transformer
    compile_mode: str | None = None  # torch.compile mode (None: default, or "reduce-overhead" with CUDA graphs)
    cuda_graphs: bool = False  # replay the compiled transformer as CUDA graphs (removes launch overhead)
    first_block_cache: float | None = None  # FBCache threshold: skips blocks when step residuals barely change


def choose_attention_backend(device: torch.device) -> str | None:
    """The attention kernel to force: FlashAttention-3 on Hopper when installed, else None (PyTorch's own SDPA dispatch).

    Measured on an H100 with torch 2.11 (docs/measurements.md, 2026-11-27): PyTorch's own dispatch already runs
    cuDNN attention there (bit-identical output), so forcing `_native_cudnn` through diffusers' dispatcher only added
    3% per forward (0.664 s against 0.642 s), and forcing `_native_flash` (FlashAttention-2) cost 35% (0.868 s).
    """
    if device.type != "cuda":
        return None
    major, _minor = torch.cuda.get_device_capability(device)
    if major == 9:
        try:
            import flash_attn_interface  # noqa: F401  (FlashAttention-3, Hopper only; not measured here yet)

            return "_flash_3"
        except ImportError:
            pass
    return None


class CompiledTransformer(torch.nn.Module):
    """A torch.compile'd transformer that still answers the pipeline's attribute lookups (config, dtype, caches).

    Under CUDA graphs each call starts a new graph step and clones its output: the pipelines call the transformer
    twice per step (cond, then uncond) and keep the first result, which the second replay would overwrite.
    """

    def __init__(self, inner: torch.nn.Module, mode: str | None, cuda_graphs: bool) -> None:
        super().__init__()
        self.inner = inner
        self.compiled = torch.compile(inner, mode=mode)
        self.cuda_graphs = cuda_graphs

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.cuda_graphs:
            return self.compiled(*args, **kwargs)
        torch.compiler.cudagraph_mark_step_begin()
        out = self.compiled(*args, **kwargs)
        if isinstance(out, tuple):
            return tuple(o.clone() if isinstance(o, torch.Tensor) else o for o in out)
        return out.clone() if isinstance(out, torch.Tensor) else out


def check_model_for_device(model_path: str | Path, memory_bytes: int, dtype: str = "bf16") -> ModelInfo:
    """What admission asks before placing a model on a device with `memory_bytes` of memory, loading nothing.

    Returns the folder's ModelInfo; raises ModelDirError (ModelTooLargeError when it cannot fit) saying why.
    """
    info = inspect_model_dir(model_path)
    check_fits(info, _dtype(dtype, torch.device("cpu")), memory_bytes)
    return info


# --- the pipeline ------------------------------------------------------------------------------------------------------


def _dtype(name: str | None, device: torch.device) -> torch.dtype:
    if name is None:  # bf16 where the tensor cores are; fp32 on the CPU, where bf16 convolutions are slow or missing
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if name not in table:
        raise ModelDirError(f"dtype {name!r} is not supported; use bf16, fp16 or fp32")
    return table[name]


class DiffusersPipeline:
    """A diffusers text-to-video pipeline (Wan, LTX-Video, CogVideoX) behind garrison's pipeline protocol."""

    def __init__(self, pipe: Any, info: ModelInfo, device: torch.device, dtype: torch.dtype, name: str) -> None:
        self.pipe = pipe
        self.info = info
        self.family = info.family
        self.device = device
        self.dtype = dtype
        self.model_name = name
        self.memory_bytes: int | None = None  # the device memory the load was checked against
        self._eager_transformer: torch.nn.Module | None = None  # the stock transformer while optimised
        pipe.set_progress_bar_config(disable=True)  # garrison reports progress through its own callback
        for component in ("transformer", "text_encoder", "vae"):
            getattr(pipe, component).eval()  # inference: no dropout, whoever built the modules

    @property
    def bf16(self) -> bool:
        return self.dtype == torch.bfloat16

    @property
    def fps(self) -> int:
        return self.family.fps

    @classmethod
    def load(
        cls,
        model_path: str | Path,
        device: str = "auto",
        dtype: str | None = None,
        memory_bytes: int | None = None,
        name: str | None = None,
    ) -> DiffusersPipeline:
        """Check the folder, check it fits the device (`memory_bytes` overrides what the device reports), load it.

        Raises ModelDirError (ModelTooLargeError when too big) before any weight is read.
        """
        info = inspect_model_dir(model_path)
        dev = resolve_device(device)
        torch_dtype = _dtype(dtype, dev)
        budget = memory_bytes if memory_bytes is not None else device_memory_bytes(dev)
        check_fits(info, torch_dtype, budget)

        import diffusers

        pipeline_cls = getattr(diffusers, info.family.pipeline_class)
        try:
            with warnings.catch_warnings():  # newer diffusers renamed torch_dtype to dtype; the old name still works
                warnings.simplefilter("ignore", FutureWarning)
                pipe = pipeline_cls.from_pretrained(info.path, torch_dtype=torch_dtype, local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise ModelDirError(f"diffusers could not load {info.path}: {e}") from e
        pipe.to(dev)
        loaded = cls(pipe, info, dev, torch_dtype, name or info.path.name)
        loaded.memory_bytes = budget
        return loaded

    @classmethod
    def from_pipe(cls, pipe: Any, name: str | None = None) -> DiffusersPipeline:
        """Wrap a diffusers pipeline already in memory (a benchmark's random-initialised one, say)."""
        class_name = type(pipe).__name__
        if class_name not in FAMILIES:
            raise ModelDirError(f"{class_name} is not supported; garrison runs {', '.join(FAMILIES)}")

        def stored(module: torch.nn.Module) -> int:  # weights and saved buffers, a tied tensor once
            return sum({t.data_ptr(): t.numel() for t in module.state_dict().values()}.values())

        info = ModelInfo(
            Path(name or class_name),
            FAMILIES[class_name],
            dict(pipe.transformer.config),
            pipe.text_encoder.config.to_dict(),
            dict(pipe.vae.config),
            {c: stored(getattr(pipe, c)) for c in ("transformer", "text_encoder", "vae")},
        )
        return cls(pipe, info, pipe.transformer.device, pipe.transformer.dtype, name or info.family.name)

    # --- speed: optimisations that keep outputs numerically equivalent, and one that does not ---

    def optimize(self, opts: Optimizations) -> dict[str, Any]:
        """Apply `opts` to the transformer (after undoing earlier ones); returns what was applied.

        Attention backend, fused QKV projections, torch.compile and CUDA graphs change only rounding (the benchmark
        checks the tolerance); first-block caching skips work and changes outputs, so it is off unless asked.
        """
        self.reset_optimizations()
        transformer = self.pipe.transformer
        applied: dict[str, Any] = {}
        backend = choose_attention_backend(self.device) if opts.attention == "auto" else opts.attention
        if backend is not None:
            transformer.set_attention_backend(backend)
            applied["attention"] = backend
        if opts.fuse_qkv and hasattr(transformer, "fuse_qkv_projections"):
            transformer.fuse_qkv_projections()
            applied["fuse_qkv"] = True
        if opts.first_block_cache is not None:
            from diffusers.hooks import FirstBlockCacheConfig

            transformer.enable_cache(FirstBlockCacheConfig(threshold=opts.first_block_cache))
            applied["first_block_cache"] = opts.first_block_cache
        if opts.compile:
            cuda_graphs = opts.cuda_graphs and self.device.type == "cuda"
            mode = opts.compile_mode or ("reduce-overhead" if cuda_graphs else None)
            self.pipe.transformer = CompiledTransformer(transformer, mode, cuda_graphs)
            applied["compile"] = mode or "default"
            applied["cuda_graphs"] = cuda_graphs
        self._eager_transformer = transformer
        return applied

    def reset_optimizations(self) -> None:
        """Back to stock diffusers: the eager transformer, native attention, unfused projections, no cache."""
        transformer = self._eager_transformer if self._eager_transformer is not None else self.pipe.transformer
        if isinstance(self.pipe.transformer, CompiledTransformer):
            torch._dynamo.reset()  # drop compiled graphs (and their CUDA graph pools)
        self.pipe.transformer = transformer
        if getattr(transformer, "is_cache_enabled", False):
            transformer.disable_cache()
        if hasattr(transformer, "unfuse_qkv_projections"):
            transformer.unfuse_qkv_projections()
        if hasattr(transformer, "set_attention_backend"):
            transformer.set_attention_backend("native")
        self._eager_transformer = None

    # --- the spec on this family's grid ---

    @property
    def size_multiple(self) -> int:
        """Widths and heights are multiples of this (VAE downsampling times the transformer's spatial patch)."""
        p, cfg = self.pipe, self.info.transformer_config
        if self.family.name == "wan":
            return p.vae_scale_factor_spatial * cfg["patch_size"][1]
        if self.family.name == "ltx":
            return p.vae_spatial_compression_ratio * p.transformer_spatial_patch_size
        return p.vae_scale_factor_spatial * cfg["patch_size"]

    @property
    def max_frames(self) -> int:
        if self.family.max_frames is not None:
            return self.family.max_frames
        return int(self.info.transformer_config.get("sample_frames", 49))  # CogVideoX's positional table

    def num_frames(self, seconds: int) -> int:
        """Frames for `seconds` at the family's rate, on its k * multiple + 1 grid."""
        m = self.family.frame_multiple
        return max(1, round(seconds * self.fps / m)) * m + 1

    def render_size(self, spec: VideoSpec) -> tuple[tuple[int, int], bool]:
        """(width, height) the model renders at, and whether the output is scaled from it.

        A size off the family's grid renders at the grid size below it; `native_scale` < 1 shrinks further.
        """
        m = self.size_multiple
        scale = min(1.0, spec.native_scale)
        w = max(m, int(spec.width * scale) // m * m)
        h = max(m, int(spec.height * scale) // m * m)
        return (w, h), (w, h) != (spec.width, spec.height)

    def check_spec(self, spec: VideoSpec) -> None:
        """Everything that can be refused before any work starts, memory included."""
        spec.validate()
        frames = self.num_frames(spec.seconds)
        if frames > self.max_frames:
            longest = (self.max_frames - 1) // self.fps
            raise InvalidSpecError(
                f"{spec.seconds} s is {frames} frames at {self.fps} fps; {self.model_name} makes at most "
                f"{self.max_frames} frames ({max(1, longest)} s)"
            )
        m = self.size_multiple
        if spec.width < m or spec.height < m:
            raise InvalidSpecError(f"size {spec.size} is below the smallest {m}x{m} {self.model_name} renders")
        if self.memory_bytes is not None:
            need = self.estimate_memory_bytes(spec)
            if need > self.memory_bytes:
                raise InvalidSpecError(
                    f"{spec.size} for {spec.seconds} s needs about {need / GIB:.1f} GiB on {self.device}, which has "
                    f"{self.memory_bytes / GIB:.1f} GiB: ask a smaller size or fewer seconds"
                )

    def latent_grid(self, frames: int, width: int, height: int) -> tuple[int, int, int]:
        """The transformer's (T, H, W) grid of patches for a clip of `frames` frames at width x height."""
        p, cfg, fam = self.pipe, self.info.transformer_config, self.family.name
        if fam == "wan":
            lt = (frames - 1) // p.vae_scale_factor_temporal + 1
            s = p.vae_scale_factor_spatial
            pt, ph, pw = cfg["patch_size"]
            return lt // pt, height // s // ph, width // s // pw
        if fam == "ltx":
            lt = (frames - 1) // p.vae_temporal_compression_ratio + 1
            s, ps, pst = (
                p.vae_spatial_compression_ratio,
                p.transformer_spatial_patch_size,
                p.transformer_temporal_patch_size,
            )
            return lt // pst, height // s // ps, width // s // ps
        lt = (frames - 1) // p.vae_scale_factor_temporal + 1
        pt = cfg.get("patch_size_t") or 1
        lt = math.ceil(lt / pt) * pt  # CogVideoX 1.5 pads the latent frames to its temporal patch
        s, ps = p.vae_scale_factor_spatial, cfg["patch_size"]
        return lt // pt, height // s // ps, width // s // ps

    @property
    def text_tokens(self) -> int:
        if self.family.name == "cogvideox":
            return int(self.info.transformer_config.get("max_text_seq_length", self.family.text_tokens))
        return self.family.text_tokens

    def forwards_per_step(self) -> int:
        """Transformer evaluations per step: the scheduler's order (Heun-type samplers call the model twice)."""
        return int(getattr(self.pipe.scheduler, "order", 1))

    def estimate_flops(self, spec: VideoSpec) -> int:
        """Analytic FLOPs of `spec` without running it: text encoding plus every transformer forward."""
        (w, h), _ = self.render_size(spec)
        grid = self.latent_grid(self.num_frames(spec.seconds), w, h)
        guided = spec.guidance > 1.0  # the pipelines' own rule for classifier-free guidance
        batch = 2 if guided else 1
        text = batch * t5_encoder_flops(self.info.text_encoder_config, self.text_tokens)
        forward = self.family.forward_flops(self.info.transformer_config, grid, self.text_tokens, batch)
        return text + spec.steps * self.forwards_per_step() * forward

    def estimate_memory_bytes(self, spec: VideoSpec) -> int:
        """Peak device memory of `spec`, a stated rule of thumb for admission (not a measurement).

        Weights at the run dtype, plus one transformer block's live activations (q, k, v, attention output and FFN
        hidden for every token of the batch, with a flash-style kernel that never holds the token x token scores),
        plus the VAE decode's widest full-resolution feature map over the frames it decodes at once, three deep.
        """
        (w, h), _ = self.render_size(spec)
        frames = self.num_frames(spec.seconds)
        cfg = self.info.transformer_config
        d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        ffn = cfg.get("ffn_dim", 4 * d)
        batch = 2 if spec.guidance > 1.0 else 1
        tokens = math.prod(self.latent_grid(frames, w, h)) + (
            self.text_tokens if self.family.name == "cogvideox" else 0
        )
        elem = torch.finfo(self.dtype).bits // 8
        activations = batch * tokens * (6 * d + ffn) * elem
        vae = self.info.vae_config
        channels = vae.get("base_dim") or (vae.get("decoder_block_out_channels") or vae.get("block_out_channels"))[0]
        in_flight = min(frames, self.family.decode_frames_in_flight or frames)
        decode = 3 * in_flight * w * h * int(channels) * elem
        return self.info.weight_bytes(self.dtype) + activations + decode

    def energy_device(self) -> Device:
        """The device the generation's joules are metered on (the GPU by NVML index, or the host CPU)."""
        from garrison.hardware.devices import cpu_device, nvml_gpus

        if self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            gpus, _why = nvml_gpus()
            for gpu in gpus:
                if gpu.index == index:
                    return gpu
        return cpu_device()

    @torch.no_grad()
    def __call__(self, spec: VideoSpec, progress: ProgressFn | None = None) -> Generation:
        self.check_spec(spec)
        start = time.perf_counter()
        (w, h), scaled = self.render_size(spec)
        frames = self.num_frames(spec.seconds)

        def on_step_end(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if progress is not None:
                progress(i + 1, pipe.num_timesteps)
            return {}

        kwargs: dict[str, Any] = {}
        if self.family.name == "ltx":
            kwargs["frame_rate"] = self.fps  # LTX scales its temporal RoPE by the frame rate
        out = self.pipe(
            prompt=spec.prompt,
            height=h,
            width=w,
            num_frames=frames,
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance,
            generator=torch.Generator("cpu").manual_seed(spec.seed),
            output_type="pt",
            callback_on_step_end=on_step_end,
            max_sequence_length=self.text_tokens,
            **kwargs,
        )
        video = out.frames[0].float()  # (T, 3, H, W) in [0, 1]
        if scaled:
            video = F.interpolate(video, size=(spec.height, spec.width), mode="bilinear")
        pixels = (video * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        clip = Clip(np.ascontiguousarray(pixels.cpu().numpy()), self.fps)
        clip.metadata.update({"prompt": spec.prompt, "seed": spec.seed, "steps": spec.steps, "model": self.model_name})
        return Generation(
            clip=clip,
            flops=self.estimate_flops(spec),
            wall_s=time.perf_counter() - start,
            native_size=f"{w}x{h}",
            scaled=scaled,
            model=self.model_name,
            info={
                "guidance": spec.guidance,
                "pipeline": self.family.pipeline_class,
                "scheduler": type(self.pipe.scheduler).__name__,
                "frames": frames,
                "dtype": str(self.dtype).removeprefix("torch."),
                "device": str(self.device),
            },
        )

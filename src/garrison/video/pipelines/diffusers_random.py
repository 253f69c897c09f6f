"""Random-initialised diffusers text-to-video pipelines built from local configs: no download, no weights.

Tests and benchmarks need the real architecture classes (transformer, VAE, T5 text encoder, tokenizer, scheduler)
without the gigabytes of trained weights: `build_random_pipeline("wan", "full")` is the Wan 2.1 1.3B architecture
with random weights (what a GPU benchmark of step time and joules needs), `"tiny"` the same classes at toy widths
(what a CPU test can run end to end in seconds). `save_random_pipeline` writes one as a diffusers folder
(`model_index.json` and one folder per component), exactly the layout a user's downloaded weights have.

The tokenizer is hand-built (a tiny Unigram model trained on a few sentences with `tokenizers`) because the real ones
are downloads; every pipeline pads prompts to its fixed `max_sequence_length`, so the model's work does not depend on
the vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

FAMILY_NAMES = ("wan", "ltx", "cogvideox")
SIZES = ("tiny", "full")
# Wan-AI/Wan2.1-T2V-1.3B-Diffusers, transformer/config.json
WAN_2_1_T2V_1_3B_TRANSFORMER: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 1024,
}
_TOKENIZER_TEXT = [
    "a red circle moving left on a black background",
    "a cat walks in the snow at night, cinematic lighting",
    "waves crash on the rocks; a lighthouse blinks in the fog",
    "0123456789 the quick brown fox jumps over the lazy dog",
]


def build_tokenizer(vocab_size: int = 96) -> Any:
    """A small T5-style tokenizer (Unigram, `</s>` appended, `<pad>` id 0), trained here on a few sentences."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import UnigramTrainer
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(_TOKENIZER_TEXT, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0)


def _t5_config(size: str, umt5: bool) -> Any:
    from transformers import T5Config, UMT5Config

    cls = UMT5Config if umt5 else T5Config
    if size == "tiny":
        return cls(
            vocab_size=128, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu"
        )
    # google/umt5-xxl (Wan) and google/t5-v1_1-xxl (LTX-Video, CogVideoX) encoders
    vocab = 256384 if umt5 else 32128
    return cls(
        vocab_size=vocab,
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
    )


def build_random_pipeline(family: str, size: str = "tiny", dtype: torch.dtype = torch.float32, seed: int = 0) -> Any:
    """A diffusers pipeline of `family` ("wan", "ltx", "cogvideox") with random weights, `size` "tiny" or "full".

    Call it under `with torch.device("cuda"):` to initialise the weights on the GPU (minutes faster at full size).

    "full" exists for Wan only (the 1.3B text-to-video architecture of Wan-AI/Wan2.1-T2V-1.3B-Diffusers).
    """
    if family not in FAMILY_NAMES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILY_NAMES)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose tiny or full")
    if size == "full" and family != "wan":
        raise ValueError("a full-size random pipeline is built for wan only")
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    builders = {
        "wan": lambda: _wan(size, tokenizer),
        "ltx": lambda: _ltx(tokenizer),
        "cogvideox": lambda: _cogvideox(tokenizer),
    }
    pipe = builders[family]()
    for name in ("transformer", "text_encoder", "vae"):
        module = getattr(pipe, name).eval()  # built modules start in training mode: T5's dropout would be on
        module.to(dtype)
        if name != "text_encoder":  # diffusers keeps its models' listed parts in fp32 at any dtype; transformers not
            _keep_fp32_modules(module)
    return pipe


def _keep_fp32_modules(module: torch.nn.Module) -> None:
    """Put back in fp32 the parts a diffusers model keeps there (`_keep_in_fp32_modules`), as `from_pretrained` does."""
    keep = getattr(module, "_keep_in_fp32_modules", None) or []
    for name, param in module.named_parameters():  # matched on parameter names, as diffusers matches them
        if any(k in name.split(".") for k in keep):
            param.data = param.data.float()


def _wan(size: str, tokenizer: Any) -> Any:
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    if size == "tiny":
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=16,
            out_channels=16,
            text_dim=32,
            freq_dim=32,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        )
        vae = AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        )
    else:
        transformer = WanTransformer3DModel(**WAN_2_1_T2V_1_3B_TRANSFORMER)
        vae = AutoencoderKLWan()  # the defaults are Wan 2.1's VAE
    text_encoder = UMT5EncoderModel(_t5_config(size, umt5=True))
    # Wan's own scheduler: UniPC in flow-prediction mode, shift 3 at 480p
    with torch.device("cpu"):  # schedulers keep their tables on the CPU, whatever device the weights start on
        scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
        )
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer
    )


def _ltx(tokenizer: Any) -> Any:
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )
    from transformers import T5EncoderModel

    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=32,
    )
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    text_encoder = T5EncoderModel(_t5_config("tiny", umt5=False))
    with torch.device("cpu"):
        scheduler = FlowMatchEulerDiscreteScheduler()
    return LTXPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )


def _cogvideox(tokenizer: Any) -> Any:
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )
    from transformers import T5EncoderModel

    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=32,
        num_layers=1,
        sample_width=8,
        sample_height=8,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=16,
    )
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    text_encoder = T5EncoderModel(_t5_config("tiny", umt5=False))
    with torch.device("cpu"):
        scheduler = CogVideoXDDIMScheduler()
    return CogVideoXPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )


def save_random_pipeline(family: str, directory: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Build a random pipeline and write it as a diffusers folder (safetensors weights); returns the folder."""
    directory = Path(directory)
    build_random_pipeline(family, size, seed=seed).save_pretrained(directory, safe_serialization=True)
    return directory

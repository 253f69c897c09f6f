"""Render sizes, spec checks and the model configs they read, without torch (the API server's view of the model)."""

import subprocess
import sys


def test_sizes_configs_and_flops_import_no_torch():
    code = (
        "import sys\n"
        "from garrison.core.types import VideoSpec\n"
        "from garrison.video.models.configs import DiTConfig\n"
        "from garrison.video.pipelines.flops import generation_flops\n"
        "from garrison.video.pipelines.sizes import check_spec, render_size, shipped_patch_px\n"
        "from garrison.video.training.checkpoint_config import load_config, shipped_checkpoint_dir\n"
        "cfg = DiTConfig(**load_config(shipped_checkpoint_dir())['model'])\n"
        "check_spec(VideoSpec('a red circle', 2, 1280, 720))\n"
        "print(render_size(VideoSpec('x', width=1280, height=720, native_scale=0.5)), shipped_patch_px() == cfg.patch_hw)\n"
        "print(generation_flops(cfg, (4, 4, 7), 12, 2, 8, True) > 0, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].endswith("True") and lines[1] == "True False", out.stdout + out.stderr[-2000:]


def test_the_torch_modules_reexport_the_names_they_had():
    from garrison.video.models import configs, dit, text_encoder
    from garrison.video.pipelines import builtin, sizes
    from garrison.video.training import checkpoint, checkpoint_config

    assert dit.DiTConfig is configs.DiTConfig
    assert (text_encoder.MAX_TEXT_TOKENS, text_encoder.TEXT_DIM, text_encoder.model_dir) == (
        configs.MAX_TEXT_TOKENS, configs.TEXT_DIM, configs.model_dir,
    )  # fmt: skip
    for name in ("SCALED_SIZES", "check_spec", "render_size", "resolve_size", "shipped_patch_px", "supported_sizes"):
        assert getattr(builtin, name) is getattr(sizes, name)
    for name in ("CONFIG_FILE", "WEIGHTS_FILE", "CheckpointError", "load_config", "shipped_checkpoint_dir"):
        assert getattr(checkpoint, name) is getattr(checkpoint_config, name)

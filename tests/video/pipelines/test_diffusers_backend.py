"""The diffusers backends on tiny random-initialised configs of the real architecture classes: no downloads."""

import json
import shutil

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from garrison.core.types import InvalidSpecError, VideoSpec
from garrison.video.io import read_mp4, write_mp4
from garrison.video.pipelines.builtin import BuiltinPipeline
from garrison.video.pipelines.diffusers_backend import (
    LOAD_HEADROOM_BYTES,
    DiffusersPipeline,
    ModelDirError,
    ModelTooLargeError,
    check_model_for_device,
    inspect_model_dir,
    t5_encoder_flops,
)
from garrison.video.pipelines.diffusers_random import save_random_pipeline
from garrison.video.pipelines.registry import load_pipeline, named_models

FAMILIES = ("wan", "ltx", "cogvideox")
PROMPT = "a red circle moving left on a black background"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusers_models")
    return {family: save_random_pipeline(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def loaded(model_dirs):
    return {family: DiffusersPipeline.load(path, device="cpu") for family, path in model_dirs.items()}


def spec_for(family: str, **kwargs) -> VideoSpec:
    return VideoSpec(PROMPT, **{"seconds": 1, "width": 64, "height": 64, "steps": 2, "guidance": 4.0, **kwargs})


@pytest.mark.parametrize("family", FAMILIES)
def test_generates_end_to_end_to_an_mp4(family, loaded, tmp_path):
    pipeline = loaded[family]
    spec = spec_for(family)
    calls = []
    result = pipeline(spec, lambda i, n: calls.append((i, n)))
    frames = pipeline.num_frames(spec.seconds)
    assert result.clip.frames.shape == (frames, 64, 64, 3) and result.clip.frames.dtype.name == "uint8"
    assert calls == [(1, 2), (2, 2)]
    assert result.flops == pipeline.estimate_flops(spec) > 0
    assert result.model == family and result.info["pipeline"] == pipeline.family.pipeline_class
    out = write_mp4(result.clip, tmp_path / f"{family}.mp4")
    back = read_mp4(out)
    assert back.frames.shape == result.clip.frames.shape and back.fps == pipeline.fps


@pytest.mark.parametrize("family", FAMILIES)
def test_flops_formula_equals_torch_flop_counter(family, loaded):
    pipeline = loaded[family]
    for guidance, size in ((4.0, 64), (1.0, 32 if family != "ltx" else 64)):
        spec = spec_for(family, guidance=guidance, width=size, height=size)
        # The math backend spells attention out as bmm, which the counter sees; the latent output skips the VAE,
        # which the formula leaves out on purpose.
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            pipeline.pipe(
                prompt=spec.prompt,
                height=size,
                width=size,
                num_frames=pipeline.num_frames(spec.seconds),
                num_inference_steps=spec.steps,
                guidance_scale=guidance,
                output_type="latent",
                max_sequence_length=pipeline.text_tokens,
            )
        assert pipeline.estimate_flops(spec) == counter.get_total_flops(), (family, guidance)


def test_t5_formula_equals_torch_flop_counter(loaded):
    encoder = loaded["wan"].pipe.text_encoder
    ids = torch.randint(0, 100, (1, 23))
    with FlopCounterMode(display=False) as counter:
        encoder(ids)
    assert t5_encoder_flops(encoder.config.to_dict(), 23) == counter.get_total_flops()


def test_spec_maps_onto_each_familys_grid(loaded):
    wan, ltx, cog = loaded["wan"], loaded["ltx"], loaded["cogvideox"]
    assert wan.num_frames(5) == 81 and ltx.num_frames(5) == 121 and cog.num_frames(6) == 49
    assert wan.render_size(spec_for("wan", width=72, height=64)) == ((64, 64), True)  # off-grid: scaled
    assert wan.render_size(spec_for("wan", native_scale=0.5)) == ((32, 32), True)
    with pytest.raises(InvalidSpecError, match="at most 9 frames"):
        cog.check_spec(spec_for("cogvideox", seconds=4))
    with pytest.raises(InvalidSpecError, match="smallest"):
        wan.check_spec(spec_for("wan", width=8, height=64))
    scaled = wan(spec_for("wan", width=72, height=64))
    assert scaled.clip.frames.shape[1:] == (64, 72, 3) and scaled.scaled and scaled.native_size == "64x64"


def test_a_spec_too_big_for_the_device_is_refused_before_work(model_dirs):
    info = inspect_model_dir(model_dirs["wan"])
    budget = info.weight_bytes(torch.float32) + LOAD_HEADROOM_BYTES + 32 * 1024**2
    pipeline = DiffusersPipeline.load(model_dirs["wan"], device="cpu", memory_bytes=budget)
    pipeline.check_spec(spec_for("wan"))
    big = spec_for("wan", seconds=5, width=1792, height=1024)
    assert pipeline.estimate_memory_bytes(big) > budget
    with pytest.raises(InvalidSpecError, match="GiB"):
        pipeline.check_spec(big)


def test_inspect_reads_family_configs_and_parameter_counts(model_dirs, loaded):
    info = inspect_model_dir(model_dirs["ltx"])
    assert info.family.name == "ltx" and info.transformer_config["num_layers"] == 1
    pipe = loaded["ltx"].pipe
    components = (pipe.transformer, pipe.text_encoder, pipe.vae)
    # weights and saved buffers, a tied embedding once
    expected = sum({t.data_ptr(): t.numel() for m in components for t in m.state_dict().values()}.values())
    assert info.parameters == expected


def broken_copy(model_dirs, tmp_path, family="wan"):
    target = tmp_path / "model"
    shutil.copytree(model_dirs[family], target)
    return target


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("missing", "does not exist"),
        ("file", "is a file"),
        ("no_index", "no model_index.json"),
        ("unsupported", "'StableDiffusionPipeline' pipeline"),
        ("no_vae", "partial: no vae"),
        ("no_weights", "has no weights"),
        ("bad_config", "not valid JSON"),
        ("missing_shard", "shard index names"),
        ("no_tokenizer", "tokenizer"),
    ],
)
def test_a_bad_model_folder_is_a_clear_error_before_loading(breakage, message, model_dirs, tmp_path):
    target = broken_copy(model_dirs, tmp_path)
    if breakage == "missing":
        target = tmp_path / "nowhere"
    elif breakage == "file":
        target = target / "model_index.json"
    elif breakage == "no_index":
        (target / "model_index.json").unlink()
    elif breakage == "unsupported":
        index = json.loads((target / "model_index.json").read_text())
        (target / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPipeline"}))
    elif breakage == "no_vae":
        shutil.rmtree(target / "vae")
    elif breakage == "no_weights":
        (target / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    elif breakage == "bad_config":
        (target / "transformer" / "config.json").write_text("{not json")
    elif breakage == "missing_shard":
        shard_map = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
        (target / "text_encoder" / "model.safetensors.index.json").write_text(json.dumps(shard_map))
    elif breakage == "no_tokenizer":
        for f in (target / "tokenizer").iterdir():
            f.unlink()
    with pytest.raises(ModelDirError, match=message):
        load_pipeline(model_path=target, device="cpu")


def test_a_model_too_big_for_the_device_is_refused_before_loading(model_dirs):
    with pytest.raises(ModelTooLargeError, match="GiB free"):
        load_pipeline(model_path=model_dirs["wan"], device="cpu", memory_bytes=256 * 1024**2)


def test_admission_knows_whether_a_model_fits_a_device_without_loading_it(model_dirs):
    info = check_model_for_device(model_dirs["cogvideox"], memory_bytes=80 * 10**9, dtype="bf16")
    assert info.weight_bytes(torch.bfloat16) * 2 == info.weight_bytes(torch.float32)
    with pytest.raises(ModelTooLargeError, match=r"cogvideox \(CogVideoXPipeline"):
        check_model_for_device(model_dirs["cogvideox"], memory_bytes=100 * 1024**2)


def test_registry_picks_builtin_named_and_path_models(model_dirs, isolated_home):
    assert isinstance(load_pipeline(), BuiltinPipeline)
    assert isinstance(load_pipeline("garrison-builtin-dit"), BuiltinPipeline)
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "models.json").write_text(json.dumps({"tiny-ltx": str(model_dirs["ltx"])}))
    assert named_models() == {"tiny-ltx": model_dirs["ltx"]}
    named = load_pipeline("tiny-ltx", device="cpu")
    assert isinstance(named, DiffusersPipeline) and named.model_name == "tiny-ltx"
    with pytest.raises(ModelDirError, match="unknown model 'nope'; known: garrison-builtin-dit, tiny-ltx"):
        load_pipeline("nope")
    with pytest.raises(ModelDirError, match="not both"):
        load_pipeline("tiny-ltx", model_dirs["ltx"])


def test_cli_generates_with_a_model_path(model_dirs, tmp_path, cpu_peak_cache):
    from garrison.cli.main import app

    cpu_peak_cache(fp32_flops=1e11, bf16_flops=1e11)  # the energy fields need the CPU's peak; skip measuring it
    out = tmp_path / "wan.mp4"
    args = ["generate", PROMPT, "--model-path", str(model_dirs["wan"]), "--steps", "2", "--seconds", "1"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["model"] == "wan" and record["flops"] > 0 and record["frames"] == 17 and record["fps"] == 16
    assert record["joules"] > 0 and record["provenance"]["c2pa"] == "signed"
    assert read_mp4(out).frames.shape == (17, 64, 64, 3)


def test_cli_refuses_a_bad_model_path_with_a_reason(tmp_path):
    from garrison.cli.main import app

    result = CliRunner().invoke(app, ["generate", PROMPT, "--model-path", str(tmp_path / "nowhere")])
    assert result.exit_code != 0 and "does not exist" in result.output

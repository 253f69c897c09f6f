import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from garrison.cli.main import app
from garrison.video.io import read_mp4

PROMPT = "a green square moving down on a gray background"
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_generate_writes_an_mp4_and_reports_the_contract_fields(tmp_path):
    out = tmp_path / "clip.mp4"
    result = run("generate", PROMPT, "--steps", "3", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    for field in (
        "path",
        "seconds",
        "flops",
        "model",
        "duration_s",
        "size",
        "native_size",
        "seed",
        "steps",
        "joules",
        "energy_source",
        "cost_usd",
        "co2_g",
        "efficiency_vs_limit",
    ):
        assert field in record, field
    clip = read_mp4(out)
    assert clip.frames.shape == (16, 64, 64, 3) and clip.fps == 8
    assert record["flops"] > 1e9 and record["seconds"] > 0
    assert record["joules"] > 0 and record["energy_source"] in ("estimate", "rapl", "nvml")
    assert record["efficiency_vs_limit"] >= 1.0  # nothing beats the hardware's peak FLOP per joule
    assert record["policy"]["decision"] == "allow" and record["provenance"]["c2pa"] == "signed"
    verified = run("verify", str(out), "--json")
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.stdout.strip().splitlines()[-1])
    # The watermark's detection rate on model output is measured in benchmarks/shield_watermark.py, not asserted
    # on one clip here: on 2 s 64x64 clips of the current checkpoint it was 8 of 10 (see the closing note).
    assert report["c2pa"] == "trusted"
    assert report["manifest"]["digital_source_type"] == "trainedAlgorithmicMedia"


def test_generate_pinned_to_one_core_is_metered_on_that_core(tmp_path, monkeypatch):
    # As `taskset -c 0 garrison generate ...` would be: its work can only land on core 0, so core 0 is metered.
    from garrison.hardware import devices
    from garrison.hardware.cpu import CLOCK_TICKS_PER_S, CpuPowerModel

    monkeypatch.setattr(devices, "pinned_cores", lambda: [0])
    # The estimate is the meter that core scoping applies to (RAPL and NVML meter the package or GPU): ask for it,
    # so a machine with those counters runs this test too.
    monkeypatch.setenv("GARRISON_METER", "estimate")
    result = run("generate", PROMPT, "--steps", "3", "--out", str(tmp_path / "c.mp4"), "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["energy_source"] == "estimate"
    assert record["chip"] == "cpu-core"
    p = CpuPowerModel.from_env()
    # one core's watts at most over the generation (plus a 10 ms tick), not the machine's
    assert record["joules"] <= p.active_w_per_core * (record["seconds"] + 0.05) + 2 * 3.9 / CLOCK_TICKS_PER_S
    assert record["efficiency_vs_limit"] >= 1.0


def test_a_refused_prompt_is_a_reason_and_no_file(tmp_path):
    out = tmp_path / "clip.mp4"
    result = run("generate", "Mickey Mouse waving at the crowd", "--out", str(out))
    assert result.exit_code == 1 and "copyright" in result.output
    assert not out.exists()


def test_batch_mode_writes_one_clip_and_one_json_line_per_prompt(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"# a comment\n{PROMPT}\n\na blue ball sliding up on a black backdrop\n")
    result = run("generate", "--prompts", str(prompts), "--out-dir", str(tmp_path / "clips"), "--steps", "2", "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(records) == 2
    assert sorted(p.name for p in (tmp_path / "clips").glob("*.mp4")) == sorted(
        p.split("/")[-1] for p in (r["path"] for r in records)
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", ""], "empty"),
        (["generate", "x" * 1001], "1001 characters"),
        (["generate", PROMPT, "--size", "100x100"], "not supported"),
        (["generate", PROMPT, "--size", "big"], "WIDTHxHEIGHT"),
        (["generate", PROMPT, "--seconds", "5"], "seconds must be one of"),
        (["generate", PROMPT, "--steps", "0"], "steps"),
        (["generate", PROMPT, "--steps", "1001"], "steps"),
        (["generate", PROMPT, "--out", "/nonexistent-dir/x.mp4"], "does not exist"),
        (["generate", PROMPT, "--checkpoint", "/nonexistent-ckpt"], "cannot load the model"),
        (["generate"], "give a PROMPT"),
        (["generate", "--prompts", "/nonexistent.txt", "--out-dir", "/tmp"], "does not exist"),
    ],
)
def test_bad_input_is_a_clear_message_and_a_nonzero_exit(args, message):
    result = run(*args)
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_a_corrupt_checkpoint_leaves_nothing_half_written(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{not json")
    out = tmp_path / "clip.mp4"
    result = run("generate", PROMPT, "--checkpoint", str(ckpt), "--out", str(out))
    assert result.exit_code != 0 and "corrupt" in result.output
    assert list(tmp_path.glob("*.mp4")) == [] and list(tmp_path.glob(".*")) == []


def test_the_console_script_is_installed_and_prints_help():
    result = subprocess.run([sys.executable, "-m", "garrison.cli.main", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "generate" in result.stdout


def test_train_checkpoints_resumes_and_writes_a_model_card(tmp_path):
    out = tmp_path / "run"
    first = run("train", "--steps", "2", "--batch-tokens", "256", "--out", str(out), "--eval-limit", "1", "--json")
    assert first.exit_code == 0, first.output
    card = json.loads(first.stdout.strip().splitlines()[-1])
    assert card["steps"] == 2 and card["machine"] and card["wall_s"] > 0
    assert set(card["faithfulness"]["sets"]) == {"template", "synonyms", "paraphrases"}
    assert (out / "model_card.md").read_text().startswith("# Model card")
    resumed = run(
        "train",
        "--steps",
        "3",
        "--batch-tokens",
        "256",
        "--out",
        str(out),
        "--eval-limit",
        "1",
        "--json",
        "--export",
        str(tmp_path / "export"),
    )
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["steps"] == 3
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        "config.json",
        "model.safetensors",
        "model_card.json",
        "model_card.md",
    ]


def test_train_takes_the_gpu_recipe_options_on_a_cpu(tmp_path):
    """The options of the lent-GPU recipe (clips rendered on the device, the clamp switched by wall time) also run
    on a CPU, so `garrison train` reproduces that recipe anywhere."""
    out = tmp_path / "run"
    args = ("train", "--steps", "2", "--batch-tokens", "256", "--out", str(out), "--eval-limit", "0", "--json")
    result = run(*args, "--render-on-device", "--late-from-minutes", "0")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())["train"]
    assert config["render_on_device"] is True and config["late_from_wall_s"] == 0
    assert config["late_from_step"] > 10**9  # the wall-time switch alone decides


def test_train_refuses_bad_settings():
    result = run("train", "--steps", "0")
    assert result.exit_code != 0 and "positive" in result.output
    result = run("train", "--late-from-minutes", "-1")
    assert result.exit_code != 0 and "late-from-minutes" in result.output
    result = run("train", "--device", "tpu")
    assert result.exit_code != 0 and "unknown device" in result.output


def test_eval_faithfulness_reports_every_set():
    result = run("eval", "faithfulness", "--limit", "1", "--steps", "2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["sets"]) == {"template", "synonyms", "paraphrases"}
    assert all(0 <= s["all"] <= 1 for s in report["sets"].values())

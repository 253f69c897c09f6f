import json
from pathlib import Path

import pytest
import torch

from garrison.video.models.dit import DiTConfig
from garrison.video.training.checkpoint import CheckpointError, load_model
from garrison.video.training.train import TrainConfig, train

TINY = DiTConfig(width=32, depth=1, heads=2)


def tiny_config(out: Path, steps: int) -> TrainConfig:
    return TrainConfig(
        out_dir=str(out),
        steps=steps,
        batch_tokens=512,
        warmup_steps=2,
        checkpoint_every=2,
        log_every=1,
        model=TINY,
        bf16=False,
    )


def test_training_lowers_the_loss_and_writes_a_loadable_checkpoint(tmp_path):
    summary = train(tiny_config(tmp_path, 30), resume=False)
    losses = [entry["loss"] for entry in summary["log"]]
    assert summary["steps"] == 30 and len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    model, config = load_model(tmp_path)
    assert config["trained_steps"] == 30 and model.cfg.width == 32
    assert [json.loads(line)["step"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()] == list(
        range(1, 31)
    )


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(tiny_config(straight, 6), resume=False)
    train(tiny_config(resumed, 4), resume=False)
    summary = train(tiny_config(resumed, 6), resume=True)
    assert summary["steps"] == 6
    a, _ = load_model(straight)
    b, _ = load_model(resumed)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6), name


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    train(tiny_config(tmp_path, 2), resume=False)
    (tmp_path / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path)
    (tmp_path / "train_state.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        train(tiny_config(tmp_path, 4), resume=True)
    with pytest.raises(CheckpointError, match="missing"):
        load_model(tmp_path / "nowhere")


def test_a_wall_time_budget_stops_with_a_checkpoint_and_a_resume_goes_on(tmp_path):
    cfg = tiny_config(tmp_path, 50)
    cfg.max_wall_s = 1e-9  # spent after the first step
    summary = train(cfg, resume=False)
    assert summary["steps"] == 1
    _, config = load_model(tmp_path)
    assert config["trained_steps"] == 1  # the step it stopped at was saved, not only the last periodic checkpoint
    cfg.max_wall_s = None
    cfg.steps = 3
    assert train(cfg, resume=True)["steps"] == 3


def test_the_velocity_clamp_rises_from_the_late_step_on():
    from garrison.video.training.train import velocity_clamp

    cfg = TrainConfig(min_t_for_velocity=0.05, min_t_for_velocity_late=0.5, late_from_step=10)
    assert velocity_clamp(cfg, 9) == 0.05 and velocity_clamp(cfg, 10) == 0.5
    cfg.late_from_wall_s = 60.0  # a time-budgeted run switches by wall time, or by step, whichever comes first
    assert velocity_clamp(cfg, 3, wall_s=59.0) == 0.05 and velocity_clamp(cfg, 3, wall_s=60.0) == 0.5
    cfg.min_t_for_velocity_late = None
    assert velocity_clamp(cfg, 10_000, wall_s=1e6) == 0.05


def test_the_learning_rate_warms_up_holds_and_cools_down_to_zero():
    from garrison.video.training.train import learning_rate

    cfg = TrainConfig(steps=1000, lr=1e-3, warmup_steps=10, cooldown_steps=100)
    assert learning_rate(cfg, 0) == pytest.approx(1e-4)
    assert learning_rate(cfg, 500) == pytest.approx(1e-3)
    assert learning_rate(cfg, 950) == pytest.approx(0.5e-3)
    assert learning_rate(cfg, 999) == pytest.approx(1e-5)
    short = TrainConfig(steps=30, lr=1e-3, warmup_steps=1, cooldown_steps=100)
    assert learning_rate(short, 29) == pytest.approx(1e-3)  # too short for a cool-down


def test_rendering_on_the_training_device_trains_the_same_model(tmp_path):
    """render_torch reproduces world.render bit for bit on a CPU, so the two data paths give the same weights."""
    on_host, on_device = tmp_path / "host", tmp_path / "device"
    train(tiny_config(on_host, 4), resume=False)
    cfg = tiny_config(on_device, 4)
    cfg.render_on_device = True
    train(cfg, resume=False)
    a, _ = load_model(on_host)
    b, _ = load_model(on_device)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_a_stop_point_pauses_the_schedule_and_a_resume_continues_it(tmp_path):
    """stop_at_wall_s ends a piece of a run; unlike max_wall_s it leaves the learning-rate schedule where it was."""
    straight, paused = tmp_path / "straight", tmp_path / "paused"
    train(tiny_config(straight, 6), resume=False)
    cfg = tiny_config(paused, 6)
    cfg.stop_at_wall_s = 1e-9  # reached after the first step
    assert train(cfg, resume=False)["steps"] == 1
    cfg.stop_at_wall_s = None
    assert train(cfg, resume=True)["steps"] == 6
    a, _ = load_model(straight)
    b, _ = load_model(paused)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6), name

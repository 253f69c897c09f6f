"""Training loop of the built-in model: rectified flow with x-prediction, CFG dropout, EMA, bf16 autocast.

Clips stream from the procedural world (no data set on disk). The loop checkpoints every `checkpoint_every`
steps and at the end; `resume=True` continues from the folder's train state, bit for bit where the hardware is
deterministic. When the last step is reached it evaluates faithfulness and writes the model card.
"""

from __future__ import annotations

import json
import platform
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from garrison.hardware.cpu import bf16_is_fast
from garrison.video.data.stream import Batch, BatchPlan, render_batch, stream_plans
from garrison.video.models.dit import DiTConfig, SpacetimeDiT
from garrison.video.models.text_encoder import TextEncoder
from garrison.video.training.checkpoint import load_model, load_train_state, save_train_state, save_weights


class BatchRenderer:
    """Rendered batches in plan order; with `workers` > 0, rendered ahead by a process pool.

    The pool is bounded to `2 * workers` batches in flight (Pool.imap would drain the endless plan stream), and
    uses `spawn`, so its processes never inherit the parent's CUDA context.
    """

    def __init__(self, plans: Iterator[BatchPlan], workers: int = 0) -> None:
        self.plans = plans
        self.pool = None
        self.pending: deque[Any] = deque()
        if workers > 0:
            import multiprocessing

            self.pool = multiprocessing.get_context("spawn").Pool(workers)
            for _ in range(2 * workers):
                self.pending.append(self.pool.apply_async(render_batch, (next(self.plans),)))

    def __iter__(self) -> BatchRenderer:
        return self

    def __next__(self) -> Batch:
        if self.pool is None:
            return render_batch(next(self.plans))
        batch = self.pending.popleft().get()
        self.pending.append(self.pool.apply_async(render_batch, (next(self.plans),)))
        return batch

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


@dataclass
class TrainConfig:
    """Defaults are the CPU recipe (scripts/gpu/train_cuda.py sets the GPU one that trained the shipped checkpoint)."""

    out_dir: str = "runs/builtin"
    steps: int = 6600
    batch_tokens: int = 2048  # 32 two-second square clips, or three twelve-second landscape clips
    max_batch: int = 32  # clips a batch holds at most, however short they are
    lr: float = 5e-4
    warmup_steps: int = 200
    cooldown_steps: int = 600  # lr falls linearly to 0 over the last this many steps (warmup-stable-decay)
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    cfg_dropout: float = 0.1  # share of captions replaced by "" so the model learns the unconditional flow
    noise_shift: float = 3.0  # t = shift*u / (1 + (shift-1)*u), u logit-normal: more weight on high noise
    min_t_for_velocity: float = 0.05  # clamp in v = (x_t - x0) / t, as in JiT
    # From `late_from_step` on the clamp rises to this. The velocity loss of an x-predicting model weighs an error
    # by 1/t^2, so with the 0.05 clamp low-noise edges dominate (up to 400x); the shipped run's first phase learned
    # colour and background but ignored shape and motion words, which only the high-noise steps decide.
    min_t_for_velocity_late: float | None = 0.5
    late_from_step: int = 3800
    # The same switch by training wall time, for a run that a time budget ends (whichever comes first applies).
    late_from_wall_s: float | None = None
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    log_every: int = 25
    seed: int = 0
    device: str = "auto"
    # bf16 autocast; None: where the device runs bf16 at least as fast as fp32 (hardware.cpu.bf16_is_fast: an
    # AVX2-only CPU emulates it, 15x slower a step)
    bf16: bool | None = None
    eval_prompts_per_set: int = 64
    max_wall_s: float | None = None  # stop (and checkpoint) once the run's training wall time reaches this
    # With a wall-time budget the step count is unknown ahead, so the cool-down can also be in seconds: lr falls
    # linearly to 0 over the budget's last `cooldown_wall_s` (whichever of the two cool-downs is lower wins).
    cooldown_wall_s: float | None = None
    # Stop (and checkpoint) at this wall time without ending the schedule: a resumed run with a later
    # `stop_at_wall_s` goes on as if it had not stopped (a lent device's time arrives in pieces).
    stop_at_wall_s: float | None = None
    render_workers: int = 0  # processes that render clips ahead of the loop (0: render in the loop, as on a CPU)
    # Optimizer steps per rendered batch, each with fresh noise and t ("data echoing", Choi et al. 2019): where
    # rendering, not the device, limits the rate (a GPU), a clip is worth more than one noise draw.
    echo: int = 1
    # Render each batch with torch on the training device (render_torch.py) instead of in CPU processes: on a GPU
    # the CPU renderers, not the GPU, limited the rate.
    render_on_device: bool = False
    init_from: str | None = None  # start a fresh run from this checkpoint's weights (fine-tuning), not from random
    model: DiTConfig = field(default_factory=DiTConfig)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads (CPU)"


def flow_matching_loss(
    model: SpacetimeDiT,
    x0: torch.Tensor,
    text_states: torch.Tensor,
    text_mask: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator | None = None,
    min_t: float | None = None,
) -> torch.Tensor:
    """Velocity loss of an x-predicting model: v_hat = (x_t - x0_hat) / t against v = noise - x0."""
    b = x0.shape[0]
    u = torch.sigmoid(torch.randn(b, generator=generator, device=x0.device))
    t = cfg.noise_shift * u / (1 + (cfg.noise_shift - 1) * u)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    tt = t.view(b, 1, 1, 1, 1)
    xt = (1 - tt) * x0 + tt * noise
    x0_hat = model(xt, t, text_states, text_mask).float()
    v_hat = (xt - x0_hat) / tt.clamp(min=cfg.min_t_for_velocity if min_t is None else min_t)
    return torch.mean((v_hat - (noise - x0)) ** 2)


def learning_rate(cfg: TrainConfig, step: int, wall_s: float = 0.0) -> float:
    """Warm-up, constant, then a linear cool-down to 0 over the last `cooldown_steps` (only in runs long enough
    for it: a short throughput job keeps the constant rate), or over the wall-time budget's last `cooldown_wall_s`."""
    lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
    if cfg.cooldown_steps > 0 and cfg.steps > 2 * cfg.cooldown_steps:
        lr *= min(1.0, (cfg.steps - step) / cfg.cooldown_steps)
    if cfg.max_wall_s is not None and cfg.cooldown_wall_s:
        lr *= min(1.0, max(0.0, cfg.max_wall_s - wall_s) / cfg.cooldown_wall_s)
    return lr


def velocity_clamp(cfg: TrainConfig, step: int, wall_s: float = 0.0) -> float:
    """The smallest t the velocity loss divides by at `step` (0-based), `wall_s` into the run."""
    late = step >= cfg.late_from_step or (cfg.late_from_wall_s is not None and wall_s >= cfg.late_from_wall_s)
    if cfg.min_t_for_velocity_late is not None and late:
        return cfg.min_t_for_velocity_late
    return cfg.min_t_for_velocity


def frames_to_tensor(frames: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float (B, 3, T, H, W) in [-1, 1]."""
    x = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(frames)
    x = x.to(device).permute(0, 4, 1, 2, 3).float()
    return x / 127.5 - 1.0


def train(cfg: TrainConfig, resume: bool = True, on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train to `cfg.steps`; returns the summary that also goes into the model card."""
    device = pick_device(cfg.device)
    if cfg.bf16 is None:
        cfg = replace(cfg, bf16=bf16_is_fast(device.type))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = SpacetimeDiT(cfg.model).to(device)
    ema = SpacetimeDiT(cfg.model).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.lr,
        betas=(0.9, 0.99),
        weight_decay=cfg.weight_decay,
        fused=device.type == "cuda",  # one kernel for all parameters: a 10 M model's step is launch-bound
    )
    step, wall_s, log, clips_seen = 0, 0.0, [], 0
    state = load_train_state(out) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        step, wall_s, log = state["step"], state["wall_s"], state["log"]
        clips_seen = state.get("clips_seen", 0)
        torch.set_rng_state(state["torch_rng"])

    elif cfg.init_from:
        init, _ = load_model(Path(cfg.init_from))
        if init.cfg != cfg.model:
            raise ValueError(f"--init-from {cfg.init_from} has another architecture than this run: {init.cfg}")
        model.load_state_dict(init.state_dict())
        ema.load_state_dict(init.state_dict())

    text_encoder = TextEncoder(device)
    echo = max(1, cfg.echo)
    plans = stream_plans(cfg.seed, cfg.batch_tokens, cfg.max_batch, cfg.model.patch_t, cfg.model.patch_hw)
    for _ in range(-(-step // echo)):  # replay the data stream to where the run stopped, without rendering
        next(plans)
    batches: Iterator[Batch]
    if cfg.render_on_device:
        from garrison.video.data.render_torch import render_clips

        batches = (
            Batch(render_clips(p.params, device), p.captions, p.seconds, p.aspect)
            for p in plans  # type: ignore[arg-type]
        )
    else:
        batches = BatchRenderer(plans, cfg.render_workers)

    def save(step_now: int) -> None:
        save_train_state(
            out,
            {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step_now,
                "wall_s": wall_s,
                "log": log,
                "clips_seen": clips_seen,
                "torch_rng": torch.get_rng_state(),
                "config": asdict(cfg),
            },
        )
        save_weights(out, ema, {"trained_steps": step_now, "train": _jsonable(asdict(cfg))})

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    model.train()
    t_last = time.perf_counter()
    # On CUDA the loss stays on the device between log points: reading it every step would make the CPU wait for
    # the GPU, and the CPU's kernel launches would no longer overlap the GPU's work. `on_step` then sees the last
    # logged mean.
    sync_every_step = device.type != "cuda"
    loss_acc: torch.Tensor | float = 0.0
    loss_value, n_acc = float("nan"), 0
    batch = None
    ema_params, model_params = list(ema.parameters()), list(model.parameters())
    while step < cfg.steps:
        fresh = batch is None or step % echo == 0
        if fresh:
            batch = next(batches)
        # CFG dropout drawn from a per-step seed, so a resumed run drops exactly the captions a straight one would
        caption_rng = random.Random(cfg.seed * 1_000_003 + step)
        captions = ["" if caption_rng.random() < cfg.cfg_dropout else c for c in batch.captions]
        text_states, text_mask = text_encoder.encode(captions)
        x0 = frames_to_tensor(batch.frames, device)
        lr = learning_rate(cfg, step, wall_s)
        for g in opt.param_groups:
            g["lr"] = lr
        with autocast:
            loss = flow_matching_loss(model, x0, text_states, text_mask, cfg, min_t=velocity_clamp(cfg, step, wall_s))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, model_params, 1 - decay)
        step += 1
        clips_seen += len(batch.captions) if fresh else 0
        now = time.perf_counter()
        wall_s += now - t_last
        t_last = now
        if sync_every_step:
            loss_value = loss.detach().item()
            loss_acc = loss_acc + loss_value
        else:
            loss_acc = loss_acc + loss.detach()
        n_acc += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            mean_loss = float(loss_acc) / n_acc
            loss_value = loss_value if sync_every_step else mean_loss
            log.append({"step": step, "loss": mean_loss, "wall_s": round(wall_s, 1), "lr": lr})
            loss_acc, n_acc = 0.0, 0
            with (out / "train_log.jsonl").open("a") as f:
                f.write(json.dumps(log[-1]) + "\n")
        if on_step is not None:
            on_step(step, loss_value)
        out_of_time = any(limit is not None and wall_s >= limit for limit in (cfg.max_wall_s, cfg.stop_at_wall_s))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
            save(step)
        if out_of_time:
            break
    if isinstance(batches, BatchRenderer):
        batches.close()
    if step == 0:
        save(0)
    return {
        "steps": step,
        "clips_seen": clips_seen,
        "wall_s": wall_s,
        "device": str(device),
        "machine": machine_description(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "bf16": cfg.bf16,  # as resolved for this device
        "log": log,
    }


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))

"""Model card of a training run: data, recipe, steps, wall time, machine, loss and final faithfulness.

Written as `model_card.md` (for people) and `model_card.json` (for tools) into the run folder once the last step
is reached; `export` copies the shippable files (weights, config, card) to another folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from garrison.core.types import VideoSpec
from garrison.video.data.stream import DURATION_WEIGHTS, stream_plans
from garrison.video.data.world import ASPECTS, caption_mix_text
from garrison.video.pipelines.builtin import BuiltinPipeline
from garrison.video.training.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from garrison.video.training.train import TrainConfig

CARD_MD, CARD_JSON = "model_card.md", "model_card.json"


def run_faithfulness(
    pipeline: BuiltinPipeline,
    limit: int | None,
    steps: int,
    guidance: float,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Generate the public prompt sets with `pipeline` and judge them; returns the report as a dict."""
    from garrison.video.evaluate.faithfulness import evaluate, load_prompt_sets

    def generate(prompt: str, seconds: int, width: int, height: int, clip_seed: int) -> Any:
        return pipeline(VideoSpec(prompt, seconds, width, height, steps, guidance, clip_seed)).clip.frames

    report = evaluate(generate, load_prompt_sets(), limit_per_set=limit, seed=seed, progress=progress)
    return {
        "all_four": report.all_four,
        "sets": {
            name: {"n": r.n, **r.accuracy, "all": r.all_four, "by_assignment": r.by_assignment}
            for name, r in report.sets.items()
        },
        "failures": report.failures,
    }


def clips_seen(cfg: TrainConfig, steps: int) -> int:
    """Clips the run trained on, replayed from the deterministic data stream (plans only, nothing rendered)."""
    plans = stream_plans(cfg.seed, cfg.batch_tokens, cfg.max_batch, cfg.model.patch_t, cfg.model.patch_hw)
    batches = -(-steps // max(1, cfg.echo))  # with data echoing a batch serves `echo` steps
    return sum(len(next(plans).params) for _ in range(batches))


def finish_run(
    cfg: TrainConfig, summary: dict[str, Any], eval_limit: int | None = 48, export: Path | None = None
) -> dict[str, Any]:
    """Evaluate the run's EMA weights and write the model card; returns the card as a dict."""
    from garrison.video.pipelines.builtin import DEFAULT_GUIDANCE, DEFAULT_STEPS

    out = Path(cfg.out_dir)
    pipeline = BuiltinPipeline.load(out)
    faithfulness = run_faithfulness(pipeline, eval_limit, DEFAULT_STEPS, DEFAULT_GUIDANCE, seed=0)
    log = summary["log"]
    card = {
        "model": "garrison-builtin-dit",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "steps": summary["steps"],
        "wall_s": round(summary["wall_s"], 1),
        "machine": summary["machine"],
        "device": summary["device"],
        "parameters": sum(p.numel() for p in pipeline.model.parameters()),
        "data": {
            "source": "procedural clip world (shared/specs/clips.json), streamed; no data set on disk",
            "durations_s_weights": DURATION_WEIGHTS,
            "aspects": {k: f"{w}x{h}" for k, (w, h) in ASPECTS.items()},
            "batch_tokens": cfg.batch_tokens,
            "captions": f"{caption_mix_text()}; {cfg.cfg_dropout:.0%} dropped for CFG",
            "clips_seen": clips_seen(cfg, summary["steps"]),
        },
        "recipe": json.loads(json.dumps(asdict(cfg), default=str)),
        "final_loss": log[-1]["loss"] if log else None,
        "faithfulness": {
            "steps": DEFAULT_STEPS,
            "guidance": DEFAULT_GUIDANCE,
            "prompts_per_set": eval_limit,
            **{k: v for k, v in faithfulness.items() if k != "failures"},
        },
        "reproduce": f"garrison train --steps {summary['steps']} --seed {cfg.seed} --out {cfg.out_dir}"
        + (f" --threads {threads}" if (threads := summary.get("threads")) else ""),
    }
    (out / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n")
    (out / CARD_MD).write_text(render_markdown(card))
    if export is not None:
        export.mkdir(parents=True, exist_ok=True)
        for name in (WEIGHTS_FILE, CONFIG_FILE, CARD_JSON, CARD_MD):
            shutil.copy2(out / name, export / name)
    return card


def late_clamp(recipe: dict[str, Any]) -> str:
    late = recipe.get("min_t_for_velocity_late")
    if late is None:
        return ""
    wall_s = recipe.get("late_from_wall_s")
    if wall_s not in (None, "None") and int(recipe["late_from_step"]) >= 10**9:  # switched by wall time alone
        return f" (at {late} from {float(wall_s):.0f} s of training on)"
    return f" (at {late} from step {recipe['late_from_step']} on)"


def cooldown(recipe: dict[str, Any]) -> str:
    if recipe.get("max_wall_s") and recipe.get("cooldown_wall_s"):  # a wall-time budget: the cool-down is in seconds
        return f"{float(recipe['cooldown_wall_s']):.0f} s of the {float(recipe['max_wall_s']):.0f} s budget"
    return f"{recipe.get('cooldown_steps', 0)} steps"


def cpu_recipe(card: dict[str, Any]) -> str:
    """The CPU recipe's own result, for a checkpoint that a GPU produced (anyone without one can still train)."""
    cpu = card.get("cpu_recipe")
    if not cpu:
        return ""
    sets = ", ".join(f"{name} {value:.2f}" for name, value in cpu["all_four"].items())
    return f"""## CPU recipe
Without a GPU: `{cpu["reproduce"]}` ({cpu["steps"]} steps, {cpu["wall_s"] / 60:.0f} min on {cpu["machine"]},
{cpu["date"]}) reaches all four attributes right on {sets} ({cpu["judged"]}).

"""


def cli_line(card: dict[str, Any]) -> str:
    stages = card.get("lineage") or []
    command = stages[0].get("garrison_train") if len(stages) == 1 else None
    return f", or with the CLI: `{command}`" if command else ""


def render_lineage(card: dict[str, Any]) -> str:
    """The stages behind a checkpoint that was trained in more than one run (a CPU run, then GPU fine-tunes)."""
    stages = card.get("lineage")
    if not stages or len(stages) < 2:  # one run: the Training section says it all
        return ""
    rows = "\n".join(
        f"| {i} | {st['what']} | {st['steps']} | {st['clips_seen']} | {st['wall_s'] / 60:.1f} min | {st['machine']} |"
        f" `{st['reproduce']}` |"
        for i, st in enumerate(stages, 1)
    )
    total_s = sum(st["wall_s"] for st in stages)
    return f"""## Lineage
The shipped weights come from {len(stages)} runs, each starting from the one before ({total_s / 60:.1f} min in all).
The Training section above describes the last.

| stage | what | steps | clips | wall | machine | reproduce |
|---|---|---|---|---|---|---|
{rows}

"""


def render_markdown(card: dict[str, Any]) -> str:
    f = card["faithfulness"]
    rows = "\n".join(
        f"| {name} | {s['n']} | {s['color']:.3f} | {s['shape']:.3f} | {s['motion']:.3f} | {s['background']:.3f} "
        f"| **{s['all']:.3f}** |"
        for name, s in f["sets"].items()
    )
    r = card["recipe"]
    m = r["model"]
    patch = f"{m['patch_t']} frames x {m['patch_hw']} x {m['patch_hw']} px"
    return f"""# Model card: {card["model"]}

A {card["parameters"] / 1e6:.1f} M-parameter diffusion transformer over spacetime patches ({patch}),
in pixel space, conditioned on all-MiniLM-L6-v2 token states, trained with rectified flow (x-prediction,
velocity loss) and classifier-free guidance. One model renders 2, 4, 8 and 12 s clips at 8 fps in
64x64, 112x64 and 64x112.

## Training
- Steps: {card["steps"]}, wall time {card["wall_s"] / 60:.1f} min on {card["machine"]} ({card["date"]}).
- Data: {card["data"]["source"]}. Durations weighted {card["data"]["durations_s_weights"]}, aspects uniform,
  {card["data"]["batch_tokens"]} tokens (at most {r["max_batch"]} clips) per batch. Captions: {card["data"]["captions"]}.
- Recipe: AdamW lr {r["lr"]} (warm-up {r["warmup_steps"]} steps, constant, then a linear cool-down to 0 over the
  last {cooldown(r)}), EMA {r["ema_decay"]},
  noise shift {r["noise_shift"]}, velocity loss with t clamped at {r["min_t_for_velocity"]}{late_clamp(r)},
  bf16 autocast {r["bf16"]}, seed {r["seed"]}. Final training loss
  {card["final_loss"]:.4f}.
- Reproduce: `{card["reproduce"]}`{cli_line(card)}.

{cpu_recipe(card)}{render_lineage(card)}## Faithfulness
Judged by `garrison eval faithfulness` (analytic detector, no learning) at {f["steps"]} steps, guidance
{f["guidance"]}, {f["prompts_per_set"] or "all"} prompts per set, every duration and aspect ratio included.

| set | n | colour | shape | motion | background | all four |
|---|---|---|---|---|---|---|
{rows}

## Limits
The model knows one world: one solid shape (circle, square, triangle) of eight colours moving left, right, up
or down over one of four plain backgrounds. Anything else in a prompt is ignored or rendered as the nearest
thing in that world.
"""

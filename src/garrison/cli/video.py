"""`garrison generate`, `garrison train` and `garrison eval faithfulness`: the built-in engine from the shell."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from garrison.cli.common import err_console, fail, print_json
from garrison.core.types import InvalidSpecError, VideoSpec
from garrison.video.pipelines.builtin import DEFAULT_GUIDANCE, DEFAULT_STEPS, BuiltinPipeline, check_spec
from garrison.video.training.checkpoint import CheckpointError

eval_app = typer.Typer(help="Evaluate models and policies against the sets shipped in the repo.", no_args_is_help=True)


@contextmanager
def progress_bar(enabled: bool = True) -> Any:
    """A rich progress bar on stderr (stdout stays clean for --json); silent when stderr is not a terminal."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not enabled or not err_console.is_terminal,
    ) as progress:
        yield progress


def parse_size(size: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", size)
    if not m:
        raise InvalidSpecError(f"size must look like WIDTHxHEIGHT (e.g. 64x64), got {size!r}")
    return int(m.group(1)), int(m.group(2))


def read_prompt_file(path: Path) -> list[str]:
    """One prompt a line; blank lines and lines starting with # are skipped."""
    if not path.is_file():
        raise InvalidSpecError(f"prompt file {path} does not exist")
    prompts = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise InvalidSpecError(f"prompt file {path} has no prompts")
    return prompts


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "clip"


@dataclass
class _Job:
    spec: VideoSpec
    out: Path


def _load_pipeline(checkpoint: Path | None) -> BuiltinPipeline:
    try:
        return BuiltinPipeline.load(checkpoint)
    except CheckpointError as e:
        fail(f"cannot load the model: {e}")


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")

    @app.command()
    def generate(
        prompt: str = typer.Argument(None, help="What the video shows."),
        seed: int = typer.Option(0, help="Same seed, same clip."),
        steps: int = typer.Option(DEFAULT_STEPS, help="Denoising steps (1..1000)."),
        seconds: int = typer.Option(2, help="Clip duration: 2, 4, 8 or 12."),
        size: str = typer.Option("64x64", help="WIDTHxHEIGHT: 64x64, 112x64, 64x112 native; 1280x720 etc. scaled."),
        guidance: float = typer.Option(DEFAULT_GUIDANCE, help="Classifier-free guidance scale (1 = off)."),
        out: Path = typer.Option(None, help="Output MP4 (default: out/<slug>.mp4)."),
        prompts: Path = typer.Option(None, help="Batch mode: a file with one prompt a line."),
        out_dir: Path = typer.Option(None, help="Batch mode: folder for the MP4s."),
        checkpoint: Path = typer.Option(None, help="Checkpoint folder (default: the one shipped in the package)."),
        model: str = typer.Option(None, help="A named model ($GARRISON_HOME/models.json); default: the built-in."),
        model_path: Path = typer.Option(None, help="A diffusers folder (Wan 2.1, LTX-Video, CogVideoX) to run."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object per clip."),
    ) -> None:
        """Generate video from text with the built-in model or an open diffusers model, as H.264 MP4."""
        from garrison.video.io import VideoIOError, check_writable, write_mp4
        from garrison.video.pipelines.registry import check_spec_for, load_pipeline

        pipeline = None
        if model is not None or model_path is not None:  # an open model: its folder is checked before any work
            try:
                pipeline = load_pipeline(model, model_path)
            except CheckpointError as e:
                fail(f"cannot load the model: {e}")
        try:
            width, height = parse_size(size)
            if prompts is not None:
                if prompt is not None:
                    raise InvalidSpecError("give either a PROMPT or --prompts FILE, not both")
                if out_dir is None:
                    raise InvalidSpecError("--prompts needs --out-dir")
                out_dir.mkdir(parents=True, exist_ok=True)
                texts = read_prompt_file(prompts)
                jobs = [
                    _Job(
                        VideoSpec(p, seconds, width, height, steps, guidance, seed), out_dir / f"{i:04d}-{slug(p)}.mp4"
                    )
                    for i, p in enumerate(texts)
                ]
            else:
                if prompt is None:
                    raise InvalidSpecError("give a PROMPT (or --prompts FILE --out-dir DIR)")
                target = out or Path("out") / f"{slug(prompt)}.mp4"
                if out is None:
                    target.parent.mkdir(parents=True, exist_ok=True)
                jobs = [_Job(VideoSpec(prompt, seconds, width, height, steps, guidance, seed), target)]
            for job in jobs:  # refuse bad input before any work starts
                if pipeline is None:
                    check_spec(job.spec)
                else:
                    check_spec_for(pipeline, job.spec)
                check_writable(job.out)
        except (InvalidSpecError, VideoIOError, OSError) as e:
            fail(str(e))

        from garrison.energy.meters import get_meter
        from garrison.energy.report import energy_fields
        from garrison.hardware.devices import cpu_device, cpu_scope_device, pinned_cores
        from garrison.shield.verify import protect, screen_prompt, sign_and_register

        decisions = [screen_prompt(job.spec.prompt) for job in jobs]  # audited by the shield
        if len(jobs) == 1 and decisions[0].decision == "refuse":
            d = decisions[0]
            fail(f"prompt refused by policy ({d.category}: {d.reason}; matched {d.matched!r})", code=1)

        if pipeline is None:
            pipeline = _load_pipeline(checkpoint)
        # the built-in pipeline runs on the CPU; a diffusers model says where it runs. On the CPU, a process pinned
        # to some cores (taskset) is metered on those alone, as a serving worker on its core slot is.
        device = pipeline.energy_device() if hasattr(pipeline, "energy_device") else cpu_device()
        cores = pinned_cores() if device.kind == "cpu" else None
        meter = get_meter(cores=cores)
        if cores is not None and meter.source == "estimate":  # a RAPL figure stays the package's: so does its device
            device = cpu_scope_device(cores)
        with progress_bar(not as_json) as progress:
            for n, (job, decision) in enumerate(zip(jobs, decisions, strict=True)):
                if decision.decision == "refuse":  # batch mode: report it and go on with the others
                    print_json({"path": None, "prompt": job.spec.prompt, "policy": decision.to_dict()})
                    continue
                task = progress.add_task(job.spec.prompt[:40], total=job.spec.steps)
                meter.begin_window(f"generate-{n}")
                result = pipeline(job.spec, lambda i, n, task=task: progress.update(task, completed=i))
                measurement = meter.end_window(f"generate-{n}")
                request_id = f"gen_{uuid.uuid4().hex}"
                protected = protect(result.clip.frames, result.clip.fps, job.spec.prompt, result.model, request_id)
                result.clip.frames = protected.frames
                try:
                    write_mp4(result.clip, job.out)
                    provenance = sign_and_register(job.out, protected)
                except (VideoIOError, OSError) as e:
                    job.out.unlink(missing_ok=True)
                    fail(f"cannot write {job.out}: {e}")
                record = {
                    "path": str(job.out),
                    "prompt": job.spec.prompt,
                    "model": result.model,
                    "seed": job.spec.seed,
                    "steps": job.spec.steps,
                    "guidance": job.spec.guidance,
                    "duration_s": job.spec.seconds,
                    "size": job.spec.size,
                    "native_size": result.native_size,
                    "scaled": result.scaled,
                    "frames": result.clip.num_frames,
                    "fps": result.clip.fps,
                    "flops": result.flops,
                    "policy": decision.to_dict(),
                    "provenance": provenance,
                    **energy_fields(measurement, result.flops, device, dtype="bf16" if pipeline.bf16 else "fp32"),
                    "seconds": round(result.wall_s, 4),
                }
                if as_json:
                    print_json(record)
                else:
                    err_console.print(
                        f"wrote [bold]{job.out}[/] ({record['frames']} frames {record['size']}, "
                        f"{record['seconds']:.2f} s, {record['flops'] / 1e9:.1f} GFLOP, "
                        f"{record['joules']:.1f} J {record['energy_source']})",
                        highlight=False,
                    )

    @app.command()
    def train(
        steps: int = typer.Option(None, help="Total optimizer steps (default: the shipped recipe)."),
        out: Path = typer.Option(Path("runs/builtin"), help="Run folder: checkpoints, log, model card."),
        resume: bool = typer.Option(True, help="Continue from the run folder's last checkpoint."),
        device: str = typer.Option("auto", help="auto, cpu or cuda."),
        batch_tokens: int = typer.Option(None, help="Tokens per batch (default: the shipped recipe)."),
        lr: float = typer.Option(None, help="Peak learning rate (default: the shipped recipe)."),
        seed: int = typer.Option(0, help="Seed of the data stream and the initial weights."),
        max_minutes: float = typer.Option(
            None, help="Stop (and checkpoint) once training has taken this long; resume later to go on."
        ),
        eval_limit: int = typer.Option(48, help="Prompts per set for the final faithfulness evaluation."),
        export: Path = typer.Option(None, help="Also copy weights, config and model card to this folder."),
        threads: int = typer.Option(None, help="CPU threads for torch (default: torch's choice)."),
        metrics: Path = typer.Option(
            None, help="Append one JSON line per step (step, clips, wall_s, unix_s): how a scheduler reads throughput."
        ),
        max_batch: int = typer.Option(None, help="Clips a batch holds at most (default: the shipped recipe)."),
        render_workers: int = typer.Option(0, help="Processes rendering clips ahead of the loop (a GPU needs them)."),
        echo: int = typer.Option(1, help="Optimizer steps per rendered batch, each with fresh noise (data echoing)."),
        init_from: Path = typer.Option(None, help="Start a new run from this checkpoint's weights (fine-tuning)."),
        late_from_step: int = typer.Option(None, help="Step from which the velocity loss's t clamp is 0.5."),
        late_from_minutes: float = typer.Option(
            None,
            help="Training minutes from which the t clamp is 0.5 (for a time-budgeted run; alone, no step switch).",
        ),
        render_on_device: bool = typer.Option(
            False, help="Render the training clips with torch on the training device (on a GPU: no CPU renderers)."
        ),
        cooldown_minutes: float = typer.Option(
            None, help="With --max-minutes: lr falls linearly to 0 over the budget's last this many minutes."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Train the built-in model on streamed procedural clips; checkpoints, resumes, writes a model card."""
        from garrison.video.training.model_card import finish_run
        from garrison.video.training.train import TrainConfig
        from garrison.video.training.train import train as run_training

        cfg = TrainConfig(out_dir=str(out), seed=seed, device=device)
        if steps is not None:
            cfg.steps = steps
        if batch_tokens is not None:
            cfg.batch_tokens = batch_tokens
        if lr is not None:
            cfg.lr = lr
        if max_batch is not None:
            cfg.max_batch = max_batch
        if late_from_step is not None:
            cfg.late_from_step = late_from_step
        if late_from_minutes is not None:
            if late_from_minutes < 0:
                fail("late-from-minutes must be >= 0")
            cfg.late_from_wall_s = late_from_minutes * 60
            if late_from_step is None:
                cfg.late_from_step = 2**62  # the wall-time switch alone decides
        cfg.render_workers, cfg.echo, cfg.render_on_device = render_workers, echo, render_on_device
        if cfg.steps < 1 or cfg.batch_tokens < 1 or cfg.lr <= 0 or cfg.max_batch < 1 or echo < 1:
            fail("steps, batch-tokens, max-batch, echo and lr must be positive")
        if render_workers < 0 or cfg.late_from_step < 0:
            fail("render-workers and late-from-step must be >= 0")
        if init_from is not None:
            if not (init_from / "config.json").is_file():
                fail(f"--init-from {init_from}: not a checkpoint folder (no config.json)")
            cfg.init_from = str(init_from)
        if cooldown_minutes is not None:
            if max_minutes is None or cooldown_minutes <= 0:
                fail("--cooldown-minutes needs --max-minutes and must be positive")
            cfg.cooldown_wall_s = cooldown_minutes * 60
        if max_minutes is not None:
            if max_minutes <= 0:
                fail("max-minutes must be positive")
            cfg.max_wall_s = max_minutes * 60
        if eval_limit < 0:
            fail("eval-limit must be >= 0 (0 skips the final evaluation)")
        metrics_file = None
        if metrics is None and os.environ.get("GARRISON_METRICS_FILE"):  # set by the governor's executors
            metrics = Path(os.environ["GARRISON_METRICS_FILE"])
        if threads is None and os.environ.get("GARRISON_TORCH_THREADS"):
            threads = int(os.environ["GARRISON_TORCH_THREADS"])
        if metrics is not None:
            try:
                metrics.parent.mkdir(parents=True, exist_ok=True)
                metrics_file = metrics.open("a", buffering=1)  # line-buffered: a reader sees each step at once
            except OSError as e:
                fail(f"cannot write metrics to {metrics}: {e}")
        if threads is not None:
            if threads < 1:
                fail("threads must be >= 1")
            import torch

            torch.set_num_threads(threads)
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            fail(f"unknown device {device!r}: use auto, cpu or cuda")
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                fail("--device cuda asked for, but no CUDA device is visible")
        try:
            with progress_bar(not as_json) as progress:
                task = progress.add_task("training", total=cfg.steps)

                def on_step(step: int, loss: float) -> None:
                    progress.update(task, completed=step, description=f"training  loss {loss:.3f}")
                    if metrics_file is not None:
                        metrics_file.write(
                            json.dumps({"step": step, "loss": round(loss, 5), "unix_s": round(time.time(), 3)}) + "\n"
                        )

                summary = run_training(cfg, resume=resume, on_step=on_step)
            if eval_limit == 0:  # a throughput job (the governor's demo): no evaluation, no model card
                summary.pop("log", None)
                if as_json:
                    print_json(summary)
                else:
                    err_console.print(f"trained {summary['steps']} steps in {summary['wall_s']:.1f} s", highlight=False)
                return
            card = finish_run(cfg, summary, eval_limit=eval_limit, export=export)
        except CheckpointError as e:
            fail(f"cannot resume: {e}")
        finally:
            if metrics_file is not None:
                metrics_file.close()
        if as_json:
            print_json(card)
        else:
            f = card["faithfulness"]
            err_console.print(
                f"trained {card['steps']} steps in {card['wall_s'] / 60:.1f} min on {card['machine']}; "
                f"all-four faithfulness: "
                + ", ".join(f"{k} {v['all']:.3f}" for k, v in f["sets"].items())
                + f"; card: {out / 'model_card.md'}",
                highlight=False,
            )

    @eval_app.command("faithfulness")
    def eval_faithfulness(
        checkpoint: Path = typer.Option(None, help="Checkpoint folder (default: the shipped model)."),
        limit: int = typer.Option(None, help="Prompts per set (default: all)."),
        steps: int = typer.Option(DEFAULT_STEPS),
        guidance: float = typer.Option(DEFAULT_GUIDANCE),
        seed: int = typer.Option(0),
        out: Path = typer.Option(None, help="Also write the full report (with failures) as JSON here."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Generate every prompt of the public sets and judge the clips: per-attribute and all-four accuracy."""
        from garrison.video.evaluate.faithfulness import load_prompt_sets
        from garrison.video.training.model_card import run_faithfulness

        if limit is not None and limit < 1:
            fail("--limit must be at least 1")
        if not 1 <= steps <= 1000:
            fail(f"steps must be in 1..1000, got {steps}")
        pipeline = _load_pipeline(checkpoint)
        sets = load_prompt_sets()
        total = sum(min(len(v), limit or len(v)) for v in sets.values())
        t0 = time.perf_counter()
        with progress_bar(not as_json) as progress:
            task = progress.add_task("judging", total=total)
            report = run_faithfulness(
                pipeline, limit, steps, guidance, seed, lambda i, n: progress.update(task, completed=i)
            )
        result = {"checkpoint": str(checkpoint or "shipped"), "steps": steps, "guidance": guidance, **report}
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        if out is not None:
            out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        if as_json:
            summary = {k: v for k, v in result.items() if k != "failures"}
            print_json(summary)
        else:
            for name, s in result["sets"].items():
                attrs = "  ".join(f"{a} {s[a]:.3f}" for a in ("color", "shape", "motion", "background"))
                err_console.print(f"{name:12s} n={s['n']:3d}  all-four {s['all']:.3f}   {attrs}", highlight=False)

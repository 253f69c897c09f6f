"""Ship a checkpoint trained in stages (the CPU run, then GPU fine-tunes from scripts/gpu/session.sh) with a model
card that names every stage: evaluates the weights at the pipeline's defaults over every public prompt and writes
model.safetensors, config.json, model_card.json and model_card.md into --out.

    python scripts/gpu/ship_card.py --weights DIR [--base CARD.json] --stage "WHAT=train.log" [--stage ...] --out DIR \
        [--faithfulness REPORT.json]

`--faithfulness` takes the `--out` report of `garrison eval faithfulness --checkpoint DIR` over every prompt (seed 0,
the pipeline's defaults) instead of evaluating again: a full evaluation takes 10-35 minutes on the 2-core CPU. The
report must name the same weights folder and the same steps and guidance.

`--base` is the card of the run the first fine-tune started from; without it the first stage is a run from scratch
(INIT_FROM empty), and the card's fixed facts (architecture, parameters, clip sizes) come from the shipped card. Each
`train.log` is what scripts/gpu/train_cuda.py printed (its last line is the run's summary and configuration).
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from garrison.video.data.world import caption_mix_text
from garrison.video.pipelines.builtin import DEFAULT_GUIDANCE, DEFAULT_STEPS, BuiltinPipeline
from garrison.video.training.checkpoint import shipped_checkpoint_dir
from garrison.video.training.model_card import CARD_JSON, CARD_MD, render_markdown, run_faithfulness


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(value, value)


def read_stage(what: str, log: Path) -> dict[str, Any]:
    lines = [line for line in log.read_text().splitlines() if line.startswith('{"summary"')]
    if not lines:
        raise SystemExit(f"{log}: no summary line (did the run finish?)")
    row = json.loads(lines[-1])
    summary, config = row["summary"], {k: _number(v) for k, v in row["config"].items()}
    minutes = float(config["max_wall_s"]) / 60
    scratch = config.get("init_from") in (None, "None", "")
    losses = [json.loads(x) for x in (log.parent / "train_log.jsonl").read_text().splitlines() if x.strip()]
    return {
        "what": what,
        "steps": summary["steps"],
        "clips_seen": summary["clips_seen"],
        "wall_s": round(summary["wall_s"], 1),
        "machine": summary["machine"],
        "device": summary["device"],
        "final_loss": losses[-1]["loss"] if losses else None,
        "config": config,
        "reproduce": f"{'INIT_FROM= ' if scratch else ''}TRAIN_MINUTES={minutes:g} bash scripts/gpu/session.sh fit",
        "garrison_train": garrison_train_command(config) if scratch else None,
    }


def garrison_train_command(config: dict[str, Any]) -> str:
    """The `garrison train` line that runs a from-scratch stage's recipe (train_cuda.py is that recipe in a script)."""
    parts = [
        "garrison train --device cuda --render-on-device",
        f"--steps {config['steps']} --batch-tokens {config['batch_tokens']} --max-batch {config['max_batch']}",
        f"--lr {config['lr']} --max-minutes {float(config['max_wall_s']) / 60:g}",
        f"--cooldown-minutes {float(config['cooldown_wall_s']) / 60:g}",
    ]
    if config.get("late_from_wall_s") not in (None, "None"):
        parts.append(f"--late-from-minutes {float(config['late_from_wall_s']) / 60:g}")
    return " ".join(parts) + " --out runs/builtin-gpu"


def reuse_report(path: Path, weights: Path) -> dict[str, Any]:
    """A full `garrison eval faithfulness --out` report of these weights at the defaults, or SystemExit saying why not."""
    report = json.loads(path.read_text())
    if Path(report["checkpoint"]).resolve() != weights.resolve():
        raise SystemExit(f"{path} evaluated {report['checkpoint']}, not {weights}")
    if (report["steps"], report["guidance"]) != (DEFAULT_STEPS, DEFAULT_GUIDANCE):
        raise SystemExit(f"{path} ran {report['steps']} steps, guidance {report['guidance']}; the defaults differ")
    from garrison.video.evaluate.faithfulness import load_prompt_sets

    for name, prompts in load_prompt_sets().items():
        if report["sets"][name]["n"] != len(prompts):
            raise SystemExit(f"{path} judged {report['sets'][name]['n']} of the {len(prompts)} {name} prompts")
    return {"all_four": report["all_four"], "sets": report["sets"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--base", type=Path, default=None, help="card of the run the first stage fine-tuned")
    ap.add_argument("--stage", action="append", required=True, help="WHAT=path/to/train.log")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cpu-card", type=Path, default=None, help="card of the CPU recipe's run, to state its result")
    ap.add_argument("--faithfulness", type=Path, default=None, help="a finished full evaluation of --weights")
    args = ap.parse_args()
    stages = [read_stage(what, Path(log)) for what, log in (s.split("=", 1) for s in args.stage)]
    keys = ("what", "steps", "clips_seen", "wall_s", "machine", "reproduce")
    if args.base is not None:
        base = json.loads(args.base.read_text())
        lineage = [
            {"what": f"CPU run ({base['date']})", "steps": base["steps"], "clips_seen": base["data"]["clips_seen"],
             "wall_s": base["wall_s"], "machine": base["machine"], "reproduce": base["reproduce"]},
            *({k: st[k] for k in keys} for st in stages),
        ]  # fmt: skip
    else:
        base = json.loads((shipped_checkpoint_dir() / CARD_JSON).read_text())
        base.pop("lineage", None)
        lineage = [{k: st[k] for k in keys} for st in stages]
        if stages[0]["garrison_train"]:
            lineage[0]["garrison_train"] = stages[0]["garrison_train"]
    for number, st in enumerate(lineage[2 if args.base else 1 :], start=3 if args.base else 2):
        st["reproduce"] = f"INIT_FROM=<stage {number - 1} weights> {st['reproduce']}"  # from the stage before
    last = stages[-1]
    recipe = {**last["config"], "model": base["recipe"]["model"], "out_dir": "/tmp/runs/gpu"}
    faithfulness = (
        reuse_report(args.faithfulness, args.weights)
        if args.faithfulness
        else run_faithfulness(BuiltinPipeline.load(args.weights), None, DEFAULT_STEPS, DEFAULT_GUIDANCE, seed=0)
    )
    card = {
        **base,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "steps": last["steps"],
        "wall_s": last["wall_s"],
        "machine": last["machine"],
        "device": last["device"],
        "data": {
            **base["data"],
            "batch_tokens": recipe["batch_tokens"],
            "clips_seen": last["clips_seen"],
            # the last stage's mix (the code's now); earlier stages' are in git history
            "captions": f"{caption_mix_text()}; {recipe['cfg_dropout']:.0%} dropped for CFG",
        },
        "recipe": recipe,
        "final_loss": last["final_loss"],
        "faithfulness": {
            "steps": DEFAULT_STEPS,
            "guidance": DEFAULT_GUIDANCE,
            "prompts_per_set": None,
            **{k: v for k, v in faithfulness.items() if k != "failures"},
        },  # fmt: skip
        "reproduce": lineage[-1]["reproduce"],
        "lineage": lineage,
    }
    if args.cpu_card is not None:
        cpu = json.loads(args.cpu_card.read_text())
        judged = cpu["faithfulness"]
        card["cpu_recipe"] = {
            "reproduce": f"garrison train --steps {cpu['steps']} --seed {cpu['recipe']['seed']} --threads 2",
            "steps": cpu["steps"],
            "wall_s": cpu["wall_s"],
            "machine": cpu["machine"],
            "date": cpu["date"],
            "all_four": {name: s["all"] for name, s in judged["sets"].items()},
            "judged": f"{judged['steps']} steps, guidance {judged['guidance']}, {judged['prompts_per_set']} prompts a set",
        }
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "config.json"):
        if (args.weights / name).resolve() != (args.out / name).resolve():
            shutil.copy2(args.weights / name, args.out / name)
    (args.out / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n")
    (args.out / CARD_MD).write_text(render_markdown(card))
    print(json.dumps({"all_four": card["faithfulness"]["all_four"],
                      **{k: v["all"] for k, v in card["faithfulness"]["sets"].items()}}))  # fmt: skip


if __name__ == "__main__":
    main()

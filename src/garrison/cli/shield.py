"""`garrison policy check`, `garrison verify`, `garrison audit verify`, and `eval policy` (mounted by the lead).

Every command takes `--json` and then prints one JSON object (one per line for `policy check --prompts`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from garrison.cli.common import fail, print_json

policy_app = typer.Typer(help="The prompt policy: what garrison refuses and why.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (one per line for batches).")]
NoEmbeddingsOpt = Annotated[
    bool, typer.Option("--no-embeddings", help="Skip the embedding stage (no model load; lower recall).")
]


def _read_prompts(path: Path) -> list[str]:
    """One prompt per line, or JSONL with a "prompt" field; blank lines skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        fail(f"cannot read {path}: {e}")
    prompts = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                prompts.append(str(json.loads(line)["prompt"]))
                continue
            except (json.JSONDecodeError, KeyError, TypeError):
                pass
        prompts.append(line)
    return prompts


def _decision_fields(prompt: str, decision: Any) -> dict[str, Any]:
    d = decision.to_dict()
    return {
        "prompt": prompt,
        "decision": d["decision"],
        "category": d["category"],
        "reason": d["reason"],
        "score": d["score"],
        "matched": d["matched"],
        "stage": d["stage"],
        "policy_version": d["policy_version"],
    }


@policy_app.command("check")
def policy_check_command(
    prompt: Annotated[str | None, typer.Argument(help="The prompt to check.")] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="File of prompts, one per line or JSONL.")] = None,
    no_embeddings: NoEmbeddingsOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Say whether garrison would refuse PROMPT, with the category and reason code."""
    from garrison.shield.verify import default_shield

    if (prompt is None) == (prompts is None):
        fail("give exactly one of PROMPT or --prompts FILE")
    items = [prompt] if prompt is not None else _read_prompts(prompts)  # type: ignore[arg-type]
    shield = default_shield()
    shield.config.use_embeddings = not no_embeddings
    refused = 0
    for item in items:
        out = _decision_fields(item, shield.screen_prompt(item))
        refused += out["decision"] == "refuse"
        if json_out:
            print_json(out)
        else:
            label = "REFUSE" if out["decision"] == "refuse" else "allow "
            why = (
                f"  {out['category']} {out['reason']} (score {out['score']}, {out['matched']})"
                if out["category"]
                else ""
            )
            typer.echo(f"{label}{why}  {item!r}")
    if not json_out and len(items) > 1:
        typer.echo(f"{refused} of {len(items)} refused")


def verify_command(
    file: Annotated[Path, typer.Argument(help="A video file to check.")],
    json_out: JsonOpt = False,
) -> None:
    """Check a video's content credentials, watermark and originating request."""
    from garrison.shield.verify import default_shield

    if not file.exists():
        fail(f"{file} does not exist")
    out = default_shield().verify_file(file)
    if json_out:
        print_json(out)
        return
    wm = out["watermark"]
    typer.echo(f"c2pa:      {out['c2pa']}")
    typer.echo(
        f"watermark: {'detected' if wm['detected'] else 'not detected'} (p={wm['p_value']}, "
        f"bit accuracy {wm['bit_accuracy']}, payload {wm['payload']}"
        + (
            f", decoded over the registry's ids, p={wm['payload_match_p_value']})"
            if wm.get("payload_source") == "registry"
            else ")"
        )
    )
    reg = out["registry"]
    typer.echo(f"registry:  {'request ' + str(reg['request_id']) if reg['match'] else 'no match'}")
    if out.get("error"):
        typer.echo(f"note:      {out['error']}")


@audit_app.command("verify")
def audit_verify_command(
    log: Annotated[
        Path | None, typer.Option("--log", help="Audit log file (default: $GARRISON_HOME/audit.log).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Walk the hash chain; exit 1 when a record was edited, inserted or deleted."""
    from garrison.shield.audit import AuditLog
    from garrison.shield.verify import default_shield

    report = (AuditLog(log) if log else default_shield().audit).verify()
    if json_out:
        print_json(report.to_dict())
    else:
        typer.echo(f"{'ok' if report.ok else 'TAMPERED'}: {report.records} records, head {report.head[:16]}")
        for problem in report.problems:
            typer.echo(f"  seq {problem.get('seq', problem.get('line'))}: {problem['problem']}")
    if not report.ok:
        raise typer.Exit(1)


def eval_policy_command(
    split: Annotated[str, typer.Option("--split", help="all | dev | test (dev rows set the thresholds).")] = "all",
    no_embeddings: NoEmbeddingsOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Precision, recall and false-positive rate of the prompt policy per category, on the shipped eval set."""
    from garrison.shield.policy import Policy, PolicyConfig, evaluate_policy, load_eval_set

    if split not in ("all", "dev", "test"):
        fail(f"--split must be all, dev or test, got {split!r}")
    rows = [r for r in load_eval_set() if split == "all" or r.get("split") == split]
    report = evaluate_policy(Policy(PolicyConfig(use_embeddings=not no_embeddings)), rows)
    report["split"] = split
    if json_out:
        print_json(report)
        return
    typer.echo(
        f"{report['prompts']} prompts ({report['benign']} allowed-labelled, {report['near_misses']} near "
        f"misses), split {split}, embeddings {'on' if report['embeddings'] else 'off'}"
    )
    typer.echo(f"{'category':<15}{'precision':>10}{'recall':>9}{'FPR':>8}{'n':>6}")
    for name, m in report["categories"].items():
        typer.echo(
            f"{name:<15}{m['precision']:>10.3f}{m['recall']:>9.3f}{m['false_positive_rate']:>8.3f}{m['support']:>6}"
        )
    overall = report["overall"]
    typer.echo(
        f"overall: refused {overall['recall_any_category']:.3f} of refusable prompts, "
        f"false-positive rate {overall['false_positive_rate']:.3f} on allowed prompts"
    )
    for err in report["errors"][:20]:
        typer.echo(f"  {err['label']:>13} -> {err['predicted']:<13} {err['prompt']!r}")


def register(app: typer.Typer) -> None:
    """Add the shield's commands to the `garrison` app (`eval policy` is mounted by the eval sub-app's owner)."""
    app.add_typer(policy_app, name="policy")
    app.add_typer(audit_app, name="audit")
    app.command("verify")(verify_command)

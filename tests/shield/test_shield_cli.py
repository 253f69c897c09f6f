import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from garrison.cli import shield as shield_cli
from garrison.cli.main import app

runner = CliRunner()


def _lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_policy_check_json(garrison_home: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["policy", "check", "Mickey Mouse dancing", "--json", "--no-embeddings"])
    assert result.exit_code == 0, result.output
    out = _lines(result.output)[0]
    assert (out["decision"], out["category"], out["reason"]) == ("refuse", "copyright", "copyright.character")
    assert 0 <= out["score"] <= 1

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("an apple pie\n\n" + json.dumps({"prompt": "Vladimir Putin fishing"}) + "\n\x01\x02\n")
    result = runner.invoke(app, ["policy", "check", "--prompts", str(prompts), "--json", "--no-embeddings"])
    assert result.exit_code == 0, result.output
    rows = _lines(result.output)
    assert [r["decision"] for r in rows] == ["allow", "refuse", "refuse"]
    assert rows[2]["reason"] == "input.no_text"

    result = runner.invoke(app, ["policy", "check", "--json"])
    assert result.exit_code != 0


def test_verify_and_audit_commands(garrison_home: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.mp4"
    bogus.write_text("hello")
    result = runner.invoke(app, ["verify", str(bogus), "--json"])
    assert result.exit_code == 0, result.output
    out = _lines(result.output)[0]
    assert out["c2pa"] == "absent" and out["watermark"]["detected"] is False and out["error"]

    result = runner.invoke(app, ["audit", "verify", "--json"])
    assert result.exit_code == 0 and _lines(result.output)[0]["ok"] is True

    log = garrison_home / "audit.log"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    records[0]["data"]["file"] = "something-else.mp4"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = runner.invoke(app, ["audit", "verify", "--json"])
    assert result.exit_code == 1 and _lines(result.output)[0]["ok"] is False


def test_eval_policy_command_reports_per_category() -> None:
    eval_app = typer.Typer()
    eval_app.command("policy")(shield_cli.eval_policy_command)
    eval_app.command("noop")(lambda: None)  # a second command keeps typer from collapsing the group
    result = runner.invoke(eval_app, ["policy", "--json", "--no-embeddings", "--split", "test"])
    assert result.exit_code == 0, result.output
    report = _lines(result.output)[0]
    assert set(report["categories"]) == {"public_figure", "election", "copyright"}
    for m in report["categories"].values():
        assert {"precision", "recall", "false_positive_rate"} <= set(m)
    assert report["split"] == "test" and report["prompts"] < 400

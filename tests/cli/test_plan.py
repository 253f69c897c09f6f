"""`garrison plan`: a real subprocess on a small scenario; bad input is one clear line and a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

TINY = {
    "name": "tiny",
    "horizon_s": 3600,
    "sites": [
        {
            "name": "a",
            "power_cap_mw": 0.01,
            "devices": [
                {"chip": "h100-sxm", "count": 2, "pool": "serving"},
                {"chip": "h100-sxm", "count": 2, "pool": "training"},
            ],
        }
    ],
    "demand": {"users": 1500},
    "requests": [{"model": "wan2.1-1.3b", "seconds": 5.4}],
    "training": [{"name": "j", "devices": 2, "duration_s": 1200, "start_s": 600}],
    "governor": {"control_period_s": 30},
}


def garrison(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "garrison.cli.main", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_plan_json_and_report(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "report"
    proc = garrison("plan", str(path), "--json", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    answers = json.loads(proc.stdout)
    assert answers["scenario"] == "tiny" and answers["devices"] == 4
    assert answers["requests"] > 0 and 0 <= answers["slo_attainment"] <= 1
    assert answers["training_jobs"][0]["status"] == "succeeded"
    assert answers["energy_mwh"] > 0 and answers["cost_usd"] > 0
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "SLO attainment" in html
    assert json.loads((out / "answers.json").read_text())["scenario"] == "tiny"


def test_plan_bad_scenario_is_one_line(tmp_path):
    bad = dict(TINY, sites=[{**TINY["sites"][0], "devices": [{"chip": "h999", "count": 2}]}])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = garrison("plan", str(path), "--json")
    assert proc.returncode != 0
    assert "sites[0].devices[0].chip: unknown chip 'h999'" in proc.stderr
    assert "Traceback" not in proc.stderr
    missing = garrison("plan", "no-such-scenario")
    assert missing.returncode != 0 and "shipped examples" in missing.stderr

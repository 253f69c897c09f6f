"""The simulator against a measured `garrison demo` run on this machine (a record extracted from it ships in
tests/planner/data/; benchmarks/planner_fidelity.py made it). The errors are printed: pytest -s shows them.

Two recorded runs of the same demo (run 1 and run 2, minutes apart on the same loaded machine), the profile
calibrated on each run's first burst and the rest predicted. Run 1: latency 8%, energy 26%, training 6% off.
Run 2: latency 50%, energy 30%, training 2% off. Training throughput meets the issue's 10% on both; latency meets it
on run 1 only and energy on neither. The bounds below are those two runs' figures with some margin, not the target.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from garrison.planner.validate import calibration_videos, limit_at_w, predict_demo

DATA = Path(__file__).with_name("data")
RECORDS = ("demo_record.json", "demo_record_run2.json")


@pytest.fixture(scope="module", params=RECORDS)
def record(request):
    return json.loads((DATA / request.param).read_text())


def test_demo_replay_against_the_measured_run(record):
    out = predict_demo(record, "first_burst")
    in_sample = predict_demo(record, "all")
    print(json.dumps({"first_burst": out["relative_error"], "all": in_sample["relative_error"]}))
    print(json.dumps({k: out[k] for k in ("predicted", "measured", "calibration")}, indent=1))
    assert out["videos_served_predicted"] == out["videos"]  # nothing lost in the replay either
    # The governor chose (almost) the same quality rungs in the simulator as on the machine.
    predicted, measured = out["quality_levels_predicted"], out["quality_levels_measured"]
    assert sum(abs(predicted[q] - measured[q]) for q in predicted) <= 2
    assert out["relative_error"]["training_steps_per_s_governed"] < 0.10
    power_error = abs(out["mean_power_w_predicted"] - out["power_mean_w_measured"]) / out["power_mean_w_measured"]
    assert power_error < 0.15
    assert out["relative_error"]["latency_mean_s"] < 0.60
    assert out["relative_error"]["joules_per_video"] < 0.40


def test_calibration_sets(record):
    first = calibration_videos(record, "first_burst")
    everything = calibration_videos(record, "all")
    submitted = record["job"]["submitted_s"]
    assert first and all(v["created_s"] <= submitted for v in first)
    assert len(first) < len(everything)
    with pytest.raises(ValueError, match="first_burst"):
        calibration_videos(record, "some")


def test_power_limit_timeline(record):
    changes = record["power_limits"]
    assert changes, "the governor limited the serving slot in this run"
    first = changes[0]
    assert limit_at_w(record, first["device_id"], first["t_s"] - 0.001) == pytest.approx(5.6)
    assert limit_at_w(record, first["device_id"], first["t_s"]) == pytest.approx(first["watts"])


def test_a_record_of_another_version_is_refused(record):
    with pytest.raises(ValueError, match="version"):
        predict_demo({**record, "version": 99})

"""Answers and capacity search on small scenarios (an hour or two of simulated time, a few devices)."""

from __future__ import annotations

import copy

import pytest

from garrison.planner.plan import cheapest_chip, compare_custom_chip, max_users, plan
from garrison.planner.report import write_report
from garrison.planner.scenario import parse_scenario

SMALL = {
    "name": "small",
    "horizon_s": 2 * 3600,
    "seed": 2,
    "custom_chips": [{"key": "asic", "base": "h100-sxm", "perf_factor": 1.0, "perf_per_w_factor": 2.0}],
    "sites": [
        {
            "name": "a",
            "power_cap_mw": 0.008,
            "pue": 1.2,
            "devices": [
                {"chip": "h100-sxm", "count": 4, "pool": "serving"},
                {"chip": "h100-sxm", "count": 4, "pool": "training"},
            ],
        }
    ],
    "demand": {"users": 2000},
    "requests": [{"model": "wan2.1-1.3b", "seconds": 5.4}],
    "training": [{"name": "j", "devices": 4, "duration_s": 3600, "start_s": 1800}],
    "governor": {"control_period_s": 30, "grace_period_s": 60, "slo_s": 900},
}


def test_answers_are_consistent(tmp_path):
    result = plan(parse_scenario(SMALL))
    a = result.answers
    assert a["requests"] == a["served"] + a["shed"] + a["unserved"]
    assert 0 <= a["slo_attainment"] <= 1
    assert a["wait_p50_s"] <= a["wait_p99_s"]
    # Energy is mean power times the horizon; cost and CO2 follow from the tariff and the grid.
    assert a["energy_mwh"] == pytest.approx(a["mean_power_mw"] * 2, rel=1e-3)
    assert a["cost_usd"] == pytest.approx(a["energy_mwh"] * 1000 * 0.08, abs=0.006)  # the flat tariff
    assert a["co2_t"] > 0
    assert a["peak_power_mw"] >= a["mean_power_mw"]
    assert a["training_jobs"][0]["work_s_alone"] == 3600
    assert 0 <= a["training_slowdown"] <= 1
    assert a["feasibility"]["servable"]
    path = write_report(result, tmp_path)
    assert path.read_text().count("<img") == 4


def test_custom_chip_with_twice_the_perf_per_watt_changes_power_not_speed():
    data = copy.deepcopy(SMALL)
    for g in data["sites"][0]["devices"]:
        g["chip"] = "asic"
    scenario = parse_scenario(data)
    answers = plan(scenario).answers
    what_if = compare_custom_chip(scenario, answers)
    print(what_if)
    assert what_if["with_custom"]["energy_mwh"] < what_if["with_base"]["energy_mwh"]
    assert what_if["with_custom"]["peak_power_mw"] < what_if["with_base"]["peak_power_mw"]


def test_max_users_brackets_a_point_that_meets_the_target():
    data = copy.deepcopy(SMALL)
    data["horizon_s"] = 3600
    data["training"] = []
    scenario = parse_scenario(data)
    found = max_users(scenario, quality_level=0, max_slowdown=0.05, probes=5)
    lo, hi = found["bracket"]
    assert lo < hi and found["users"] == lo
    assert any(p["meets"] for p in found["probes"]) and not all(p["meets"] for p in found["probes"])
    # Four serving devices and four lendable at ~96 s a video: at most ~8 x 3600 / 96 = 300 an hour.
    assert 0 < lo / 24 <= 1.2 * 300  # a one-hour horizon lets a queue of a few minutes still meet the SLO


def test_cheapest_chip_ranks_by_cost():
    data = copy.deepcopy(SMALL)
    data["horizon_s"] = 3600
    data["training"] = []
    scenario = parse_scenario(data)
    ranking = cheapest_chip(scenario, ["h100-sxm", "b200"], {"h100-sxm": 2.5, "b200": 5.0})["ranking"]
    assert {r["chip"] for r in ranking} == {"h100-sxm", "b200"}
    costs = [r["total_usd"] for r in ranking if r["meets"]]
    assert costs == sorted(costs)


def test_gate_reasons_name_what_held_the_gate_most_periods_not_what_held_it_first():
    scenario = copy.deepcopy(SMALL)
    scenario["demand"] = {"users": 20000}  # more than four serving devices carry at full quality under the cap
    site = plan(parse_scenario(scenario)).answers["sites"][0]
    periods = site["gate_reason_periods"]["degraded"]
    assert sum(periods.values()) >= site["gate_periods"]["degraded"]  # every degraded period has a reason
    counts = sorted(periods.values(), reverse=True)
    assert site["gate_reasons"]["degraded"] == next(text for text, n in periods.items() if n == counts[0])
    # The start-up's reason (no service time measured yet) lasts a period or two, not the day
    start_up = [n for text, n in periods.items() if text.startswith("no request has been measured")]
    assert not start_up or start_up[0] < counts[0]


def test_a_gate_reasons_kind_is_its_template():
    from garrison.planner.sim import _reason_kind

    a = _reason_kind("serving needs 16.6 devices at full quality for 0.15 req/s but has 16")
    b = _reason_kind("serving needs 3.2 devices at full quality for 0.02 req/s but has 4")
    assert a == b == "serving needs "
    assert _reason_kind("no digits at all") == "no digits at all"

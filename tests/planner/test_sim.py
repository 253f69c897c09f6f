"""The simulator against queueing theory's closed forms, the governor's behaviour in it, and bad input.

M/M/c (Erlang C) and M/D/1 (Pollaczek-Khinchine): mean waits from a simulated run with the governor in the loop
(cap far away, nothing to lend) against the formulas; the errors are printed (pytest -s shows them).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from garrison.planner.plan import feasibility, run_sites
from garrison.planner.profiles import CostProfile
from garrison.planner.scenario import ScenarioError, parse_scenario
from garrison.planner.sim import SiteSimulator, site_arrivals


def erlang_c_wait_s(c: int, arrival_per_s: float, service_s: float) -> float:
    """Mean wait in queue of M/M/c."""
    a = arrival_per_s * service_s
    rho = a / c
    terms = sum(a**k / math.factorial(k) for k in range(c))
    top = a**c / math.factorial(c) / (1 - rho)
    p_wait = top / (terms + top)
    return p_wait * service_s / (c - a)


def queue_scenario(servers: int, rho: float, service: str, horizon_s: float) -> tuple[dict, float]:
    profile = CostProfile()
    service_s = profile.predict("builtin", "cpu-core", 1, 64, 64, profile.frames_for("builtin", 2), 12).seconds
    rate = rho * servers / service_s
    data = {
        "name": f"m-{service}-{servers}",
        "horizon_s": horizon_s,
        "seed": 3,
        "sites": [
            {
                "name": "q",
                "power_cap_mw": 0.001,
                "pue": 1.0,
                "devices": [{"chip": "cpu-core", "count": servers, "pool": "serving"}],
            }
        ],
        "demand": {"users": rate * 86400, "videos_per_user_per_day": 1},
        "requests": [{"model": "builtin", "seconds": 2, "size": "64x64", "steps": 12}],
        "governor": {"control_period_s": 5, "slo_s": 3600},
        "simulation": {"service_time": service},
    }
    return data, service_s


def mean_wait_s(data: dict) -> tuple[float, int]:
    result = run_sites(parse_scenario(data))[0]
    started = np.isfinite(result.start_s)
    assert result.quality.max() == 0  # the governor left quality alone: nothing to hold under this cap
    return float(np.mean(result.start_s[started] - result.arrival_s[started])), int(started.sum())


@pytest.mark.parametrize(("servers", "rho"), [(2, 0.7), (4, 0.8)])
def test_mmc_mean_wait_matches_erlang_c(servers, rho):
    data, service_s = queue_scenario(servers, rho, "exponential", 12 * 3600)
    data["governor"]["control_period_s"] = 30
    simulated, n = mean_wait_s(data)
    rate = data["demand"]["users"] / 86400
    expected = erlang_c_wait_s(servers, rate, service_s)
    error = abs(simulated - expected) / expected
    print(
        f"M/M/{servers} rho={rho}: simulated Wq {simulated:.3f} s, Erlang C {expected:.3f} s, error {error:.1%} ({n} requests)"
    )
    assert error < 0.10


def test_md1_mean_wait_matches_pollaczek_khinchine():
    data, service_s = queue_scenario(1, 0.7, "deterministic", 24 * 3600)
    data["governor"]["control_period_s"] = 30
    simulated, n = mean_wait_s(data)
    rate = data["demand"]["users"] / 86400
    rho = rate * service_s
    expected = rho * service_s / (2 * (1 - rho))
    error = abs(simulated - expected) / expected
    print(
        f"M/D/1 rho={rho:.2f}: simulated Wq {simulated:.3f} s, P-K {expected:.3f} s, error {error:.1%} ({n} requests)"
    )
    assert error < 0.10


LAB = {
    "name": "lab",
    "horizon_s": 4 * 3600,
    "seed": 5,
    "sites": [
        {
            "name": "lab",
            "power_cap_mw": 0.009,
            "pue": 1.2,
            "devices": [
                {"chip": "h100-sxm", "count": 4, "pool": "serving"},
                {"chip": "h100-sxm", "count": 8, "pool": "training"},
            ],
        }
    ],
    "demand": {"users": 6 * 4 * 3600 / 96 * 6, "videos_per_user_per_day": 1},
    "requests": [{"model": "wan2.1-1.3b", "seconds": 5.4}],
    "training": [{"name": "ft", "devices": 8, "duration_s": 3600, "start_s": 3600}],
    "governor": {"control_period_s": 10, "grace_period_s": 30, "slo_s": 900},
}


def test_lending_reclaim_and_the_cap_with_the_real_governor():
    scenario = parse_scenario(LAB)
    result = run_sites(scenario)[0]
    # Serving borrowed idle training devices before the job came, and gave them back for it.
    assert result.serving_devices[: int(3600 / 10)].max() > 4
    job = result.jobs[0]
    assert job.started_s is not None and 3600 <= job.started_s <= 3600 + 30 + 10
    assert int(result.training_devices.max()) == 8
    # The cap (chip watts) held in at least 99% of periods; the controller lowered quality to hold it.
    assert np.mean(result.power_w > result.power_cap_w) <= 0.01
    assert result.quality.max() > 0
    # Nothing lost: every request started, requeued or not.
    assert np.isfinite(result.start_s).all()


def test_per_device_units_match_aggregated_units_roughly():
    one = parse_scenario(LAB)
    blocks = parse_scenario({**copy.deepcopy(LAB), "simulation": {"max_units_per_site": 3}})
    a, b = run_sites(one)[0], run_sites(blocks)[0]
    assert b.units == 3 and a.units == 12
    wait_a = np.nanmean(a.start_s - a.arrival_s)
    wait_b = np.nanmean(b.start_s - b.arrival_s)
    print(f"mean wait per device {wait_a:.1f} s, in blocks of 4: {wait_b:.1f} s")
    assert abs(a.power_w.mean() - b.power_w.mean()) / a.power_w.mean() < 0.25


def test_cap_below_idle_draw_names_the_field():
    data = copy.deepcopy(LAB)
    data["sites"][0]["power_cap_mw"] = 0.0005
    scenario = parse_scenario(data)
    with pytest.raises(ScenarioError, match=r"sites\[0\].power_cap_mw: .* idle"):
        SiteSimulator(scenario, 0, *site_arrivals(scenario)[0])


def test_demand_that_can_never_be_met_says_why_and_ends():
    data = copy.deepcopy(LAB)
    data["horizon_s"] = 1800
    data["demand"]["users"] = 5_000_000
    scenario = parse_scenario(data)
    verdict = feasibility(scenario)
    assert not verdict["servable"]
    assert "needs" in verdict["why_not"][0] and "add devices" in verdict["why_not"][0]
    result = run_sites(scenario)[0]  # runs to its horizon, no hang
    # ~90% never start: the fleet serves about a tenth of the demand (idle training devices borrowed included).
    assert np.isnan(result.start_s).sum() > 0.85 * len(result.start_s)


def one_slot_scenario(simulation: dict, training: list | None = None, devices: int = 1) -> dict:
    return {
        "name": "one-slot",
        "horizon_s": 60,
        "sites": [
            {
                "name": "m",
                "power_cap_mw": 20e-6,
                "pue": 1.0,
                "devices": [
                    {"chip": "cpu-core", "count": 1, "pool": "serving"},
                    {"chip": "cpu-core", "count": devices, "pool": "training"},
                ],
            }
        ],
        "demand": {"users": 0},
        "requests": [{"model": "builtin", "seconds": 2, "size": "64x64", "steps": 24}],
        "training": training or [],
        "governor": {"control_period_s": 1},
        "simulation": simulation,
    }


def test_a_quality_rung_shortens_only_the_part_that_grows_with_the_clip():
    from garrison.core.fleet import QUALITY_LADDER
    from garrison.planner.profiles import calibrate_builtin

    # A profile with 0.3 s per request that no rung shortens (watermark, encoding, signing) and 1.2 s of denoising.
    work = 64 * 64 * 16 * 24
    point = calibrate_builtin([(work, 1.5), (work / 2, 0.9)], 5.6, "test")
    scenario = parse_scenario(one_slot_scenario({}))
    sim = SiteSimulator(scenario, 0, np.zeros(0), np.zeros(0, dtype=np.int32), profile=CostProfile(points=(point,)))
    assert sim.rung_s(0)[0, 0] == pytest.approx(1.5)
    top = QUALITY_LADDER[5]
    scale = top.steps_for(24) / 24 * top.native_scale**2
    assert scale < 0.5
    assert sim.rung_s(5)[0, 0] == pytest.approx(0.3 + 1.2 * scale)
    # The service time a request gets at the top rung keeps the fixed part: one request alone, served at rung 5
    # would take 1.5 x scale if the rung scaled everything.
    assert sim.rung_s(5)[0, 0] > 1.5 * scale + 0.25


def test_training_start_up_draws_idle_power_and_delays_the_work():
    training = [{"name": "t", "devices": 1, "duration_s": 10, "start_s": 2}]
    plain = run_sites(parse_scenario(one_slot_scenario({}, training)))[0]
    slow = run_sites(parse_scenario(one_slot_scenario({"training_start_s": 3.0}, training)))[0]
    a, b = plain.jobs[0], slow.jobs[0]
    assert a.started_s == b.started_s
    assert b.finished_s - b.started_s == pytest.approx(a.finished_s - a.started_s + 3.0)
    started = int(b.started_s)
    # Idle serving slot + a training slot that draws idle power for the three periods of its start-up, then busy.
    idle_w, busy_w = 1.7, 5.6
    assert slow.power_w[started : started + 3] == pytest.approx([2 * idle_w] * 3)
    assert slow.power_w[started + 3] == pytest.approx(idle_w + busy_w)
    assert plain.power_w[started] == pytest.approx(idle_w + busy_w)

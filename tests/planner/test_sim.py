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


def _capped_pair(simulation: dict) -> dict:
    """One serving and one training core under the demo's cap: training starting at 2 s makes the governor lower
    the serving core's limit to 2.6 W (a quarter-core quota) and the quality to rung 5."""
    return {
        "name": "capped-pair",
        "horizon_s": 60,
        "sites": [
            {
                "name": "m",
                "power_cap_mw": 9.25e-6,
                "pue": 1.0,
                "devices": [
                    {"chip": "cpu-core", "count": 1, "pool": "serving"},
                    {"chip": "cpu-core", "count": 1, "pool": "training"},
                ],
            }
        ],
        "demand": {"users": 0},
        "requests": [{"model": "builtin", "seconds": 2, "size": "64x64", "steps": 24}],
        "training": [{"name": "t", "devices": 1, "duration_s": 20, "start_s": 1.5}],
        "governor": {"control_period_s": 1},
        "simulation": simulation,
    }


def _six_second_profile() -> CostProfile:
    from garrison.planner.profiles import calibrate_builtin

    work = 64 * 64 * 16 * 24
    return CostProfile(points=(calibrate_builtin([(work, 6.0), (work / 2, 3.2)], 5.6, "test"),))


def test_a_limit_set_while_a_request_runs_slows_what_is_left_of_it():
    arrivals, kinds = np.array([0.5, 0.6]), np.zeros(2, dtype=np.int32)
    runs = {}
    for flag in (False, True):
        scenario = parse_scenario(_capped_pair({"limits_apply_in_flight": flag}))
        runs[flag] = SiteSimulator(scenario, 0, arrivals, kinds, profile=_six_second_profile()).run()
    kept, slowed = runs[False], runs[True]
    assert kept.end_s[0] == pytest.approx(6.5)  # 6 s at full speed: the limit set at 2 s does not touch it
    quota = (2.6 - 1.7) / (5.6 - 1.7)
    # 1.5 s at full speed, then the 4.5 s of work left at a quarter of the core
    assert slowed.end_s[0] == pytest.approx(2.0 + 4.5 / quota)
    assert slowed.start_s[1] == pytest.approx(slowed.end_s[0])  # the next one waits for it
    assert slowed.serving_busy_s > kept.serving_busy_s


def test_replayed_rungs_override_the_governors_for_those_requests():
    scenario = parse_scenario(_capped_pair({}))
    arrivals, kinds = np.array([0.5, 0.6, 0.7]), np.zeros(3, dtype=np.int32)
    free = SiteSimulator(scenario, 0, arrivals, kinds, profile=_six_second_profile()).run()
    assert free.level.tolist() == [0, 5, 5]  # the cap binds at 2 s: rung 5 from then on
    replay = SiteSimulator(
        scenario, 0, arrivals, kinds, profile=_six_second_profile(), level_of_request=np.array([-1, 0, -1])
    ).run()
    assert replay.level.tolist() == [0, 0, 5]
    sim = SiteSimulator(scenario, 0, arrivals, kinds, profile=_six_second_profile())
    quota = (2.6 - 1.7) / (5.6 - 1.7)
    assert replay.end_s[1] - replay.start_s[1] == pytest.approx(sim.rung_s(0)[0, 0] / quota)
    # the third starts after training has ended and the limit is back: the governor's rung, at full speed
    assert replay.start_s[2] > 22.0
    assert replay.end_s[2] - replay.start_s[2] == pytest.approx(sim.rung_s(5)[0, 0])


def test_a_serving_share_below_one_slows_serving_and_its_power():
    arrivals, kinds = np.array([0.5]), np.zeros(1, dtype=np.int32)
    scenario = parse_scenario(one_slot_scenario({"serving_share": 0.5}))
    shared = SiteSimulator(scenario, 0, arrivals, kinds, profile=_six_second_profile()).run()
    whole = SiteSimulator(
        parse_scenario(one_slot_scenario({})), 0, arrivals, kinds, profile=_six_second_profile()
    ).run()
    assert whole.end_s[0] - whole.start_s[0] == pytest.approx(6.0)
    assert shared.end_s[0] - shared.start_s[0] == pytest.approx(12.0)
    # a busy period: the worker draws for half a core, the idle training core its idle power
    assert shared.power_w[3] == pytest.approx(1.7 + 1.7 + 0.5 * (5.6 - 1.7))
    assert whole.power_w[3] == pytest.approx(1.7 + 5.6)


def test_a_throttled_core_slot_reads_its_quota_for_the_part_of_the_period_it_had_work():
    scenario = parse_scenario(_capped_pair({"limits_apply_in_flight": True}))
    arrivals, kinds = np.array([0.5, 0.6]), np.zeros(2, dtype=np.int32)
    run = SiteSimulator(scenario, 0, arrivals, kinds, profile=_six_second_profile()).run()
    end = float(run.end_s[1])  # the second request ends with training over, part way through its period
    j = int(end)
    assert run.jobs[0].finished_s <= j and end - j > 0.05
    limit_w = [w for t, _, w in run.extra["limit_changes"] if t <= j][-1]
    assert limit_w < 5.6  # still limited then
    quota = (limit_w - 1.7) / (5.6 - 1.7)
    # A CPU quota, not a clip on power: the slot drew its quota's share of the core for the time it had work, idle
    # power after; the idle training core its idle power.
    assert run.power_w[j] == pytest.approx(1.7 + (5.6 - 1.7) * quota * (end - j) + 1.7)
    assert run.power_w[j] < limit_w + 1.7 - 0.1


def test_a_limit_that_takes_effect_after_its_tick_slows_the_running_request_from_then():
    scenario = parse_scenario(_capped_pair({"limits_apply_in_flight": True}))
    arrivals, kinds = np.array([0.5, 0.6]), np.zeros(2, dtype=np.int32)
    runs = {
        d: SiteSimulator(
            scenario, 0, arrivals, kinds, profile=_six_second_profile(), limit_delay_s=np.full(60, d)
        ).run()
        for d in (0.0, 0.25)
    }
    quota = (2.6 - 1.7) / (5.6 - 1.7)
    assert runs[0.0].extra["limit_changes"][0][0] == pytest.approx(2.0)
    assert runs[0.25].extra["limit_changes"][0][0] == pytest.approx(2.25)
    assert runs[0.0].end_s[0] == pytest.approx(2.0 + 4.5 / quota)
    assert runs[0.25].end_s[0] == pytest.approx(2.25 + 4.25 / quota)  # a quarter second more at full speed
    # The period the limit came in reads the serving slot at full power until then, at its quota after; training
    # started on that tick and draws its full power.
    assert runs[0.25].power_w[2] == pytest.approx(1.7 + (5.6 - 1.7) * (0.25 + 0.75 * quota) + 5.6)
    assert runs[0.0].power_w[2] == pytest.approx(2.6 + 5.6)


def test_an_idle_worker_takes_a_request_a_poll_after_it_arrives_a_busy_one_at_once():
    training = [{"name": "t", "devices": 1, "duration_s": 50, "start_s": 0}]  # nothing to lend, no cap binding
    scenario = parse_scenario(one_slot_scenario({"worker_pickup_s": 0.1}, training))
    arrivals, kinds = np.array([0.5, 0.6, 40.5]), np.zeros(3, dtype=np.int32)
    run = SiteSimulator(scenario, 0, arrivals, kinds, profile=_six_second_profile()).run()
    assert run.start_s.tolist() == pytest.approx([0.6, 6.6, 40.6])  # idle: a poll later; queued: at once
    assert run.end_s.tolist() == pytest.approx([6.6, 12.6, 46.6])


def test_the_governor_reads_a_replayed_runs_tick_clock(monkeypatch):
    from garrison.planner import sim as sim_module

    seen: list[float] = []
    decide = sim_module.policy.decide

    def spy(state, config):
        seen.append(state.now_s)
        return decide(state, config)

    scenario = parse_scenario(_capped_pair({"limits_apply_in_flight": True}))
    arrivals, kinds = np.array([0.5, 0.6]), np.zeros(2, dtype=np.int32)
    plain = SiteSimulator(scenario, 0, arrivals, kinds, profile=_six_second_profile()).run()
    clock = np.arange(60) + np.where(np.arange(60) % 2, 0.0003, 0.0001)  # the timer's wake-up, a little late
    monkeypatch.setattr(sim_module.policy, "decide", spy)
    replayed = SiteSimulator(scenario, 0, arrivals, kinds, profile=_six_second_profile(), tick_clock_s=clock).run()
    assert seen[:10] == pytest.approx(clock[:10].tolist(), abs=1e-12)
    # The events still happen period by period: here the same decisions, so the same run.
    assert replayed.start_s.tolist() == plain.start_s.tolist()
    assert replayed.end_s.tolist() == plain.end_s.tolist()

"""Answers: run a scenario through the simulator and say what it takes.

`plan(scenario) -> PlanResult` runs every site (one governor per site, on its own cap), then once more with no video
demand (training alone) for the training slowdown, and sums the figures an operator asks for: SLO attainment, waits,
training slowdown against training alone, peak and mean facility power against the caps, energy, cost, CO2,
utilisation, and whether the demand can be served at all (and why not).

Capacity search (`max_users`, `cheapest_chip`, `compare_custom_chip`) re-runs the simulator: a bisection on the
number of users, and a sweep over chips. Each probe is a full simulated run, so they take seconds to minutes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from garrison.energy.pricing import J_PER_KWH, Tariff, get_carbon_intensity, get_tariff
from garrison.planner.profiles import CostProfile
from garrison.planner.scenario import Scenario, ScenarioError
from garrison.planner.sim import SiteResult, SiteSimulator, site_arrivals

J_PER_MWH = 3.6e9


@dataclass
class PlanResult:
    """A planner run: the figures (`answers`, JSON-able), the per-site raw results, and how long it took."""

    scenario: Scenario
    answers: dict[str, Any]
    sites: list[SiteResult]
    alone: list[SiteResult]
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def _tariff(scenario: Scenario) -> Tariff:
    e = scenario.electricity
    if isinstance(e.usd_per_kwh, list):
        return Tariff("scenario", tuple(float(p) for p in e.usd_per_kwh))
    if e.usd_per_kwh is not None:
        return Tariff.flat(float(e.usd_per_kwh), "scenario")
    return get_tariff(e.tariff)


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None


def feasibility(scenario: Scenario, profile: CostProfile | None = None, level: int = -1) -> dict[str, Any]:
    """Can the demand be served at all? Mean device-seconds per second the demand needs at quality rung `level`
    (default: the lowest), against every device of every site serving; and the power that would take against the
    caps."""
    from garrison.core.fleet import QUALITY_LADDER

    profile = profile or CostProfile(catalog=scenario.chips())
    weights = np.array([r.weight for r in scenario.requests])
    weights = weights / weights.sum()
    rate_per_s = scenario.demand.videos_per_day / 86400.0
    lowest = QUALITY_LADDER[level]
    best_s, need_devices = math.inf, 0.0
    capacity_per_s, capacity_power_w, cap_w = 0.0, 0.0, 0.0
    for site in scenario.sites:
        cap_w += site.power_cap_mw * 1e6 / (site.pue * site.server_factor)
        for g in site.devices:
            if not g.count:
                continue
            seconds = 0.0
            joules = 0.0
            for w, r in zip(weights, scenario.requests, strict=True):
                frames = profile.frames_for(r.model, r.seconds)
                p = profile.predict(r.model, g.chip, 1, r.width, r.height, frames, r.steps)
                factor = profile.rung_factor(r.model, g.chip, r.width, r.height, frames, r.steps, lowest.level)
                seconds += w * p.seconds * factor
                joules += w * p.joules * factor
            best_s = min(best_s, seconds)
            capacity_per_s += g.count / seconds
            capacity_power_w = max(capacity_power_w, joules / seconds)
    need_devices = rate_per_s * best_s
    energy_w = rate_per_s * best_s * capacity_power_w
    reasons = []
    if rate_per_s > capacity_per_s:
        reasons.append(
            f"the demand ({scenario.demand.videos_per_day:,.0f} videos a day, {rate_per_s:.3g}/s) needs"
            f" {rate_per_s / capacity_per_s:.2f}x what every device of the fleet can render at the lowest quality rung"
            f" ({capacity_per_s:.3g} videos/s): add devices or lower the demand"
        )
    if energy_w > cap_w:
        reasons.append(
            f"serving the demand at the lowest quality draws about {energy_w / 1e6:.3g} MW at the chips, above the"
            f" caps' {cap_w / 1e6:.3g} MW: raise the caps or use chips with more performance per watt"
        )
    return {
        "servable": not reasons,
        "why_not": reasons,
        "capacity_videos_per_day_lowest_quality": round(capacity_per_s * 86400.0, 1),
        "demand_videos_per_day": scenario.demand.videos_per_day,
        "devices_needed_lowest_quality": round(need_devices, 2),
    }


def run_sites(scenario: Scenario, with_demand: bool = True, with_training: bool = True) -> list[SiteResult]:
    arrivals = site_arrivals(scenario)
    rng = np.random.default_rng(scenario.seed + 1_000_003)
    results = []
    for i in range(len(scenario.sites)):
        times, kinds = arrivals[i]
        if not with_demand:
            times, kinds = times[:0], kinds[:0]
        mult = rng.exponential(1.0, len(times)) if scenario.simulation.service_time == "exponential" else None
        sim = SiteSimulator(scenario, i, times, kinds, with_training=with_training, service_multiplier=mult)
        results.append(sim.run())
    return results


def summarise(scenario: Scenario, sites: list[SiteResult], alone: list[SiteResult]) -> dict[str, Any]:
    """The figures, as one JSON-able dict."""
    slo_s = scenario.governor.slo_s
    tariff = _tariff(scenario)
    arrival = np.concatenate([s.arrival_s for s in sites])
    start = np.concatenate([s.start_s for s in sites])
    end = np.concatenate([s.end_s for s in sites])
    shed = np.concatenate([s.shed for s in sites])
    level = np.concatenate([s.level for s in sites])
    started = np.isfinite(start)
    wait = (start - arrival)[started]
    latency = (end - arrival)[started]
    met = started & ((end - arrival) <= slo_s)
    total = len(arrival)
    # Power and energy: per period, chip watts x the facility factor.
    horizon_s = scenario.horizon_s
    n_periods = max(len(s.power_w) for s in sites)
    facility_w = np.zeros(n_periods)
    energy_j = cost_usd = co2_g = 0.0
    per_site = []
    for s, site in zip(sites, scenario.sites, strict=True):
        P = s.period_s
        spans = np.minimum(P, horizon_s - np.arange(len(s.power_w)) * P)
        fac = s.power_w * s.facility_factor
        facility_w[: len(fac)] += fac
        joules = fac * spans
        hours = ((np.arange(len(s.power_w)) * P) // 3600 % 24).astype(int)
        prices = np.array(tariff.usd_per_kwh_by_hour)[hours]
        region = get_carbon_intensity(site.carbon_region or scenario.carbon_region)
        g_per_kwh = site.carbon_g_per_kwh if site.carbon_g_per_kwh is not None else region.g_per_kwh
        energy_j += float(joules.sum())
        cost_usd += float((joules / J_PER_KWH * prices).sum())
        co2_g += float(joules.sum() / J_PER_KWH * g_per_kwh)
        cap_mw = site.power_cap_mw
        per_site.append(
            {
                "site": s.name,
                "devices": s.devices,
                "governor_units": s.units,
                "unit_size": s.extra.get("unit_size"),
                "power_cap_mw": cap_mw,
                "peak_power_mw": round(float(fac.max()) / 1e6, 6) if len(fac) else 0.0,
                "mean_power_mw": round(float(joules.sum() / max(spans.sum(), 1e-9)) / 1e6, 6),
                "over_cap_fraction": round(float(np.mean(fac > cap_mw * 1e6)), 5) if len(fac) else 0.0,
                "gate_periods": s.gate,
                "gate_reasons": s.gate_reasons,
                "gate_reason_periods": s.gate_reason_periods,
                "quality_levels_periods": {str(q): int(c) for q, c in enumerate(np.bincount(s.quality, minlength=6))},
                "requeued_requests": s.requeued,
                "alerts": s.alerts,
                "alert_examples": s.alert_examples,
            }
        )
    cap_total_mw = sum(site.power_cap_mw for site in scenario.sites)
    # Training: work done against training alone (same jobs, no video demand).
    jobs = []
    alone_jobs = {(s.name, j.name): j for s in alone for j in s.jobs}
    work_gov = work_alone = 0.0
    for s in sites:
        for j in s.jobs:
            a = alone_jobs.get((s.name, j.name))
            work_gov += j.work_s
            work_alone += a.work_s if a else 0.0
            slowdown = None
            if a is not None and a.finished_s is not None and j.finished_s is not None and a.started_s is not None:
                slowdown = (j.finished_s - a.finished_s) / max(a.finished_s - j.start_s, 1e-9)
            jobs.append(
                {
                    "site": s.name,
                    "job": j.name,
                    "status": str(j.status),
                    "started_s": j.started_s,
                    "finished_s": None if j.finished_s is None else round(j.finished_s, 1),
                    "finished_s_alone": None if a is None or a.finished_s is None else round(a.finished_s, 1),
                    "work_s": round(j.work_s, 1),
                    "work_s_alone": None if a is None else round(a.work_s, 1),
                    "slowdown": None if slowdown is None else round(slowdown, 4),
                    "reason": j.reason,
                }
            )
    training_slowdown = 1.0 - work_gov / work_alone if work_alone > 0 else 0.0
    devices = sum(s.devices for s in sites)
    serving_busy = sum(s.serving_busy_s for s in sites)
    serving_slots = sum(s.serving_slot_s for s in sites)
    training_device_s = sum(s.training_device_s for s in sites)
    answers = {
        "scenario": scenario.name,
        "horizon_s": horizon_s,
        "devices": devices,
        "requests": total,
        "served": int(started.sum()),
        "shed": int(shed.sum()),
        "unserved": int(total - started.sum() - shed.sum()),
        "slo_s": slo_s,
        "slo_attainment": round(float(met.sum() / total), 5) if total else None,
        "wait_p50_s": _pct(wait, 50),
        "wait_p99_s": _pct(wait, 99),
        "latency_mean_s": round(float(latency.mean()), 3) if len(latency) else None,
        "latency_p99_s": _pct(latency, 99),
        "quality_levels_served": {str(q): int(c) for q, c in enumerate(np.bincount(level[started], minlength=6))}
        if started.any()
        else {},
        "training_slowdown": round(training_slowdown, 5),
        "training_jobs": jobs,
        "power_cap_mw": cap_total_mw,
        "peak_power_mw": round(float(facility_w.max()) / 1e6, 6),
        "mean_power_mw": round(energy_j / horizon_s / 1e6, 6),
        "peak_power_fraction_of_cap": round(float(facility_w.max()) / (cap_total_mw * 1e6), 4),
        "energy_mwh": round(energy_j / J_PER_MWH, 6),
        "cost_usd": round(cost_usd, 2),
        "co2_t": round(co2_g / 1e6, 4),
        "usd_per_video": round(cost_usd / started.sum(), 5) if started.any() else None,
        "serving_utilization": round(serving_busy / serving_slots, 4) if serving_slots else None,
        "fleet_utilization": round((serving_busy + training_device_s) / (devices * horizon_s), 4) if devices else None,
        "feasibility": feasibility(scenario),
        "sites": per_site,
    }
    return answers


def plan(scenario: Scenario) -> PlanResult:
    """Simulate `scenario` and answer its questions (the scenario's `search` block adds the capacity searches)."""
    t0 = time.perf_counter()
    sites = run_sites(scenario)
    alone = run_sites(scenario, with_demand=False) if scenario.training else []
    answers = summarise(scenario, sites, alone)
    events = sum(s.events for s in sites)
    wall_s = time.perf_counter() - t0
    answers["simulator"] = {
        "wall_s": round(wall_s, 3),
        "events": events,
        "events_per_s": round(events / wall_s, 1) if wall_s > 0 else None,
        "governor_ticks": sum(s.decide_calls for s in sites),
    }
    result = PlanResult(scenario, answers, sites, alone, wall_s)
    search = scenario.search
    if search.max_users:
        answers["max_users"] = max_users(scenario, search.quality_level, search.max_training_slowdown)
    if search.chips:
        answers["cheapest_chip"] = cheapest_chip(scenario, search.chips, search.usd_per_device_hour)
    if search.compare_with_base_chip:
        answers["custom_chip_what_if"] = compare_custom_chip(scenario, answers)
    return result


# --- capacity search ----------------------------------------------------------------------------------------------


def _meets(answers: dict[str, Any], scenario: Scenario, quality_level: int, max_slowdown: float) -> bool:
    served_levels = answers["quality_levels_served"]
    served = sum(served_levels.values())
    at_quality = sum(c for q, c in served_levels.items() if int(q) <= quality_level)
    return (
        answers["slo_attainment"] is not None
        and answers["slo_attainment"] >= scenario.governor.slo_target
        and served > 0
        and at_quality / served >= scenario.governor.slo_target
        and answers["training_slowdown"] <= max_slowdown
        and all(s["over_cap_fraction"] <= 0.01 for s in answers["sites"])
    )


def _with_users(scenario: Scenario, users: float) -> Scenario:
    return scenario.model_copy(update={"demand": scenario.demand.model_copy(update={"users": users})})


def _evaluate(scenario: Scenario, alone: list[SiteResult]) -> dict[str, Any]:
    return summarise(scenario, run_sites(scenario), alone)


def max_users(
    scenario: Scenario, quality_level: int = 0, max_slowdown: float = 0.05, probes: int = 8
) -> dict[str, Any]:
    """The most users (at the scenario's videos per user) served with SLO attainment >= slo_target, at least
    slo_target of them at quality rung <= `quality_level`, training slowed at most `max_slowdown`, and power over the
    cap in at most 1% of periods. Bisection over `probes` simulated runs (the answer is within the last bracket)."""
    alone = run_sites(scenario, with_demand=False) if scenario.training else []
    per_user = max(scenario.demand.videos_per_user_per_day, 1e-9)
    cap = feasibility(_with_users(scenario, 1.0), level=quality_level)["capacity_videos_per_day_lowest_quality"]
    cap /= per_user
    lo, hi = 0.0, max(2 * cap, 1.0)  # twice what every device could render at that rung: surely too many
    tried = []
    for _ in range(probes):
        mid = (lo + hi) / 2
        ok = _meets(_evaluate(_with_users(scenario, mid), alone), scenario, quality_level, max_slowdown)
        tried.append({"users": round(mid), "meets": ok})
        lo, hi = (mid, hi) if ok else (lo, mid)
    return {
        "users": round(lo),
        "bracket": [round(lo), round(hi)],
        "quality_level": quality_level,
        "max_training_slowdown": max_slowdown,
        "probes": tried,
    }


def _swap_chip(scenario: Scenario, chip: str, count_scale: float = 1.0) -> Scenario:
    sites = []
    for site in scenario.sites:
        devices = [
            g.model_copy(update={"chip": chip, "count": max(1 if g.count else 0, round(g.count * count_scale))})
            for g in site.devices
        ]
        sites.append(site.model_copy(update={"devices": devices}))
    return scenario.model_copy(update={"sites": sites})


def cheapest_chip(scenario: Scenario, chips: list[str], usd_per_device_hour: dict[str, float]) -> dict[str, Any]:
    """For each chip, the fewest devices (the scenario's pools scaled together) that serve its demand under its
    caps with the SLO met, and what a day of that fleet costs (device-hours at `usd_per_device_hour` plus
    electricity). Cheapest first."""
    rows = []
    for chip in chips:
        if chip not in scenario.chips():
            raise ScenarioError(f"search.chips: unknown chip {chip!r}")
        lo, hi = 0.0, 4.0
        best: dict[str, Any] | None = None
        for _ in range(6):
            mid = (lo + hi) / 2
            candidate = _swap_chip(scenario, chip, mid)
            try:
                alone = run_sites(candidate, with_demand=False) if candidate.training else []
                answers = _evaluate(candidate, alone)
                ok = _meets(answers, candidate, 5, scenario.search.max_training_slowdown)
            except ScenarioError:
                ok, answers = False, None
            if ok:
                hi, best = mid, answers
            else:
                lo = mid
        if best is None:
            rows.append({"chip": chip, "meets": False})
            continue
        devices = best["devices"]
        hourly = usd_per_device_hour.get(chip)
        hardware = None if hourly is None else devices * hourly * scenario.horizon_s / 3600
        rows.append(
            {
                "chip": chip,
                "meets": True,
                "devices": devices,
                "energy_usd": best["cost_usd"],
                "hardware_usd": None if hardware is None else round(hardware, 2),
                "total_usd": round(best["cost_usd"] + (hardware or 0.0), 2),
                "slo_attainment": best["slo_attainment"],
                "peak_power_mw": best["peak_power_mw"],
            }
        )
    rows.sort(key=lambda r: (not r["meets"], r.get("total_usd", math.inf)))
    return {"ranking": rows}


def compare_custom_chip(scenario: Scenario, answers: dict[str, Any]) -> dict[str, Any]:
    """The same scenario with every custom chip replaced by its base chip: what the custom chip changes."""
    bases = {c.key: c.base for c in scenario.custom_chips}
    if not bases:
        return {"note": "the scenario defines no custom chips"}
    sites = []
    for site in scenario.sites:
        devices = [g.model_copy(update={"chip": bases.get(g.chip, g.chip)}) for g in site.devices]
        sites.append(site.model_copy(update={"devices": devices}))
    base = scenario.model_copy(update={"sites": sites})
    alone = run_sites(base, with_demand=False) if base.training else []
    base_answers = _evaluate(base, alone)
    keys = ("slo_attainment", "wait_p99_s", "training_slowdown", "peak_power_mw", "energy_mwh", "cost_usd", "co2_t")
    return {
        "custom_chips": bases,
        "with_custom": {k: answers[k] for k in keys},
        "with_base": {k: base_answers[k] for k in keys},
        "quality_levels_served_with_base": base_answers["quality_levels_served"],
    }

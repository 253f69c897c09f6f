"""The planner's scale target: one simulated day of a 100,000-accelerator fleet serving 10 million video requests
in at most 60 s on a 2-core machine, memory at most 4 GB; events per second next to an equivalent SimPy model.

Runs the shipped `national` scenario (two sites, 100,000 devices, 10 million requests, the governor every 60
simulated seconds) through the simulator, timed from arrivals to results (the training-alone baseline run is not
part of the day). Then the same first site's arrivals through an equivalent SimPy model (the site's serving devices
as one `simpy.Resource`, one process per request: arrive, wait for a device, hold it for the profile's service time;
no governor), on the first `--simpy-requests` requests, since SimPy would take many minutes for the whole day.
Events are counted the same way in both: an arrival, a start and a completion per request.

Prints one JSON line. Usage: python benchmarks/planner_scale.py [--scenario national] [--simpy-requests 300000]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import simpy

from _machine import machine_facts
from garrison.planner.profiles import CostProfile
from garrison.planner.scenario import load_scenario
from garrison.planner.sim import SiteSimulator, site_arrivals


def simpy_events_per_s(arrivals_s: np.ndarray, kinds: np.ndarray, service_s: np.ndarray, servers: int) -> dict:
    """The FIFO multi-server queue of one site in SimPy; returns wall time, events and mean wait."""
    env = simpy.Environment()
    fleet = simpy.Resource(env, capacity=servers)
    waits: list[float] = []

    def request(arrival_s: float, seconds: float):
        yield env.timeout(arrival_s - env.now)
        with fleet.request() as slot:
            yield slot
            waits.append(env.now - arrival_s)
            yield env.timeout(seconds)

    def source():
        # One process per request as it arrives (creating all 10^5+ processes up front would only add memory).
        for a, k in zip(arrivals_s.tolist(), kinds.tolist(), strict=True):
            yield env.timeout(a - env.now)
            env.process(request(a, float(service_s[k])))

    t0 = time.perf_counter()
    env.process(source())
    env.run()
    wall_s = time.perf_counter() - t0
    events = 3 * len(arrivals_s)
    return {
        "wall_s": round(wall_s, 3),
        "requests": len(arrivals_s),
        "events": events,
        "events_per_s": round(events / wall_s),
        "mean_wait_s": float(np.mean(waits)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="national")
    ap.add_argument("--simpy-requests", type=int, default=300_000)
    args = ap.parse_args()
    scenario = load_scenario(args.scenario)

    t0 = time.perf_counter()
    arrivals = site_arrivals(scenario)
    t_arrivals = time.perf_counter() - t0
    results = []
    for i in range(len(scenario.sites)):
        results.append(SiteSimulator(scenario, i, *arrivals[i]).run())
    wall_s = time.perf_counter() - t0
    requests = sum(len(r.arrival_s) for r in results)
    events = sum(r.events for r in results)
    started = sum(int(np.isfinite(r.start_s).sum()) for r in results)
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2

    # SimPy on the first site's first requests, same service times (rung 0, the profile's seconds).
    site = scenario.sites[0]
    profile = CostProfile(catalog=scenario.chips())
    chip = site.devices[0].chip
    service = np.array(
        [
            profile.predict(
                r.model, chip, 1, r.width, r.height, profile.frames_for(r.model, r.seconds), r.steps
            ).seconds
            for r in scenario.requests
        ]
    )
    servers = sum(g.count for g in site.devices if g.pool == "serving")
    n = min(args.simpy_requests, len(arrivals[0][0]))
    sp = simpy_events_per_s(arrivals[0][0][:n], arrivals[0][1][:n], service, servers)

    print(
        json.dumps(
            {
                "benchmark": "planner_scale",
                "scenario": scenario.name,
                "devices": sum(r.devices for r in results),
                "governor_units": sum(r.units for r in results),
                "requests": requests,
                "requests_started": started,
                "governor_ticks": sum(r.decide_calls for r in results),
                "wall_s": round(wall_s, 2),
                "arrivals_wall_s": round(t_arrivals, 2),
                "events": events,
                "events_per_s": round(events / wall_s),
                "peak_rss_gb": round(peak_rss_gb, 3),
                "simpy": sp,
                "speedup_vs_simpy": round((events / wall_s) / sp["events_per_s"], 1),
                "targets": {"wall_s": 60, "peak_rss_gb": 4},
                "machine": machine_facts(),
            }
        )
    )


if __name__ == "__main__":
    main()

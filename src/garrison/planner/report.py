"""The planner's report: one HTML page a person reads in a minute, with the answers first and charts below.

Charts (matplotlib, Agg, embedded as PNG, as governor/report.py): facility power against the cap per site;
devices serving and training; queue depth and quality rung; the distribution of waits.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from garrison.planner.plan import PlanResult  # noqa: E402


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _hours(n: int, period_s: float) -> np.ndarray:
    return np.arange(n) * period_s / 3600.0


def charts(result: PlanResult) -> dict[str, str]:
    """Base64 PNGs by chart name."""
    out: dict[str, str] = {}
    fig, ax = plt.subplots(figsize=(9, 3))
    for s, site in zip(result.sites, result.scenario.sites, strict=True):
        t = _hours(len(s.power_w), s.period_s)
        line = ax.plot(t, s.power_w * s.facility_factor / 1e6, label=f"{s.name} power (MW)")[0]
        ax.axhline(site.power_cap_mw, color=line.get_color(), linestyle="--", linewidth=1, label=f"{s.name} cap")
    ax.set(xlabel="hour", ylabel="MW (facility)", title="Power against the cap")
    ax.legend(loc="lower right", fontsize=8)
    out["power"] = _png(fig)

    fig, ax = plt.subplots(figsize=(9, 3))
    serving = sum(s.serving_devices.astype(float) for s in result.sites)
    training = sum(s.training_devices.astype(float) for s in result.sites)
    t = _hours(len(serving), result.sites[0].period_s)
    ax.stackplot(t, training, serving, labels=["training", "serving"], colors=["#1f77b4", "#2ca02c"])
    ax.set(xlabel="hour", ylabel="devices", title="Allocation")
    ax.legend(loc="upper left", fontsize=8)
    out["allocation"] = _png(fig)

    fig, ax = plt.subplots(figsize=(9, 3))
    queue = sum(s.queue_depth.astype(float) for s in result.sites)
    ax.plot(t, queue, color="#9467bd", label="queue depth")
    ax.set(xlabel="hour", ylabel="requests waiting", title="Queue and quality rung")
    ax2 = ax.twinx()
    ax2.step(t, result.sites[0].quality, color="#ff7f0e", where="post", label=f"quality rung ({result.sites[0].name})")
    ax2.set_ylabel("rung (0 = full)")
    ax2.set_ylim(-0.2, 5.2)
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    out["queue"] = _png(fig)

    waits = np.concatenate([(s.start_s - s.arrival_s)[np.isfinite(s.start_s)] for s in result.sites])
    fig, ax = plt.subplots(figsize=(9, 3))
    if len(waits):
        ax.hist(np.maximum(waits, 1e-3), bins=np.logspace(-3, np.log10(max(waits.max(), 1.0)) + 0.1, 60))
        ax.set_xscale("log")
    ax.axvline(result.scenario.governor.slo_s, color="black", linestyle="--", label="SLO")
    ax.set(xlabel="wait before start (s)", ylabel="requests", title="Waits")
    ax.legend(fontsize=8)
    out["waits"] = _png(fig)
    return out


def _headline(a: dict[str, Any]) -> list[tuple[str, str]]:
    def f(value: Any, spec: str = "") -> str:
        return "n/a" if value is None else format(value, spec)

    feas = a["feasibility"]
    return [
        ("Can the demand be served?", "yes" if feas["servable"] else "no: " + " ".join(feas["why_not"])),
        ("Requests", f"{a['requests']:,} ({a['served']:,} served, {a['shed']:,} shed, {a['unserved']:,} unserved)"),
        ("SLO attainment", f"{f(a['slo_attainment'], '.2%')} within {a['slo_s']:.0f} s"),
        ("Wait p50 / p99", f"{f(a['wait_p50_s'], '.1f')} s / {f(a['wait_p99_s'], '.1f')} s"),
        ("Training slowdown vs alone", f"{a['training_slowdown']:.2%}"),
        (
            "Power peak / mean / cap",
            f"{a['peak_power_mw']:.4g} / {a['mean_power_mw']:.4g} / {a['power_cap_mw']:.4g} MW",
        ),
        ("Energy, cost, CO2", f"{a['energy_mwh']:.4g} MWh, ${a['cost_usd']:,.2f}, {a['co2_t']:.4g} t"),
        ("Utilisation (serving / fleet)", f"{f(a['serving_utilization'], '.1%')} / {f(a['fleet_utilization'], '.1%')}"),
    ]


def write_report(result: PlanResult, out_dir: Path) -> Path:
    """Write report.html and answers.json into `out_dir`; returns the HTML's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    a = result.answers
    (out_dir / "answers.json").write_text(json.dumps(a, indent=2, default=str))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _headline(a))
    images = "".join(
        f'<h2>{html.escape(name)}</h2><img alt="{html.escape(name)}" src="data:image/png;base64,{png}">'
        for name, png in charts(result).items()
    )
    scenario = result.scenario
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>garrison plan: {html.escape(scenario.name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}th,td{{text-align:left;padding:4px 12px;border-bottom:1px solid #ddd}}
img{{max-width:100%}}pre{{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}}</style></head>
<body><h1>garrison plan: {html.escape(scenario.name)}</h1>
<p>{html.escape(scenario.description)}</p>
<p>Simulated {scenario.horizon_s / 3600:.1f} h of {a["devices"]:,} devices in {len(scenario.sites)} site(s), the
governor's own policies every {scenario.governor.control_period_s:g} s of simulated time
({a["simulator"]["wall_s"]:.1f} s of wall time). Figures are predictions from calibrated cost profiles, not
measurements.</p>
<table>{rows}</table>
{images}
<h2>All figures</h2><pre>{html.escape(json.dumps(a, indent=2, default=str))}</pre>
</body></html>"""
    path = out_dir / "report.html"
    path.write_text(page)
    return path

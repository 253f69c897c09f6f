"""The demo's report: an HTML page with charts (matplotlib, embedded as PNG) drawn from the store's samples.

Charts: fleet power against the cap; allocation over time (training, serving, lent, draining, idle devices); queue
depth and request latency; training throughput (steps reported per control period).
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

from garrison.core.fleet import VideoStatus  # noqa: E402
from garrison.store import Store  # noqa: E402

ALLOCATION_COLOURS = {
    "training": "#1f77b4",
    "serving": "#2ca02c",
    "lent": "#98df8a",
    "draining": "#ff7f0e",
    "idle": "#c7c7c7",
}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def charts(store: Store, since: float) -> dict[str, str]:
    """Base64 PNGs by chart name."""
    samples = store.list_samples(since=since, limit=100_000)
    if not samples:
        return {}
    t0 = samples[0].ts
    t = [s.ts - t0 for s in samples]
    out: dict[str, str] = {}

    fig, ax = plt.subplots(figsize=(9, 3))
    ax.plot(t, [s.power_w for s in samples], color="#d62728", label="fleet power (W)")
    ax.plot(t, [s.power_cap_w for s in samples], color="black", linestyle="--", label="cap (W)")
    source = samples[-1].extra.get("power_source", "")
    ax.set(xlabel="seconds", ylabel="W", title=f"Fleet power against the cap ({source})")
    ax.legend(loc="lower right")
    out["power"] = _png(fig)

    fig, ax = plt.subplots(figsize=(9, 3))
    keys = list(ALLOCATION_COLOURS)
    ax.stackplot(
        t,
        [[s.allocation.get(k, 0) for s in samples] for k in keys],
        labels=keys,
        colors=[ALLOCATION_COLOURS[k] for k in keys],
        step="post",
    )
    ax.set(xlabel="seconds", ylabel="devices", title="Allocation over time")
    ax.legend(loc="upper left", ncols=5, fontsize="small")
    out["allocation"] = _png(fig)

    fig, ax = plt.subplots(figsize=(9, 3))
    ax.step(t, [s.queue_depth for s in samples], where="post", color="#9467bd", label="queued requests")
    ax.step(t, [s.extra.get("quality_level", 0) for s in samples], where="post", color="#8c564b", label="quality rung")
    ax.set(xlabel="seconds", ylabel="count / rung", title="Queue and quality level")
    ax2 = ax.twinx()
    done = [
        v
        for v in store.recent_videos(since)
        if v.status == VideoStatus.COMPLETED and v.completed_at is not None and v.completed_at >= t0
    ]
    ax2.scatter([v.completed_at - t0 for v in done], [v.completed_at - v.created_at for v in done], s=12,
                color="#17becf", label="latency of each video (s)")  # fmt: skip
    ax2.set_ylabel("latency (s)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right", fontsize="small")
    out["queue"] = _png(fig)

    fig, ax = plt.subplots(figsize=(9, 3))
    job_ids = sorted({j for s in samples for j in s.extra.get("jobs", {})})
    for job_id in job_ids:
        steps = [s.extra.get("jobs", {}).get(job_id) for s in samples]
        pts = [(ti, st) for ti, st in zip(t, steps, strict=True) if st is not None]
        rate = [
            (pts[i][0], (pts[i][1] - pts[i - 1][1]) / max(pts[i][0] - pts[i - 1][0], 1e-9)) for i in range(1, len(pts))
        ]
        if rate:
            ax.plot([r[0] for r in rate], [r[1] for r in rate], label=f"{job_id} steps/s")
    ax.set(xlabel="seconds", ylabel="steps/s", title="Training throughput (per control period)")
    if job_ids:
        ax.legend(loc="lower right", fontsize="small")
    out["training"] = _png(fig)
    return out


def write_report(store: Store, out_dir: Path, summary: dict[str, Any], since: float) -> Path:
    """Write report.html (charts inline) and the charts as PNG files; returns the HTML path."""
    images = charts(store, since)
    (out_dir / "charts").mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (out_dir / "charts" / f"{name}.png").write_bytes(base64.b64decode(data))
    decisions = store.list_decisions(since=since, limit=100_000)
    rows = "\n".join(
        f"<tr><td>{d.tick}</td><td>{html.escape(d.action)}</td><td>{html.escape(d.target or '')}</td>"
        f"<td>{html.escape(d.reason)}</td></tr>"
        for d in decisions[:400]
    )
    figures = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(json.dumps(v))}</td></tr>"
        for k, v in summary.items()
        if k != "config"
    )
    imgs = "\n".join(
        f'<h2>{name}</h2><img alt="{name}" src="data:image/png;base64,{data}">' for name, data in images.items()
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>garrison demo</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ddd;padding:3px 8px;text-align:left;font-size:13px}}img{{max-width:100%}}</style></head>
<body><h1>garrison demo: training and serving on one fleet under a power cap</h1>
<p>Power source: <b>{html.escape(str(summary.get("power_source")))}</b>
{"(a stated model, not a hardware counter: see <code>garrison energy info</code>)" if summary.get("power_source") == "estimate" else ""}.
</p>
<h2>Figures</h2><table>{figures}</table>
{imgs}
<h2>Governor decisions ({len(decisions)})</h2>
<table><tr><th>tick</th><th>action</th><th>target</th><th>reason</th></tr>{rows}</table>
</body></html>
"""
    path = out_dir / "report.html"
    path.write_text(page)
    return path

"""Prometheus metrics, one registry per app: request latency measured here, everything else read from the store.

The server is stateless over the store, so queue depth, power, joules and the gate are read at scrape time from
what the store holds (the governor writes power and the gate each control period). Where the governor has not
reported, the gauge is absent rather than a made-up zero, and `garrison_governor_reporting` is 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Non-generating endpoints answer in milliseconds; buckets reach 10 s for uploads to /v1/verify.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
GATE_STATES = ("online", "degraded", "offline")  # governor.gate's verdicts
GOVERNOR_STALE_S = 30.0  # a governor silent this long is shown as stale


class StoreCollector(Collector):
    """Gauges read from the store at scrape time."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        stats = self.store.queue_stats()
        yield _gauge("garrison_queue_depth", "Videos queued, not yet claimed by a worker.", stats.queued)
        yield _gauge("garrison_videos_in_progress", "Videos being generated now.", stats.in_progress)
        if stats.oldest_queued_age_s is not None:
            yield _gauge(
                "garrison_queue_oldest_age_seconds", "Age of the oldest queued video.", stats.oldest_queued_age_s
            )
        yield _gauge(
            "garrison_videos_completed_last_minute", "Videos completed in the last minute.", stats.completed_last_minute
        )
        yield _gauge(
            "garrison_video_joules_last_minute",
            "Measured joules of the videos completed in the last minute.",
            stats.joules_last_minute,
        )
        yield _gauge(
            "garrison_videos_failed_last_minute", "Videos failed in the last minute.", stats.failed_last_minute
        )
        samples = self.store.list_samples(limit=1)
        sample = samples[-1] if samples else None
        reporting = sample is not None and time.time() - sample.ts <= GOVERNOR_STALE_S
        yield _gauge("garrison_governor_reporting", "1 when the governor reported in the last 30 s.", int(reporting))
        if sample is not None:
            yield _gauge("garrison_fleet_power_watts", "Fleet power at the governor's last sample.", sample.power_w)
            yield _gauge("garrison_fleet_power_cap_watts", "Fleet power cap.", sample.power_cap_w)
            yield _gauge(
                "garrison_governor_sample_age_seconds", "Age of the last governor sample.", time.time() - sample.ts
            )
        gate = gate_state(self.store)[0]
        family = GaugeMetricFamily("garrison_gate_state", "Deployment gate: 1 for the current state.", labels=["state"])
        for state in GATE_STATES if gate in GATE_STATES else (*GATE_STATES, gate):
            family.add_metric([state], 1.0 if state == gate else 0.0)
        yield family
        level = self.store.get_setting("serving.quality_level", None)
        if level is not None:
            yield _gauge("garrison_serving_quality_level", "Quality ladder rung serving renders at.", float(level))


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def gate_state(store: Any) -> tuple[str, str]:
    """(state, reason) of the deployment gate as the governor last wrote it; "offline" when it never has."""
    state = store.get_setting("gate.state", None)
    if state is None:
        return "offline", "the governor has not reported"
    return str(state), str(store.get_setting("gate.reason", "") or "")


class AppMetrics:
    """The app's registry and its request-latency histogram."""

    def __init__(self, store: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_latency_s = Histogram(
            "garrison_http_request_duration_seconds",
            "Latency of HTTP requests by route template, method and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(StoreCollector(store))

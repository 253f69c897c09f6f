"""energy_fields: the dict `garrison generate --json` merges, computed from one measurement."""

from __future__ import annotations

import json

import pytest

from garrison.core.types import Measurement
from garrison.energy.report import energy_fields
from garrison.hardware.catalog import get_chip

REQUIRED = {"joules", "energy_source", "cost_usd", "co2_g", "wh", "efficiency_vs_limit", "min_joules"}


def measurement(joules: float = 7200.0, source: str = "nvml", notes: tuple[str, ...] = ()) -> Measurement:
    return Measurement(
        name="gen", seconds=12.0, joules_by_device={"gpu:0": joules}, source=source, start_unix_s=1.7e9, notes=notes
    )


def test_fields_for_a_gpu_generation():
    flops = get_chip("h100-sxm").flop_per_joule() * 720.0  # the limit would be 720 J
    f = energy_fields(measurement(), flops, "h100-sxm", region="fr", price=0.1)
    assert REQUIRED <= set(f)
    assert f["joules"] == 7200.0
    assert f["energy_source"] == "nvml"
    assert f["wh"] == pytest.approx(2.0)
    assert f["cost_usd"] == pytest.approx(0.002 * 0.1)
    assert f["co2_g"] == pytest.approx(0.002 * 60)
    assert f["min_joules"] == pytest.approx(720.0)
    assert f["efficiency_vs_limit"] == pytest.approx(10.0)
    assert f["chip"] == "h100-sxm"
    json.dumps(f)  # printable as is


def test_estimate_label_and_notes_carry_through():
    f = energy_fields(measurement(source="estimate", notes=("held",)), None, None)
    assert f["energy_source"] == "estimate"
    assert f["energy_notes"] == ["held"]
    assert f["min_joules"] is None and f["efficiency_vs_limit"] is None
    assert f["region"] == "world" and f["tariff"] == "flat"


def test_time_of_day_price_uses_the_window_time():
    f = energy_fields(measurement(), None, "h100-sxm", price="tou")  # starts 2023-11-14 14:13:20 in Los Angeles
    assert f["tariff"] == "tou"
    assert f["usd_per_kwh"] == pytest.approx(0.10)  # the 14:00 hour of the shipped curve
    assert f["cost_usd"] == pytest.approx(0.002 * f["usd_per_kwh"])


def test_bad_region_or_price_is_an_error():
    with pytest.raises(ValueError, match="unknown region"):
        energy_fields(measurement(), None, None, region="moon")
    with pytest.raises(ValueError, match="unknown tariff"):
        energy_fields(measurement(), None, None, price="free")

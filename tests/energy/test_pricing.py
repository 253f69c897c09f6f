"""Pricing: unit arithmetic, flat and time-of-day cost (DST included), carbon, configuration, the physical limit."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from garrison.core.types import Device
from garrison.energy.pricing import (
    Tariff,
    co2_g,
    cost_usd,
    efficiency_vs_limit,
    get_carbon_intensity,
    get_tariff,
    joules_to_kwh,
    joules_to_wh,
    load_tariffs,
    min_joules,
)
from garrison.hardware.catalog import UnknownChipError, get_chip

KWH_J = 3.6e6


def unix(tz: str, *args: int) -> float:
    return datetime(*args, tzinfo=ZoneInfo(tz)).timestamp()


def test_units():
    assert joules_to_wh(3600.0) == 1.0
    assert joules_to_kwh(KWH_J) == 1.0


def test_flat_price():
    assert cost_usd(KWH_J, 0.25) == pytest.approx(0.25)
    assert cost_usd(2 * KWH_J) == pytest.approx(2 * 0.08)  # the shipped default: US industrial average
    assert get_tariff().is_flat and "EIA" in get_tariff().source


def test_time_of_day_price_within_and_across_hours():
    tou = get_tariff("tou")
    la = "America/Los_Angeles"
    assert tou.cost_usd(KWH_J, unix(la, 2024, 6, 1, 3, 0), 600) == pytest.approx(0.06)  # night
    assert tou.cost_usd(KWH_J, unix(la, 2024, 6, 1, 17, 0), 600) == pytest.approx(0.16)  # evening peak
    # 15:30-16:30: half at the 15h price, half at the 16h peak
    assert tou.cost_usd(KWH_J, unix(la, 2024, 6, 1, 15, 30), 3600) == pytest.approx((0.10 + 0.16) / 2)


def test_time_of_day_across_a_daylight_saving_change():
    # price = the hour's number, so the hours a window touches can be read back from its mean price
    hourly = Tariff("hours", tuple(float(h) for h in range(24)), timezone="America/Los_Angeles")
    # 2024-03-10 01:30 PST + 1 real hour: 30 min of hour 1, then clocks jump 02:00 -> 03:00, 30 min of hour 3
    start = unix("America/Los_Angeles", 2024, 3, 10, 1, 30)
    assert hourly.average_usd_per_kwh(start, 3600) == pytest.approx((1 + 3) / 2)


def test_tariff_validation():
    with pytest.raises(ValueError, match="24 hourly"):
        Tariff("short", (0.1,) * 23)
    with pytest.raises(ValueError, match=">= 0"):
        Tariff("neg", (-0.1,) * 24)
    with pytest.raises(ValueError, match="timezone"):
        Tariff("tz", (0.1,) * 24, timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="unknown tariff"):
        get_tariff("free")
    with pytest.raises(ValueError, match="joules"):
        get_tariff().cost_usd(-1.0)


def test_carbon():
    assert co2_g(KWH_J, "fr") == pytest.approx(60.0)
    assert co2_g(KWH_J) == pytest.approx(480.0)  # world average by default
    assert "Ember" in get_carbon_intensity("se").source
    with pytest.raises(ValueError, match="unknown region"):
        co2_g(1.0, "atlantis")


def test_configuration_from_env_and_home(isolated_home, monkeypatch):
    monkeypatch.setenv("GARRISON_TARIFF", "tou")
    assert get_tariff().name == "tou"
    monkeypatch.setenv("GARRISON_USD_PER_KWH", "0.3")
    assert cost_usd(KWH_J) == pytest.approx(0.3)
    monkeypatch.setenv("GARRISON_REGION", "NO")
    assert get_carbon_intensity().region == "no"
    monkeypatch.setenv("GARRISON_CO2_G_PER_KWH", "123")
    assert co2_g(KWH_J) == pytest.approx(123.0)
    monkeypatch.setenv("GARRISON_USD_PER_KWH", "cheap")
    with pytest.raises(ValueError, match="GARRISON_USD_PER_KWH"):
        get_tariff()

    (isolated_home / "energy").mkdir(parents=True)
    (isolated_home / "energy" / "tariffs.json").write_text(
        json.dumps({"ppa": {"usd_per_kwh": 0.045, "source": "our PPA"}})
    )
    (isolated_home / "energy" / "carbon_intensity.json").write_text(
        json.dumps({"_source": "utility", "regions": {"site-a": 20}})
    )
    assert set(load_tariffs()) == {"flat", "tou", "ppa"}
    assert cost_usd(KWH_J, "ppa") == pytest.approx(0.045)
    assert co2_g(KWH_J, "site-a") == pytest.approx(20.0)


def test_min_joules_and_efficiency_on_h100():
    h100 = get_chip("h100-sxm")
    flops = h100.flop_per_joule() * 100.0  # exactly 100 J of work at the limit
    assert min_joules(flops, "h100-sxm") == pytest.approx(100.0)
    assert efficiency_vs_limit(300.0, flops, h100) == pytest.approx(3.0)
    gpu = Device(id="gpu:0", kind="gpu", index=0, name="NVIDIA H100 80GB HBM3", chip="h100-sxm")
    assert efficiency_vs_limit(300.0, flops, gpu) == pytest.approx(3.0)
    # fp8 doubles the peak on B200, so the same FLOPs have half the floor
    assert min_joules(1e15, "b200", "fp8") == pytest.approx(min_joules(1e15, "b200", "bf16") / 2)


def test_efficiency_on_the_cpu_uses_its_cached_peak(cpu_peak_cache):
    cpu_peak_cache(fp32_flops=100e9, bf16_flops=200e9)
    cpu = Device(id="cpu:0", kind="cpu", index=0, name="this CPU", chip="cpu", cores=2)
    # default power model: 5.6 W per core; cores counted on this machine
    from garrison.hardware.cpu import CpuPowerModel

    tdp_w = CpuPowerModel().tdp_w
    assert min_joules(1e12, cpu, "fp32") == pytest.approx(1e12 / (100e9 / tdp_w))


def test_limit_bad_input():
    with pytest.raises(ValueError, match="flops > 0"):
        efficiency_vs_limit(10.0, 0.0, "h100-sxm")
    with pytest.raises(ValueError, match="flops"):
        min_joules(-1.0, "h100-sxm")
    with pytest.raises(UnknownChipError):
        efficiency_vs_limit(10.0, 1e12, "h900")

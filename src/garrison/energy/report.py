"""The energy fields of a generation or training record, as `garrison generate --json` and the API print them."""

from __future__ import annotations

from typing import Any

from garrison.core.types import Device, Measurement
from garrison.energy.pricing import (
    get_carbon_intensity,
    get_tariff,
    joules_to_wh,
    min_joules,
    resolve_chip,
)
from garrison.hardware.catalog import DEFAULT_DTYPE, Chip


def energy_fields(
    measurement: Measurement,
    flops: float | None,
    device: Device | Chip | str | None,
    region: str | None = None,
    price: str | float | None = None,
    dtype: str = DEFAULT_DTYPE,
) -> dict[str, Any]:
    """Joules, where they came from, what they cost, their CO2, and how far they sit from the hardware's limit.

    Args:
        measurement: the meter window of the generation (or training step).
        flops: analytic FLOPs of the work; None or 0 leaves `min_joules` and `efficiency_vs_limit` None.
        device: the device it ran on (Device, catalog Chip or chip key); None leaves the limit fields None.
        region: grid region for CO2 (default: GARRISON_REGION or "world").
        price: tariff name or flat USD/kWh (default: GARRISON_USD_PER_KWH, GARRISON_TARIFF or "flat").
        dtype: the precision whose peak is the limit ("bf16" unless the work ran in another).

    Returns:
        A flat dict: `joules`, `energy_source`, `seconds`, `wh`, `cost_usd`, `co2_g`, `min_joules`,
        `efficiency_vs_limit`, plus the figures they rest on (`usd_per_kwh`, `tariff`, `g_co2_per_kwh`, `region`,
        `chip`, `peak_flop_per_joule`) and `energy_notes` (corrections the meter made; empty when none).
    """
    joules = measurement.joules
    tariff = get_tariff(price)
    carbon = get_carbon_intensity(region)
    usd_per_kwh = tariff.average_usd_per_kwh(measurement.start_unix_s, measurement.seconds)
    fields: dict[str, Any] = {
        "joules": joules,
        "energy_source": measurement.source,
        "seconds": measurement.seconds,
        "wh": joules_to_wh(joules),
        "cost_usd": tariff.cost_usd(joules, measurement.start_unix_s, measurement.seconds),
        "co2_g": carbon.co2_g(joules),
        "usd_per_kwh": usd_per_kwh,
        "tariff": tariff.name,
        "g_co2_per_kwh": carbon.g_per_kwh,
        "region": carbon.region,
        "min_joules": None,
        "efficiency_vs_limit": None,
        "chip": None,
        "peak_flop_per_joule": None,
        "energy_notes": list(measurement.notes),
    }
    if device is not None:
        chip = resolve_chip(device)
        fields["chip"] = chip.key
        fields["peak_flop_per_joule"] = chip.flop_per_joule(dtype)
        if flops:
            floor_j = min_joules(flops, chip, dtype)
            fields["min_joules"] = floor_j
            fields["efficiency_vs_limit"] = joules / floor_j
    return fields

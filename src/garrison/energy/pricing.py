"""Joules into Wh, dollars and grams of CO2, and against the physical limit of the hardware.

Tables ship with garrison in `garrison/energy/data/` (sources named in each file and in its README):
- `tariffs.json`: a flat price (US industrial average) and an illustrative time-of-day curve;
- `carbon_intensity.json`: grid carbon intensity per region (Ember, 2023).

Configuration, later wins: the shipped tables; `$GARRISON_HOME/energy/tariffs.json` and
`$GARRISON_HOME/energy/carbon_intensity.json` in the same shapes (entries added or replaced); the environment:
`GARRISON_TARIFF` (a tariff name), `GARRISON_USD_PER_KWH` (a flat price), `GARRISON_REGION` (a region key),
`GARRISON_CO2_G_PER_KWH` (an intensity); and finally the arguments a caller passes.

The limit: `min_joules(flops, chip)` = FLOPs / (peak FLOP/s / TDP), the least energy the chip could spend on that
work at full utilisation; `efficiency_vs_limit` = measured joules / that minimum (1.0 would be perfect; a real run
is higher, and how much higher is the headroom).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from garrison.core.types import Device
from garrison.hardware.catalog import DEFAULT_DTYPE, Chip, garrison_home, get_chip
from garrison.hardware.devices import chip_for_device

DATA_DIR = Path(__file__).with_name("data")
J_PER_WH = 3600.0
J_PER_KWH = 3.6e6
DEFAULT_TARIFF = "flat"
DEFAULT_REGION = "world"
TARIFF_SLOT_S = 900.0


def joules_to_wh(joules: float) -> float:
    return joules / J_PER_WH


def joules_to_kwh(joules: float) -> float:
    return joules / J_PER_KWH


@dataclass(frozen=True)
class Tariff:
    """An electricity price: USD per kWh for each hour of the day in `timezone` (all equal for a flat price)."""

    name: str
    usd_per_kwh_by_hour: tuple[float, ...]
    timezone: str = "UTC"
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.usd_per_kwh_by_hour) != 24:
            raise ValueError(f"tariff {self.name!r}: need 24 hourly prices, got {len(self.usd_per_kwh_by_hour)}")
        if any(not (p >= 0 and math.isfinite(p)) for p in self.usd_per_kwh_by_hour):
            raise ValueError(f"tariff {self.name!r}: prices must be finite and >= 0")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"tariff {self.name!r}: unknown timezone {self.timezone!r}") from None

    @classmethod
    def flat(cls, usd_per_kwh: float, name: str = "flat", source: str = "") -> Tariff:
        return cls(name=name, usd_per_kwh_by_hour=(float(usd_per_kwh),) * 24, source=source)

    @property
    def is_flat(self) -> bool:
        return len(set(self.usd_per_kwh_by_hour)) == 1

    @property
    def mean_usd_per_kwh(self) -> float:
        return math.fsum(self.usd_per_kwh_by_hour) / 24

    def usd_per_kwh_at(self, unix_s: float) -> float:
        return self.usd_per_kwh_by_hour[datetime.fromtimestamp(unix_s, ZoneInfo(self.timezone)).hour]

    def average_usd_per_kwh(self, start_unix_s: float, seconds: float) -> float:
        """Time-weighted mean price over [start, start + seconds]: energy is taken as drawn evenly over the window."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        if self.is_flat or seconds == 0:
            return self.usd_per_kwh_at(start_unix_s)
        # Walk the window in 15-minute UTC slots: every timezone's offset is a multiple of 15 minutes, so the local
        # hour is constant within a slot, and working in unix seconds keeps DST changes out of the arithmetic.
        zone = ZoneInfo(self.timezone)
        t_s, end_s = start_unix_s, start_unix_s + seconds
        usd_s = 0.0  # integral of price over time, USD/kWh x s
        while t_s < end_s:
            slot_end_s = min((math.floor(t_s / TARIFF_SLOT_S) + 1) * TARIFF_SLOT_S, end_s)
            usd_s += self.usd_per_kwh_by_hour[datetime.fromtimestamp(t_s, zone).hour] * (slot_end_s - t_s)
            t_s = slot_end_s
        return usd_s / seconds

    def cost_usd(self, joules: float, start_unix_s: float | None = None, seconds: float = 0.0) -> float:
        """Cost of `joules` drawn evenly over a window starting at `start_unix_s` (default: ending now)."""
        if not joules >= 0:
            raise ValueError(f"joules must be >= 0, got {joules}")
        if start_unix_s is None:
            start_unix_s = time.time() - seconds
        return joules_to_kwh(joules) * self.average_usd_per_kwh(start_unix_s, seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "flat": self.is_flat,
            "usd_per_kwh_by_hour": list(self.usd_per_kwh_by_hour),
            "mean_usd_per_kwh": self.mean_usd_per_kwh,
            "timezone": self.timezone,
            "source": self.source,
        }


@dataclass(frozen=True)
class CarbonIntensity:
    """Grams of CO2(-equivalent) emitted per kWh drawn from a region's grid."""

    region: str
    g_per_kwh: float
    source: str
    year: int | None = None

    def __post_init__(self) -> None:
        if not (self.g_per_kwh >= 0 and math.isfinite(self.g_per_kwh)):
            raise ValueError(f"carbon intensity for {self.region!r} must be finite and >= 0, got {self.g_per_kwh}")

    def co2_g(self, joules: float) -> float:
        return joules_to_kwh(joules) * self.g_per_kwh


def _user_file(name: str) -> Path:
    return garrison_home() / "energy" / name


def _tariff_from_dict(key: str, data: dict[str, Any], origin: str) -> Tariff:
    try:
        if "usd_per_kwh_by_hour" in data:
            hourly = tuple(float(p) for p in data["usd_per_kwh_by_hour"])
        else:
            hourly = (float(data["usd_per_kwh"]),) * 24
        return Tariff(
            name=data.get("name", key),
            usd_per_kwh_by_hour=hourly,
            timezone=data.get("timezone", "UTC"),
            source=data.get("source", origin),
        )
    except KeyError as missing:
        raise ValueError(
            f"{origin}: tariff {key!r} needs usd_per_kwh or usd_per_kwh_by_hour (missing {missing})"
        ) from None


def load_tariffs() -> dict[str, Tariff]:
    """The shipped tariffs, with `$GARRISON_HOME/energy/tariffs.json` entries added or replacing them."""
    tariffs: dict[str, Tariff] = {}
    for path in (DATA_DIR / "tariffs.json", _user_file("tariffs.json")):
        if path.exists():
            for key, data in json.loads(path.read_text()).items():
                tariffs[key] = _tariff_from_dict(key, data, str(path))
    return tariffs


def get_tariff(price: str | float | Tariff | None = None) -> Tariff:
    """A tariff from a name, a flat USD/kWh figure, or a Tariff; None: GARRISON_USD_PER_KWH, GARRISON_TARIFF, flat."""
    if isinstance(price, Tariff):
        return price
    if isinstance(price, int | float):
        return Tariff.flat(float(price), source="flat price given by the caller")
    if price is None:
        env_price = os.environ.get("GARRISON_USD_PER_KWH")
        if env_price:
            try:
                return Tariff.flat(float(env_price), source="GARRISON_USD_PER_KWH")
            except ValueError:
                raise ValueError(f"GARRISON_USD_PER_KWH must be a number, got {env_price!r}") from None
        price = os.environ.get("GARRISON_TARIFF") or DEFAULT_TARIFF
    tariffs = load_tariffs()
    if price not in tariffs:
        raise ValueError(f"unknown tariff {price!r}; known: {sorted(tariffs)}")
    return tariffs[price]


def load_carbon_intensities() -> dict[str, CarbonIntensity]:
    """Shipped intensities per region, with `$GARRISON_HOME/energy/carbon_intensity.json` added or replacing."""
    table: dict[str, CarbonIntensity] = {}
    for path in (DATA_DIR / "carbon_intensity.json", _user_file("carbon_intensity.json")):
        if path.exists():
            data = json.loads(path.read_text())
            source, year = data.get("_source", str(path)), data.get("_year")
            for region, g_per_kwh in data.get("regions", {}).items():
                table[region.lower()] = CarbonIntensity(region.lower(), float(g_per_kwh), source, year)
    return table


def get_carbon_intensity(region: str | None = None) -> CarbonIntensity:
    """Intensity for `region`; None: GARRISON_CO2_G_PER_KWH, else GARRISON_REGION, else "world"."""
    if region is None:
        env_g = os.environ.get("GARRISON_CO2_G_PER_KWH")
        if env_g:
            try:
                return CarbonIntensity("custom", float(env_g), "GARRISON_CO2_G_PER_KWH")
            except ValueError:
                raise ValueError(f"GARRISON_CO2_G_PER_KWH must be a number, got {env_g!r}") from None
        region = os.environ.get("GARRISON_REGION") or DEFAULT_REGION
    table = load_carbon_intensities()
    if region.lower() not in table:
        raise ValueError(f"unknown region {region!r}; known: {sorted(table)}")
    return table[region.lower()]


def cost_usd(
    joules: float, price: str | float | Tariff | None = None, start_unix_s: float | None = None, seconds: float = 0.0
) -> float:
    """Electricity cost of `joules` under a tariff (name, flat USD/kWh, or Tariff)."""
    return get_tariff(price).cost_usd(joules, start_unix_s, seconds)


def co2_g(joules: float, region: str | None = None) -> float:
    """Grams of CO2e for `joules` drawn from `region`'s grid."""
    return get_carbon_intensity(region).co2_g(joules)


def resolve_chip(device: Device | Chip | str) -> Chip:
    """A Chip from a Chip, a catalog key, or a discovered Device (the CPU's measured peak for the CPU)."""
    if isinstance(device, Chip):
        return device
    if isinstance(device, str):
        return get_chip(device)
    return chip_for_device(device)


def min_joules(flops: float, device: Device | Chip | str, dtype: str = DEFAULT_DTYPE) -> float:
    """Least energy `flops` could take on the device: FLOPs / peak FLOP per joule."""
    if not flops >= 0:
        raise ValueError(f"flops must be >= 0, got {flops}")
    return flops / resolve_chip(device).flop_per_joule(dtype)


def efficiency_vs_limit(joules: float, flops: float, device: Device | Chip | str, dtype: str = DEFAULT_DTYPE) -> float:
    """Measured joules over the physical minimum for `flops` on `device` (1.0 = at the limit; higher = further off)."""
    if not joules >= 0:
        raise ValueError(f"joules must be >= 0, got {joules}")
    floor_j = min_joules(flops, device, dtype)
    if floor_j == 0:
        raise ValueError("efficiency_vs_limit needs flops > 0")
    return joules / floor_j

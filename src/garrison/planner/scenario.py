"""Scenarios: the fleet, its sites and power, the demand, the request mix and the training jobs, in YAML.

A scenario is validated by pydantic (unknown keys, wrong types, negative counts: an error naming the field), then
against the hardware catalog and the cost profiles (unknown chips, unknown models), before anything runs.
`load_scenario(path_or_name)` reads a file, or one of the examples shipped in `garrison/planner/scenarios/` by name
(`small-lab`, `national`, `custom-chip`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from garrison.hardware.catalog import Chip, load_catalog
from garrison.planner.profiles import CPU_CHIP

SCENARIOS_DIR = Path(__file__).with_name("scenarios")
MAX_HORIZON_S = 7 * 86400.0


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the field and what to change."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomChip(_Strict):
    """A chip defined relative to a known one: FLOP/s x `perf_factor`, FLOP per joule x `perf_per_w_factor`."""

    key: str = Field(min_length=1)
    name: str = ""
    base: str
    perf_factor: float = Field(gt=0)
    perf_per_w_factor: float = Field(gt=0)
    memory_gb: float | None = Field(default=None, gt=0)


class DeviceGroup(_Strict):
    """`count` devices of `chip`, at home in `pool`."""

    chip: str
    count: int = Field(ge=0)
    pool: Literal["training", "serving"] = "serving"


class Site(_Strict):
    """A data centre: its devices, its power cap (facility MW) and PUE, and its grid.

    The cap holds the facility's draw: chip power x `server_factor` (CPUs, memory, network around the chips; Epoch
    AI uses about 1.82 for H100 servers) x `pue` (cooling and distribution).
    """

    name: str = Field(min_length=1)
    power_cap_mw: float = Field(gt=0)
    pue: float = Field(default=1.2, ge=1.0, le=3.0)
    server_factor: float = Field(default=1.0, ge=1.0, le=4.0)
    carbon_region: str | None = None
    carbon_g_per_kwh: float | None = Field(default=None, ge=0)
    devices: list[DeviceGroup] = Field(min_length=1)


class Demand(_Strict):
    """Video requests per day: `users` x `videos_per_user_per_day`, shaped by `daily_curve` (24 hourly weights,
    UTC) and, with `trace: azure`, bursty within each hour as the Azure LLM inference trace's arrivals."""

    users: float = Field(ge=0)
    videos_per_user_per_day: float = Field(default=1.0, ge=0)
    daily_curve: list[float] | None = None
    trace: Literal["poisson", "azure"] = "poisson"

    @field_validator("daily_curve")
    @classmethod
    def _curve(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return value
        if len(value) != 24:
            raise ValueError(f"daily_curve needs 24 hourly weights, got {len(value)}")
        if any(not (math.isfinite(v) and v >= 0) for v in value) or sum(value) <= 0:
            raise ValueError("daily_curve weights must be finite, >= 0, and not all zero")
        return value

    @property
    def videos_per_day(self) -> float:
        return self.users * self.videos_per_user_per_day


class RequestKind(_Strict):
    """One kind of request in the mix: model, clip seconds, size (WxH), denoising steps, and its share."""

    model: str
    seconds: float = Field(gt=0, le=120)
    size: str = "832x480"
    steps: int = Field(default=50, ge=1, le=1000)
    weight: float = Field(default=1.0, gt=0)

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        parts = value.lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"size must be WIDTHxHEIGHT in pixels, like 832x480, got {value!r}")
        return value

    @property
    def width(self) -> int:
        return int(self.size.lower().split("x")[0])

    @property
    def height(self) -> int:
        return int(self.size.lower().split("x")[1])


class TrainingJob(_Strict):
    """A training job: `devices` of the site's training pool for `duration_s` of work, submitted at `start_s`."""

    name: str = Field(min_length=1)
    devices: int = Field(ge=1)
    duration_s: float = Field(gt=0)
    start_s: float = Field(default=0.0, ge=0)
    site: str | None = None


class Electricity(_Strict):
    """The price: a tariff of garrison's table (`flat`, `tou`), or `usd_per_kwh`, one number or 24 hourly ones."""

    tariff: str | None = None
    usd_per_kwh: float | list[float] | None = None

    @model_validator(mode="after")
    def _one(self) -> Electricity:
        if isinstance(self.usd_per_kwh, list) and len(self.usd_per_kwh) != 24:
            raise ValueError(f"usd_per_kwh as a list needs 24 hourly prices, got {len(self.usd_per_kwh)}")
        prices = self.usd_per_kwh if isinstance(self.usd_per_kwh, list) else [self.usd_per_kwh or 0.0]
        if any(not (math.isfinite(p) and p >= 0) for p in prices):
            raise ValueError("usd_per_kwh must be finite and >= 0")
        return self


class Governor(_Strict):
    """The governor's knobs for this scenario (garrison.governor.state.GovernorConfig); None: the default.

    `training_guarantee` is in devices (default: the whole training pool). `control_period_s` is simulated seconds
    between two ticks of the governor."""

    slo_s: float = Field(default=600.0, gt=0)
    slo_target: float = Field(default=0.95, ge=0, le=1)
    control_period_s: float = Field(default=10.0, gt=0)
    grace_period_s: float = Field(default=30.0, ge=0)
    max_concurrency: int = Field(default=1, ge=1, le=64)
    training_guarantee: int | None = Field(default=None, ge=0)
    target_utilization: float = Field(default=0.8, gt=0, le=1)
    high_watermark: float = Field(default=0.97, gt=0, le=1)
    low_watermark: float = Field(default=0.85, gt=0, lt=1)


class Simulation(_Strict):
    """How the simulator aggregates: at most `max_units_per_site` governor devices per site (each a block of
    identical physical devices); `idle_fraction` of TDP drawn idle; a power limit slows work by
    (limit / busy power) ** `power_perf_exponent` (1/3: dynamic power ~ f^3 under DVFS, speed ~ f).
    `service_time: exponential` draws each request's time from an exponential with the profile's mean (for
    checking against M/M/c); the default is the profile's time itself. `worker_start_s`: seconds a device put to
    serving takes before it takes work (a worker process loading the model). `training_start_s`: seconds a started
    training job's devices take before they train (the training process starting): they draw idle power and do no
    work meanwhile. `serving_share`: the share of its device a serving worker gets at most (1: all of it; below 1
    on a CPU shared with other programs, which take the rest): serving work runs at the lower of it and the power
    limit's speed, and draws power for what it gets. `quota_work_fraction`: the work a CPU core slot throttled by its
    limit's quota does per CPU-second, against a free one (it burns its whole quota; 1: no loss).
    `limits_apply_in_flight`: a power limit set while a request runs changes its speed from then on (a cgroup quota or a GPU clock acts at once); off, a request keeps the speed it
    started at (the default, and the large runs' behaviour). `worker_pickup_s`: seconds an idle worker takes to
    notice a request (a worker that polls its queue every p seconds: p / 2 on average); a worker that finishes a
    request takes the next queued one at once."""

    max_units_per_site: int = Field(default=64, ge=1, le=4096)
    idle_fraction: float = Field(default=0.15, ge=0, lt=1)
    min_power_limit_fraction: float = Field(default=0.3, gt=0, le=1)
    power_perf_exponent: float = Field(default=1 / 3, gt=0, le=1)
    service_time: Literal["deterministic", "exponential"] = "deterministic"
    worker_start_s: float = Field(default=0.0, ge=0, le=3600)
    training_start_s: float = Field(default=0.0, ge=0, le=3600)
    serving_share: float = Field(default=1.0, gt=0, le=1)
    quota_work_fraction: float = Field(default=1.0, gt=0, le=1)
    limits_apply_in_flight: bool = False
    worker_pickup_s: float = Field(default=0.0, ge=0, le=3600)


class Search(_Strict):
    """Capacity questions `garrison plan` answers besides the scenario itself (all optional)."""

    max_training_slowdown: float = Field(default=0.05, ge=0, le=1)
    quality_level: int = Field(default=0, ge=0, le=5)
    max_users: bool = False
    chips: list[str] = Field(default_factory=list)
    usd_per_device_hour: dict[str, float] = Field(default_factory=dict)
    compare_with_base_chip: bool = False


class Scenario(_Strict):
    """Everything one planner run needs."""

    name: str = Field(min_length=1)
    description: str = ""
    horizon_s: float = Field(default=86400.0, gt=0, le=MAX_HORIZON_S)
    seed: int = 0
    custom_chips: list[CustomChip] = Field(default_factory=list)
    sites: list[Site] = Field(min_length=1)
    electricity: Electricity = Field(default_factory=Electricity)
    carbon_region: str = "world"
    demand: Demand
    requests: list[RequestKind] = Field(min_length=1)
    training: list[TrainingJob] = Field(default_factory=list)
    governor: Governor = Field(default_factory=Governor)
    simulation: Simulation = Field(default_factory=Simulation)
    search: Search = Field(default_factory=Search)

    def chips(self) -> dict[str, Chip]:
        """The catalog with this scenario's custom chips added (ScenarioError on an unknown base)."""
        catalog = load_catalog()
        for i, c in enumerate(self.custom_chips):
            if c.base not in catalog:
                raise ScenarioError(f"custom_chips[{i}].base: unknown chip {c.base!r}; known: {sorted(catalog)}")
            chip = catalog[c.base].relative(c.key, c.name or c.key, c.perf_factor, c.perf_per_w_factor, "scenario")
            if c.memory_gb is not None:
                from dataclasses import replace

                chip = replace(chip, memory_bytes=c.memory_gb * 1e9)
            catalog[c.key] = chip
        return catalog


def _format_validation(error: ValidationError, origin: str) -> str:
    lines = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"{where}: {e['msg']}")
    return f"invalid scenario {origin}: " + "; ".join(lines)


def check_references(scenario: Scenario) -> None:
    """Chips against the catalog, models against the cost profiles, jobs against their sites' training pools."""
    from garrison.planner.profiles import CostProfile

    chips = scenario.chips()
    known = sorted([*chips, CPU_CHIP])
    problems = []
    for si, site in enumerate(scenario.sites):
        for di, group in enumerate(site.devices):
            if group.chip != CPU_CHIP and group.chip not in chips:
                problems.append(f"sites[{si}].devices[{di}].chip: unknown chip {group.chip!r}; known: {known}")
        if sum(g.count for g in site.devices) == 0:
            problems.append(f"sites[{si}].devices: site {site.name!r} has no devices (every count is 0)")
    names = [s.name for s in scenario.sites]
    if len(set(names)) != len(names):
        problems.append(f"sites: site names must be unique, got {names}")
    profile = CostProfile(catalog=chips)
    for ri, r in enumerate(scenario.requests):
        if r.model not in profile.models:
            problems.append(f"requests[{ri}].model: unknown model {r.model!r}; known: {profile.models}")
    for ji, job in enumerate(scenario.training):
        site = next((s for s in scenario.sites if s.name == job.site), scenario.sites[0]) if job.site else None
        if job.site and job.site not in names:
            problems.append(f"training[{ji}].site: unknown site {job.site!r}; sites: {names}")
            continue
        site = site or scenario.sites[0]
        pool = sum(g.count for g in site.devices if g.pool == "training")
        if job.devices > pool:
            problems.append(
                f"training[{ji}].devices: job {job.name!r} asks for {job.devices} devices but site {site.name!r}"
                f" has {pool} in its training pool"
            )
    if scenario.governor.low_watermark >= scenario.governor.high_watermark:
        problems.append("governor.low_watermark must be below governor.high_watermark")
    if scenario.electricity.tariff is not None:
        from garrison.energy.pricing import get_tariff

        try:
            get_tariff(scenario.electricity.tariff)
        except ValueError as error:
            problems.append(f"electricity.tariff: {error}")
    from garrison.energy.pricing import get_carbon_intensity

    for where, region in [("carbon_region", scenario.carbon_region)] + [
        (f"sites[{i}].carbon_region", s.carbon_region) for i, s in enumerate(scenario.sites) if s.carbon_region
    ]:
        try:
            get_carbon_intensity(region)
        except ValueError as error:
            problems.append(f"{where}: {error}")
    if problems:
        raise ScenarioError(f"invalid scenario {scenario.name!r}: " + "; ".join(problems))


def parse_scenario(data: Any, origin: str = "<dict>") -> Scenario:
    """A validated Scenario from parsed YAML (a mapping). Raises ScenarioError naming every bad field."""
    if not isinstance(data, dict):
        raise ScenarioError(f"invalid scenario {origin}: the top level must be a mapping, got {type(data).__name__}")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as error:
        raise ScenarioError(_format_validation(error, origin)) from None
    check_references(scenario)
    return scenario


def example_scenarios() -> list[str]:
    """Names of the scenarios shipped with garrison."""
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))


def load_scenario(path_or_name: str | Path) -> Scenario:
    """Read a scenario file, or a shipped example by name. Raises ScenarioError (missing file, bad YAML, bad
    fields)."""
    path = Path(path_or_name)
    if not path.is_file():
        shipped = SCENARIOS_DIR / f"{path_or_name}.yaml"
        if shipped.is_file():
            path = shipped
        else:
            raise ScenarioError(
                f"no scenario file {str(path_or_name)!r}; give a YAML path or one of the shipped examples:"
                f" {example_scenarios()}"
            )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ScenarioError(f"{path}: not valid YAML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(f"{path}: cannot read: {error}") from None
    return parse_scenario(data, str(path))

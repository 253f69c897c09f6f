"""Accelerator catalog: peak FLOP/s, TDP and peak FLOP per joule for each chip garrison may run on.

One JSON file per chip. The built-in ones in `garrison/hardware/chips/` are copied from the Epoch AI chip dataset
(shared/data/accelerators_epoch.csv; each file names its row). Custom chips are JSON files in
`$GARRISON_HOME/chips/` (or any folder passed as `extra_dirs`), in one of two forms:

- absolute: the same fields as a built-in file (`key`, `name`, `peak_flops` per dtype, `tdp_w`, `source`);
- relative to a known chip: `{"key": ..., "name": ..., "base": "h100-sxm", "perf_factor": 0.8,
  "perf_per_w_factor": 1.1, "source": ...}`: peak FLOP/s is the base's times `perf_factor`, FLOP per joule the
  base's times `perf_per_w_factor`, so TDP follows as peak / (FLOP per joule).

The catalog's FLOP per joule (peak FLOP/s over TDP) is the physical anchor for "the least energy this work could
take": H100 SXM is 989.4e12 / 700 = 1.41e12 FLOP/J.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUILTIN_CHIPS_DIR = Path(__file__).with_name("chips")
DEFAULT_DTYPE = "bf16"


class UnknownChipError(KeyError):
    """A chip key the catalog does not hold; the message lists the keys it does."""

    def __str__(self) -> str:  # KeyError quotes its argument; a user wants the sentence
        return str(self.args[0])


def garrison_home() -> Path:
    """The folder garrison keeps per-machine state in: `$GARRISON_HOME`, default ~/.garrison."""
    return Path(os.environ.get("GARRISON_HOME") or Path.home() / ".garrison")


@dataclass(frozen=True)
class Chip:
    """One accelerator model. `peak_flops_by_dtype` holds dense FLOP/s per dtype ("bf16", "fp8", "fp32")."""

    key: str
    name: str
    peak_flops_by_dtype: dict[str, float]
    tdp_w: float
    source: str
    manufacturer: str | None = None
    release_date: str | None = None
    memory_bytes: float | None = None
    memory_bandwidth_bytes_per_s: float | None = None
    nvml_names: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.peak_flops_by_dtype:
            raise ValueError(f"chip {self.key!r} has no peak FLOP/s")
        for dtype, flops in self.peak_flops_by_dtype.items():
            if not flops > 0:
                raise ValueError(f"chip {self.key!r}: peak FLOP/s for {dtype} must be > 0, got {flops}")
        if not self.tdp_w > 0:
            raise ValueError(f"chip {self.key!r}: tdp_w must be > 0, got {self.tdp_w}")

    def peak_flops(self, dtype: str = DEFAULT_DTYPE) -> float:
        """Dense peak FLOP/s in `dtype`; ValueError if the catalog has no figure for that dtype."""
        if dtype not in self.peak_flops_by_dtype:
            raise ValueError(
                f"chip {self.key!r} has no peak FLOP/s for {dtype!r}; it has {sorted(self.peak_flops_by_dtype)}"
            )
        return self.peak_flops_by_dtype[dtype]

    def flop_per_joule(self, dtype: str = DEFAULT_DTYPE) -> float:
        """Peak FLOP per joule: peak FLOP/s at TDP. Real runs sit below it; nothing sits above it."""
        return self.peak_flops(dtype) / self.tdp_w

    def relative(self, key: str, name: str, perf_factor: float, perf_per_w_factor: float, source: str = "") -> Chip:
        """A chip defined relative to this one: FLOP/s x `perf_factor`, FLOP per joule x `perf_per_w_factor`."""
        if not perf_factor > 0 or not perf_per_w_factor > 0:
            raise ValueError(f"perf_factor and perf_per_w_factor must be > 0, got {perf_factor}, {perf_per_w_factor}")
        peak = {dtype: flops * perf_factor for dtype, flops in self.peak_flops_by_dtype.items()}
        # TDP follows from the two factors: FLOP/J = peak / TDP, so TDP = TDP_base * perf / perf_per_w.
        tdp_w = self.tdp_w * perf_factor / perf_per_w_factor
        note = f"relative to {self.key}: perf x{perf_factor}, perf/W x{perf_per_w_factor}"
        return Chip(
            key=key,
            name=name,
            peak_flops_by_dtype=peak,
            tdp_w=tdp_w,
            source=f"{source}; {note}" if source else note,
            manufacturer=self.manufacturer,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "peak_flops": dict(self.peak_flops_by_dtype),
            "tdp_w": self.tdp_w,
            "flop_per_joule": {dtype: self.flop_per_joule(dtype) for dtype in self.peak_flops_by_dtype},
            "source": self.source,
        }


def _chip_from_dict(data: dict[str, Any], known: dict[str, Chip], origin: str) -> Chip:
    try:
        if "base" in data:
            base_key = data["base"]
            if base_key not in known:
                raise UnknownChipError(f"{origin}: base chip {base_key!r} is not in the catalog ({sorted(known)})")
            return known[base_key].relative(
                key=data["key"],
                name=data.get("name", data["key"]),
                perf_factor=float(data["perf_factor"]),
                perf_per_w_factor=float(data["perf_per_w_factor"]),
                source=data.get("source", origin),
            )
        return Chip(
            key=data["key"],
            name=data["name"],
            peak_flops_by_dtype={k: float(v) for k, v in data["peak_flops"].items() if v},
            tdp_w=float(data["tdp_w"]),
            source=data.get("source", origin),
            manufacturer=data.get("manufacturer"),
            release_date=data.get("release_date"),
            memory_bytes=data.get("memory_bytes"),
            memory_bandwidth_bytes_per_s=data.get("memory_bandwidth_bytes_per_s"),
            nvml_names=tuple(data.get("nvml_names", ())),
        )
    except UnknownChipError:
        raise
    except KeyError as missing:
        raise ValueError(f"{origin}: chip definition lacks field {missing}") from None


def _load_dir(folder: Path, chips: dict[str, Chip]) -> None:
    pending: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(folder.glob("*.json")):
        try:
            pending.append((path, json.loads(path.read_text())))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
    # A relative chip may name a base defined later in the same folder: load in rounds until nothing is left.
    while pending:
        ready = [(p, d) for p, d in pending if "base" not in d or d["base"] in chips]
        if not ready:
            ready = pending[:1]  # its base is unknown: _chip_from_dict raises with the file named
        for path, data in ready:
            chip = _chip_from_dict(data, chips, str(path))
            chips[chip.key] = chip
            pending.remove((path, data))


def load_catalog(extra_dirs: list[Path] | None = None) -> dict[str, Chip]:
    """All chips: built-in, then `$GARRISON_HOME/chips/`, then `extra_dirs` (later files override earlier keys)."""
    chips: dict[str, Chip] = {}
    _load_dir(BUILTIN_CHIPS_DIR, chips)
    folders = [garrison_home() / "chips", *(extra_dirs or [])]
    for folder in folders:
        if folder.is_dir():
            _load_dir(folder, chips)
    return chips


def add_chip(chip: Chip, folder: Path | None = None) -> Path:
    """Save a custom chip as JSON (default `$GARRISON_HOME/chips/KEY.json`) so later catalogs include it."""
    folder = folder or garrison_home() / "chips"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{chip.key}.json"
    data = {
        "key": chip.key,
        "name": chip.name,
        "peak_flops": dict(chip.peak_flops_by_dtype),
        "tdp_w": chip.tdp_w,
        "source": chip.source,
        "manufacturer": chip.manufacturer,
        "nvml_names": list(chip.nvml_names),
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def get_chip(key: str, catalog: dict[str, Chip] | None = None) -> Chip:
    """The chip with catalog key `key` (e.g. "h100-sxm"); UnknownChipError lists the known keys otherwise."""
    catalog = catalog if catalog is not None else load_catalog()
    if key not in catalog:
        raise UnknownChipError(f"unknown chip {key!r}; the catalog has {sorted(catalog)}")
    return catalog[key]


def match_nvml_name(device_name: str, catalog: dict[str, Chip] | None = None) -> Chip | None:
    """The chip whose `nvml_names` lists `device_name` exactly (case-insensitive); None rather than a guess."""
    catalog = catalog if catalog is not None else load_catalog()
    wanted = device_name.strip().lower()
    for chip in catalog.values():
        if any(alias.lower() == wanted for alias in chip.nvml_names):
            return chip
    return None


def peak_flops(chip: Chip | str, dtype: str = DEFAULT_DTYPE) -> float:
    """Dense peak FLOP/s of a chip (object or catalog key)."""
    return (get_chip(chip) if isinstance(chip, str) else chip).peak_flops(dtype)


def tdp_w(chip: Chip | str) -> float:
    """Thermal design power in watts of a chip (object or catalog key)."""
    return (get_chip(chip) if isinstance(chip, str) else chip).tdp_w


def flop_per_joule(chip: Chip | str, dtype: str = DEFAULT_DTYPE) -> float:
    """Peak FLOP per joule of a chip (object or catalog key)."""
    return (get_chip(chip) if isinstance(chip, str) else chip).flop_per_joule(dtype)

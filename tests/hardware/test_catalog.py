"""Catalog: built-in chips agree with the Epoch table they were copied from; custom chips load and derive."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from garrison.hardware.catalog import (
    BUILTIN_CHIPS_DIR,
    Chip,
    UnknownChipError,
    add_chip,
    flop_per_joule,
    get_chip,
    load_catalog,
    match_nvml_name,
    peak_flops,
    tdp_w,
)

REPO = Path(__file__).resolve().parents[2]
EPOCH_CSV_CANDIDATES = [
    REPO.parent / "shared" / "data" / "accelerators_epoch.csv",
    REPO / "shared" / "data" / "accelerators_epoch.csv",
]


def test_h100_is_the_physical_anchor():
    h100 = get_chip("h100-sxm")
    assert peak_flops(h100) == 989.4e12
    assert tdp_w("h100-sxm") == 700.0
    # shared/data/README.md: "about 1.41e12 FLOP per joule at full load"
    assert flop_per_joule("h100-sxm") == pytest.approx(1.4134e12, rel=1e-4)


def test_builtin_set_covers_the_chips_garrison_plans_for():
    keys = set(load_catalog())
    assert {"h100-sxm", "h200-sxm", "b200", "a100-sxm4-80gb", "mi300x", "trainium2", "gaudi3", "tpu-v5e"} <= keys


def test_every_builtin_chip_names_its_source_and_matches_the_epoch_row(skip_without_shared):
    csv_path = next((p for p in EPOCH_CSV_CANDIDATES if p.exists()), None)
    if csv_path is None:
        skip_without_shared(EPOCH_CSV_CANDIDATES, "shared/data/accelerators_epoch.csv")
    rows = {r["name"]: r for r in csv.DictReader(open(csv_path))}
    for path in BUILTIN_CHIPS_DIR.glob("*.json"):
        data = json.loads(path.read_text())
        assert "Epoch AI" in data["source"], path
        row = rows[data["name"]]
        assert float(row["bf16_flops"]) == data["peak_flops"]["bf16"], path
        assert float(row["tdp_w"]) == data["tdp_w"], path


def test_unknown_chip_and_dtype_are_clear_errors():
    with pytest.raises(UnknownChipError, match="h100-sxm"):  # lists the known keys
        get_chip("h900")
    with pytest.raises(ValueError, match="fp4"):
        get_chip("h100-sxm").peak_flops("fp4")


def test_invalid_chip_values_are_refused():
    with pytest.raises(ValueError, match="tdp_w"):
        Chip(key="x", name="x", peak_flops_by_dtype={"bf16": 1e12}, tdp_w=0.0, source="t")
    with pytest.raises(ValueError, match="peak"):
        Chip(key="x", name="x", peak_flops_by_dtype={"bf16": -1.0}, tdp_w=100.0, source="t")


def test_relative_chip_scales_peak_and_flop_per_joule():
    base = get_chip("h100-sxm")
    derived = base.relative("h100-capped", "H100 at a cap", perf_factor=0.8, perf_per_w_factor=1.25)
    assert derived.peak_flops() == pytest.approx(0.8 * base.peak_flops())
    assert derived.flop_per_joule() == pytest.approx(1.25 * base.flop_per_joule())
    assert derived.tdp_w == pytest.approx(700.0 * 0.8 / 1.25)
    assert "relative to h100-sxm" in derived.source


def test_custom_chips_from_garrison_home(isolated_home):
    chips = isolated_home / "chips"
    chips.mkdir(parents=True)
    # A relative chip whose base is another custom chip in the same folder, listed first alphabetically.
    (chips / "a_derived.json").write_text(
        json.dumps({"key": "npu-lite", "base": "npu-1", "perf_factor": 0.5, "perf_per_w_factor": 2.0})
    )
    (chips / "b_npu.json").write_text(
        json.dumps(
            {"key": "npu-1", "name": "Example NPU", "peak_flops": {"bf16": 4e14}, "tdp_w": 400, "source": "vendor"}
        )
    )
    catalog = load_catalog()
    assert catalog["npu-1"].flop_per_joule() == pytest.approx(1e12)
    assert catalog["npu-lite"].peak_flops() == pytest.approx(2e14)
    assert catalog["npu-lite"].flop_per_joule() == pytest.approx(2e12)
    assert "h100-sxm" in catalog  # built-ins are still there


def test_relative_chip_with_unknown_base_names_the_file(isolated_home):
    chips = isolated_home / "chips"
    chips.mkdir(parents=True)
    (chips / "bad.json").write_text(json.dumps({"key": "x", "base": "nope", "perf_factor": 1, "perf_per_w_factor": 1}))
    with pytest.raises(UnknownChipError, match="bad.json"):
        load_catalog()


def test_incomplete_chip_file_is_a_clear_error(isolated_home):
    chips = isolated_home / "chips"
    chips.mkdir(parents=True)
    (chips / "half.json").write_text(json.dumps({"key": "half", "name": "Half"}))
    with pytest.raises(ValueError, match="half.json.*peak_flops"):
        load_catalog()


def test_add_chip_round_trips(isolated_home):
    chip = get_chip("b200").relative("b200-cap600", "B200 capped at 600 W", 0.9, 1.5, source="our measurement")
    path = add_chip(chip)
    assert path.parent == isolated_home / "chips"
    loaded = get_chip("b200-cap600")
    assert loaded.peak_flops() == pytest.approx(chip.peak_flops())
    assert loaded.tdp_w == pytest.approx(chip.tdp_w)


def test_nvml_names_match_exactly_or_not_at_all():
    assert match_nvml_name("NVIDIA H100 80GB HBM3").key == "h100-sxm"
    assert match_nvml_name("nvidia h100 pcie").key == "h100-pcie"
    assert match_nvml_name("NVIDIA H100 NVL") is None  # not in the catalog: no guess

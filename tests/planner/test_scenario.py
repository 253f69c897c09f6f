"""Scenarios: the shipped examples load; bad input gets an error naming the field."""

from __future__ import annotations

import copy

import pytest
import yaml

from garrison.planner.scenario import SCENARIOS_DIR, ScenarioError, example_scenarios, load_scenario, parse_scenario

BASE = {
    "name": "t",
    "horizon_s": 3600,
    "sites": [
        {
            "name": "a",
            "power_cap_mw": 0.02,
            "devices": [
                {"chip": "h100-sxm", "count": 4, "pool": "serving"},
                {"chip": "h100-sxm", "count": 4, "pool": "training"},
            ],
        }
    ],
    "demand": {"users": 100},
    "requests": [{"model": "wan2.1-1.3b", "seconds": 5.4}],
    "training": [{"name": "j", "devices": 4, "duration_s": 600}],
}


def with_change(path: list, value: object) -> dict:
    data = copy.deepcopy(BASE)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


def test_shipped_examples_load():
    assert {"small-lab", "national", "custom-chip"} <= set(example_scenarios())
    for name in example_scenarios():
        scenario = load_scenario(name)
        assert scenario.name == name
        assert load_scenario(SCENARIOS_DIR / f"{name}.yaml") == scenario


def test_custom_chip_is_relative_to_its_base():
    scenario = load_scenario("custom-chip")
    chips = scenario.chips()
    asic, h100 = chips["lab-asic"], chips["h100-sxm"]
    assert asic.peak_flops() == pytest.approx(h100.peak_flops())
    assert asic.flop_per_joule() == pytest.approx(2 * h100.flop_per_joule())
    assert asic.memory_bytes == pytest.approx(96e9)


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (["sites", 0, "devices", 0, "chip"], "h999", "sites[0].devices[0].chip: unknown chip 'h999'"),
        (["sites", 0, "devices", 0, "count"], -3, "sites.0.devices.0.count"),
        (["sites", 0, "power_cap_mw"], 0, "sites.0.power_cap_mw"),
        (["requests", 0, "model"], "sora-9", "requests[0].model: unknown model 'sora-9'"),
        (["requests", 0, "size"], "big", "requests.0.size"),
        (["training", 0, "devices"], 64, "training[0].devices"),
        (["demand", "daily_curve"], [1, 2, 3], "demand.daily_curve"),
        (["demand", "users"], -1, "demand.users"),
        (["horizon_s"], 10 * 86400, "horizon_s"),
        (["sites", 0, "colour"], "red", "sites.0.colour"),
        (["electricity"], {"tariff": "nope"}, "electricity.tariff"),
        (["carbon_region"], "atlantis", "carbon_region"),
    ],
)
def test_bad_fields_are_named(path, value, needle):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(with_change(path, value))
    assert needle in str(info.value)


def test_custom_chip_with_unknown_base():
    data = copy.deepcopy(BASE)
    data["custom_chips"] = [{"key": "x", "base": "nochip", "perf_factor": 1, "perf_per_w_factor": 2}]
    data["sites"][0]["devices"][0]["chip"] = "x"
    with pytest.raises(ScenarioError, match=r"custom_chips\[0\].base: unknown chip 'nochip'"):
        parse_scenario(data)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ScenarioError, match="no scenario file"):
        load_scenario(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ScenarioError, match="top level must be a mapping"):
        load_scenario(listed)

"""`garrison energy`: which meter is active and why, what the estimate assumes, and metering a command."""

from __future__ import annotations

import subprocess
from typing import Annotated, Any

import typer

from garrison.cli.common import fail, print_json
from garrison.energy.meters import EstimateMeter, MeterError, get_meter
from garrison.energy.pricing import get_carbon_intensity, get_tariff
from garrison.energy.report import energy_fields
from garrison.hardware.catalog import load_catalog
from garrison.hardware.cpu import CpuPowerModel, cpu_chip, cpu_peak, cpu_peak_cache_path

energy_app = typer.Typer(help="Energy meters, the estimate's assumptions, the hardware catalog.", no_args_is_help=True)


def _info(refresh_peak: bool) -> dict[str, Any]:
    meter = get_meter()
    try:
        meter_info = meter.info()
    finally:
        meter.close()
    power = CpuPowerModel.from_env()
    peak = cpu_peak(refresh=refresh_peak)
    estimate_info = meter_info if isinstance(meter, EstimateMeter) else EstimateMeter(power=power).info()
    return {
        "meter": meter_info,
        "estimate_assumptions": {k: v for k, v in estimate_info.items() if k not in ("source", "reason", "devices")},
        "cpu_peak": {**peak.to_dict(), "cache": str(cpu_peak_cache_path())},
        "cpu_chip": cpu_chip(peak, power).to_dict(),
        "pricing": {"tariff": get_tariff().to_dict(), "carbon": get_carbon_intensity().__dict__},
        "catalog": [chip.to_dict() for chip in load_catalog().values()],
    }


def _print_info(info: dict[str, Any]) -> None:
    meter = info["meter"]
    typer.echo(f"meter: {meter['source']}  ({meter['reason']})")
    for device in meter["devices"]:
        typer.echo(f"  device {device['id']}: {device['name']}")
    est = info["estimate_assumptions"]
    typer.echo("estimate (used when no counter is readable; every figure it gives is labelled 'estimate'):")
    typer.echo(f"  model: {est['model']}")
    typer.echo(
        f"  {est['cores']} cores x {est['active_w_per_core']} W active, {est['idle_w_per_core']} W idle per core "
        f"({est['assumption_source']}); busy time from {est['busy_time_from']}"
    )
    peak = info["cpu_peak"]
    flops = ", ".join(f"{dtype} {value / 1e9:.1f} GFLOP/s" for dtype, value in peak["peak_flops_by_dtype"].items())
    typer.echo(
        f"cpu peak: {flops} (torch matmul n={peak['matrix_n']}, one thread timed by CPU time x {peak['threads']}, "
        f"load average {peak['loadavg_1m']:.1f} when measured; cached in {peak['cache']})"
    )
    tariff, carbon = info["pricing"]["tariff"], info["pricing"]["carbon"]
    typer.echo(f"price: {tariff['name']} tariff, mean {tariff['mean_usd_per_kwh']:.3f} USD/kWh")
    typer.echo(f"carbon: {carbon['region']} {carbon['g_per_kwh']:.0f} gCO2/kWh")
    typer.echo("catalog (dense bf16 peak, TDP, peak FLOP per joule):")
    for chip in info["catalog"]:
        bf16 = chip["peak_flops"].get("bf16")
        fpj = chip["flop_per_joule"].get("bf16")
        if bf16 is not None and fpj is not None:
            typer.echo(f"  {chip['key']:16s} {bf16 / 1e12:8.1f} TFLOP/s {chip['tdp_w']:7.0f} W {fpj:.3g} FLOP/J")


@energy_app.command("info")
def info_command(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    refresh_peak: Annotated[bool, typer.Option("--refresh-peak", help="Measure the CPU peak again.")] = False,
) -> None:
    """Which meter is active and why, the estimate's assumptions, the CPU's peak and the chip catalog."""
    try:
        info = _info(refresh_peak)
    except (MeterError, ValueError) as exc:
        fail(str(exc))
    if json_out:
        print_json(info)
    else:
        _print_info(info)


@energy_app.command("measure", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def measure_command(
    cmd: Annotated[list[str], typer.Argument(help="The command to run, after --.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    region: Annotated[str | None, typer.Option(help="Grid region for CO2 (default: GARRISON_REGION or world).")] = None,
    tariff: Annotated[str | None, typer.Option(help="Tariff name (default: GARRISON_TARIFF or flat).")] = None,
) -> None:
    """Run CMD under one energy window and report its joules, cost and CO2; exits with CMD's exit code."""
    try:
        meter = get_meter()
        get_tariff(tariff)
        get_carbon_intensity(region)
    except (MeterError, ValueError) as exc:
        fail(str(exc))
    try:
        meter.begin_window("measure")
        try:
            returncode = subprocess.call(cmd)
        except OSError as exc:
            meter.end_window("measure")
            fail(f"could not run {cmd[0]!r}: {exc.strerror}")
        measurement = meter.end_window("measure")
    except MeterError as exc:
        fail(str(exc))
    finally:
        meter.close()
    fields = {"command": cmd, "returncode": returncode, **energy_fields(measurement, None, None, region, tariff)}
    if json_out:
        print_json(fields)
    else:
        typer.echo(
            f"{fields['joules']:.1f} J ({fields['energy_source']}) in {fields['seconds']:.2f} s: "
            f"{fields['wh']:.4f} Wh, {fields['cost_usd']:.6f} USD, {fields['co2_g']:.3f} gCO2 ({fields['region']})"
        )
    raise typer.Exit(returncode)


def register(app: typer.Typer) -> None:
    """Add `garrison energy ...` to the main app."""
    app.add_typer(energy_app, name="energy")

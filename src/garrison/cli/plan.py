"""`garrison plan SCENARIO`: simulate a fleet scenario with the governor's own policies and answer its questions."""

from __future__ import annotations

from pathlib import Path

import typer

from garrison.cli.common import err_console, fail, print_json


def register(app: typer.Typer) -> None:
    @app.command()
    def plan(
        scenario: str = typer.Argument(
            ..., help="A scenario YAML file, or a shipped example: small-lab, national, custom-chip."
        ),
        out: Path = typer.Option(None, "--out", help="Folder for report.html and answers.json."),
        as_json: bool = typer.Option(False, "--json", help="Print the answers as one JSON object."),
    ) -> None:
        """What fleet and power it takes to serve N users without slowing training (simulated, calibrated)."""
        from garrison.planner.plan import plan as run_plan
        from garrison.planner.profiles import ProfileError
        from garrison.planner.report import write_report
        from garrison.planner.scenario import ScenarioError, load_scenario

        try:
            loaded = load_scenario(scenario)
            result = run_plan(loaded)
        except (ScenarioError, ProfileError, FileNotFoundError) as error:
            fail(str(error))
        answers = dict(result.answers)
        if out is not None:
            try:
                answers["report"] = str(write_report(result, out))
            except OSError as error:
                fail(f"cannot write the report to {out}: {error}")
        if as_json:
            print_json(answers)
            return
        feas = answers["feasibility"]
        lines = [
            f"scenario {answers['scenario']}: {answers['devices']:,} devices, {answers['requests']:,} requests",
            "servable: yes" if feas["servable"] else "servable: NO: " + " ".join(feas["why_not"]),
            f"SLO attainment {answers['slo_attainment']} (SLO {answers['slo_s']:.0f} s); wait p50"
            f" {answers['wait_p50_s']} s, p99 {answers['wait_p99_s']} s",
            f"training slowdown vs alone {answers['training_slowdown']:.2%}",
            f"power peak {answers['peak_power_mw']} MW, mean {answers['mean_power_mw']} MW, cap"
            f" {answers['power_cap_mw']} MW",
            f"energy {answers['energy_mwh']} MWh, cost ${answers['cost_usd']:,.2f}, CO2 {answers['co2_t']} t",
        ]
        for line in lines:
            typer.echo(line)
        if "report" in answers:
            err_console.print(f"report: {answers['report']}")

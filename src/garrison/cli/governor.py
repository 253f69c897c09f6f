"""`garrison demo`: the governor's demonstration on this machine's devices (the README's main job)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from garrison.cli.common import err_console, fail, print_json


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out: Path = typer.Option(Path("demo-out"), help="Folder for the report, summary, store and videos."),
        power_cap_w: float = typer.Option(None, help="Fleet power cap in W (default: one that binds)."),
        first_burst: int = typer.Option(12, help="Videos requested before training starts."),
        train_after_videos: int = typer.Option(
            5, help="Submit the training job once this many first-burst videos have completed."
        ),
        second_burst: int = typer.Option(20, help="Videos requested while training runs."),
        train_steps: int = typer.Option(60, help="Training steps of the demo job."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    ) -> None:
        """Train and serve on the same devices under a power cap; write report.html and summary.json."""
        from garrison.governor.demo import DemoConfig, run_demo
        from garrison.governor.state import GovernorConfigError

        if first_burst < 1 or second_burst < 0 or train_steps < 5 or train_after_videos < 0:
            fail("need --first-burst >= 1, --second-burst >= 0, --train-steps >= 5 and --train-after-videos >= 0")
        if power_cap_w is not None and not power_cap_w > 0:
            fail("--power-cap-w must be a positive number of watts")
        cfg = DemoConfig(
            out_dir=out,
            power_cap_w=power_cap_w,
            first_burst=first_burst,
            train_after_videos=train_after_videos,
            second_burst=second_burst,
            train_steps=train_steps,
        )
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            disable=as_json,
        ) as progress:
            videos = progress.add_task("videos", total=first_burst + second_burst)
            training = progress.add_task("training (governed)", total=train_steps)
            phase = progress.add_task("phase: starting", total=None)

            def on_status(name: str, figures: dict[str, Any]) -> None:
                progress.update(phase, description=f"phase: {name}")
                if "completed" in figures:
                    progress.update(videos, completed=figures["completed"])
                    progress.update(training, completed=figures.get("training_steps", 0))

            # SIGTERM unwinds like Ctrl-C, so the demo's finally-blocks stop the workers and jobs it started
            signal.signal(signal.SIGTERM, lambda signum, frame: (_ for _ in ()).throw(KeyboardInterrupt()))
            try:
                result = run_demo(cfg, on_status)
            except GovernorConfigError as e:
                fail(str(e))
            except KeyboardInterrupt:
                fail("demo interrupted; the workers and jobs it started were stopped", code=130)
        if as_json:
            print_json(result.summary)
            return
        s = result.summary
        lent = s["lent_capacity_used_fraction"]
        # Under a cap that binds, the governor may lend nothing: a lent device could only run held down.
        lending = "nothing was lent" if lent is None else f"serving used {lent} of the lent device-time"
        err_console.print(
            f"training kept {s['training_throughput_retention']} of its throughput alone; {lending}; power over the {s['power_cap_w']:.1f} W cap "
            f"in {s['power_over_cap_fraction']} of {s['control_periods']} periods (worst {s['max_overshoot_fraction']:.1%}); "
            f"{s['lost_requests']} requests lost; {s['joules_per_video']} J/video ({s['power_source']})",
            highlight=False,
        )
        err_console.print(f"report: {result.report_html}", highlight=False)

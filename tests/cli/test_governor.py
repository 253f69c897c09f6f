"""`garrison demo`'s options: the CLI imports the demo lazily (it loads torch), so its defaults are literals that
must stay those of DemoConfig."""

from __future__ import annotations

import inspect

from typer.models import OptionInfo

from garrison.cli.main import app
from garrison.governor.demo import DemoConfig


def test_the_demo_commands_defaults_are_the_demo_configs():
    command = next(c for c in app.registered_commands if c.callback and c.callback.__name__ == "demo")
    params = inspect.signature(command.callback).parameters
    for name in ("first_burst", "train_after_videos", "second_burst", "train_steps"):
        default = params[name].default
        assert isinstance(default, OptionInfo)
        assert default.default == getattr(DemoConfig, name), name


def test_bad_demo_options_are_refused_with_a_reason_before_anything_runs(tmp_path):
    from typer.testing import CliRunner

    for option, value in (("--first-burst", "0"), ("--train-after-videos", "-1"), ("--train-steps", "2")):
        result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), option, value])
        assert result.exit_code != 0, option
        assert option in result.output, result.output
        assert not (tmp_path / "demo").exists()

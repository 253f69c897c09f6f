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
    for name in ("first_burst", "second_burst", "train_steps"):
        default = params[name].default
        assert isinstance(default, OptionInfo)
        assert default.default == getattr(DemoConfig, name), name

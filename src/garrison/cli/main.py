"""The `garrison` command: thin typer commands over the layers.

Every command takes `--json` and then prints one JSON object (one per line for batches). Errors a user can fix
are printed as one line on stderr with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="garrison",
    help="Text-to-video serving that shares its fleet with training, holds a power cap, and signs what it makes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# --- sub-command registrations: each module adds its commands to `app` ---------------------------------------------
from garrison.cli import video as _video  # noqa: E402

_video.register(app)
from garrison.cli import energy as _energy  # noqa: E402

_energy.register(app)
from garrison.cli import shield as _shield  # noqa: E402

_shield.register(app)
_video.eval_app.command("policy")(_shield.eval_policy_command)
from garrison.cli import governor as _governor  # noqa: E402

_governor.register(app)
from garrison.cli import server as _server  # noqa: E402

_server.register(app)
from garrison.cli import tenants as _tenants  # noqa: E402

_tenants.register(app)
from garrison.cli import plan as _plan  # noqa: E402

_plan.register(app)
# --- end of sub-command registrations ------------------------------------------------------------------------------


def main() -> None:
    app()


if __name__ == "__main__":
    main()

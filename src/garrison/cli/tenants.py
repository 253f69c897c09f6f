"""`garrison tenants create|list|revoke`: API keys per tenant, kept in the store (only a hash of each key).

The key is printed once, by `create`; it cannot be shown again, only revoked and replaced by a new tenant.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import typer

from garrison.cli.common import fail, print_json

tenants_app = typer.Typer(
    help="API keys per tenant: create (the key is shown once), list, revoke.", no_args_is_help=True
)

STORE_HELP = "Store URL (default: GARRISON_DB_URL, else SQLite in $GARRISON_HOME)."


def _open(store_url: str | None) -> Any:
    from garrison.store import StoreError, open_store

    try:
        return open_store(store_url)
    except (StoreError, ValueError) as e:
        fail(f"cannot open the store: {e}")
    except Exception as e:  # SQLAlchemy's errors for a malformed or unreachable URL
        fail(f"cannot open the store at {store_url!r}: {type(e).__name__}: {str(e)[:200]}")


def tenant_dict(tenant: Any) -> dict[str, Any]:
    """A tenant as printed by --json (never the key: only its first characters, for recognition)."""
    return {
        "id": tenant.id,
        "name": tenant.name,
        "admin": tenant.admin,
        "created_at": tenant.created_at,
        "revoked_at": tenant.revoked_at,
        "videos_per_day": tenant.videos_per_day,
        "joules_per_day": tenant.joules_per_day,
        "requests_per_minute": tenant.requests_per_minute,
        "key_prefix": tenant.key_prefix,
    }


def _when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _limit(value: Any, unit: str) -> str:
    return "unlimited" if value is None else f"{value:g} {unit}"


@tenants_app.command("create")
def create(
    name: str = typer.Argument(..., help="The tenant's name (unique)."),
    admin: bool = typer.Option(False, "--admin", help="May submit training jobs and see the whole fleet."),
    videos_per_day: int = typer.Option(None, help="Videos a UTC day (default: unlimited)."),
    joules_per_day: float = typer.Option(None, help="Joules a UTC day (default: unlimited)."),
    requests_per_minute: int = typer.Option(None, help="API requests a minute (default: unlimited)."),
    store: str = typer.Option(None, help=STORE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (with the key)."),
) -> None:
    """Create a tenant and print its API key (shown once; only its hash is stored)."""
    from garrison.store import Conflict

    db = _open(store)
    try:
        tenant, api_key = db.create_tenant(
            name,
            admin=admin,
            videos_per_day=videos_per_day,
            joules_per_day=joules_per_day,
            requests_per_minute=requests_per_minute,
        )
    except Conflict as e:
        fail(str(e))
    except ValueError as e:
        fail(f"cannot create tenant: {e}")
    if as_json:
        print_json({**tenant_dict(tenant), "api_key": api_key})
        return
    typer.echo(f"created tenant {tenant.name} ({tenant.id}{', admin' if tenant.admin else ''})")
    typer.echo(f"api key: {api_key}")
    typer.echo("this key is shown once; store it now (garrison keeps only its hash)")


@tenants_app.command("list")
def list_tenants(
    store: str = typer.Option(None, help=STORE_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per tenant."),
) -> None:
    """List tenants with their quotas and whether they are revoked."""
    tenants = _open(store).list_tenants()
    if as_json:
        for tenant in tenants:
            print_json(tenant_dict(tenant))
        return
    if not tenants:
        typer.echo("no tenants yet: garrison tenants create NAME")
        return
    for t in tenants:
        state = f"revoked {_when(t.revoked_at)}" if t.revoked_at is not None else "active"
        typer.echo(
            f"{t.name:20s} {t.id}  {t.key_prefix}...  {'admin ' if t.admin else ''}{state}; "
            f"{_limit(t.videos_per_day, 'videos/day')}, {_limit(t.joules_per_day, 'J/day')}, "
            f"{_limit(t.requests_per_minute, 'req/min')}; created {_when(t.created_at)}"
        )


@tenants_app.command("revoke")
def revoke(
    name: str = typer.Argument(..., help="The tenant whose key stops working."),
    store: str = typer.Option(None, help=STORE_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Revoke a tenant's key: every request with it is answered 401 from now on."""
    from garrison.store import NotFound

    try:
        tenant = _open(store).revoke_tenant(name)
    except NotFound:
        fail(f"no tenant named {name!r} (see garrison tenants list)")
    if as_json:
        print_json(tenant_dict(tenant))
    else:
        typer.echo(f"revoked {tenant.name} ({tenant.id}) at {_when(tenant.revoked_at)}")


def register(app: typer.Typer) -> None:
    app.add_typer(tenants_app, name="tenants")

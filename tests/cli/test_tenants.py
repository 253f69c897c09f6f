"""`garrison tenants create|list|revoke` through typer's runner, on a real SQLite store in the test's GARRISON_HOME."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from garrison.cli.tenants import register
from garrison.store import open_store


def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        pass

    register(root)
    return root


def run(*args: str):
    return CliRunner().invoke(app(), ["tenants", *args])


def test_create_shows_the_key_once_and_stores_only_its_hash(isolated_home, tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    result = run("create", "acme", "--videos-per-day", "5", "--store", url, "--json")
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    key = created["api_key"]
    assert key.startswith("gk-") and created["name"] == "acme" and created["videos_per_day"] == 5
    store = open_store(url)
    assert store.authenticate(key).name == "acme"
    listed = [json.loads(line) for line in run("list", "--store", url, "--json").stdout.splitlines()]
    assert [t["name"] for t in listed] == ["acme"]
    assert "api_key" not in listed[0] and listed[0]["key_prefix"] == key[:8]
    assert key not in (tmp_path / "g.db").read_bytes().decode("latin-1")  # only the hash is stored


def test_text_output_and_default_store_under_garrison_home(isolated_home):
    result = run("create", "ops", "--admin")
    assert result.exit_code == 0, result.output
    assert "api key: gk-" in result.stdout and "shown once" in result.stdout
    assert (isolated_home / "garrison.db").is_file()
    listing = run("list").stdout
    assert "ops" in listing and "admin" in listing and "unlimited" in listing


def test_revoke_stops_the_key(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    key = json.loads(run("create", "acme", "--store", url, "--json").stdout)["api_key"]
    result = run("revoke", "acme", "--store", url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["revoked_at"] is not None
    assert open_store(url).authenticate(key) is None
    assert "revoked" in run("list", "--store", url).stdout


def test_bad_input_is_one_clear_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    assert run("create", "acme", "--store", url).exit_code == 0
    dup = run("create", "acme", "--store", url)
    assert dup.exit_code != 0 and "exists" in dup.output and "Traceback" not in dup.output
    neg = run("create", "other", "--videos-per-day", "-1", "--store", url)
    assert neg.exit_code != 0 and "videos_per_day" in neg.output
    missing = run("revoke", "nobody", "--store", url)
    assert missing.exit_code != 0 and "no tenant named 'nobody'" in missing.output

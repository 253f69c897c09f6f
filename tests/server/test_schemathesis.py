"""A bounded schemathesis run against the app's own OpenAPI schema: whatever it sends, no 5xx comes back.

It runs in process over the real app and a real SQLite store, with a valid key (so requests reach the handlers, not
just the auth check) and without one. Bounded: a few examples per operation, well under a minute in all.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from garrison.server.app import create_app
from garrison.store import open_store

EXAMPLES_PER_OPERATION = 25


@pytest.fixture
def api(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'g.db'}")
    _, key = store.create_tenant("fuzz", admin=True)
    app = create_app(store, content_dir=tmp_path / "content")
    # A few rows so ids and cursors can hit something real.
    with TestClient(app) as client:
        client.post("/v1/videos", headers={"Authorization": f"Bearer {key}"}, json={"prompt": "a red circle"})
    app.state.fuzz_key = key
    yield app
    store.close()


@pytest.fixture
def api_schema(api):
    return schemathesis.openapi.from_asgi("/openapi.json", api)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same examples every run: a CI failure reproduces
)
def test_no_server_errors(case, api):
    for headers in ({"Authorization": f"Bearer {api.state.fuzz_key}"}, {}):
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:500])
        if response.status_code >= 400:
            error = response.json()["error"]
            assert error["message"] and error["type"], response.text

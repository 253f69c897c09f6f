"""The server process's settings, and what it keeps out of memory."""

import subprocess
import sys


def test_a_serving_process_runs_blas_on_one_thread():
    code = (
        "from threadpoolctl import threadpool_info\n"
        "from garrison.server.app import configure_server_process\n"
        "configure_server_process()\n"
        "print(sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[1]", out.stderr[-2000:]


def test_the_server_creates_videos_without_importing_torch(tmp_path):
    """torch costs a process ~135 MB of private memory and ~75 MB of library pages, and the server never runs the video
    model: the app, the prompt policy (embedding stage included) and the cost estimate must all work without it."""
    code = f"""
import os, sys
os.environ["GARRISON_HOME"] = {str(tmp_path / "home")!r}
from fastapi.testclient import TestClient
from garrison.server.admission import estimate_flops
from garrison.server.app import configure_server_process, create_app
from garrison.shield.policy import default_policy
from garrison.store import open_store

configure_server_process()
store = open_store({f"sqlite:///{tmp_path / 'garrison.db'}"!r})
_, key = store.create_tenant("acme")
auth = {{"Authorization": f"Bearer {{key}}"}}
with TestClient(create_app(store, content_dir={str(tmp_path / "content")!r})) as client:
    body = {{"prompt": "a red circle moving right on a black background", "seconds": "2", "size": "1280x720"}}
    created = client.post("/v1/videos", headers=auth, json=body)
    assert created.status_code == 200, created.text
    got = client.get(f"/v1/videos/{{created.json()['id']}}", headers=auth)
    assert got.json()["garrison"]["native_size"] == "112x64", got.text
    body["prompt"] = "a yellow sponge wearing square pants who lives inside a pineapple at the bottom of the sea"
    refused = client.post("/v1/videos", headers=auth, json=body)
    assert refused.status_code == 400 and "copyright" in refused.text, refused.text
assert default_policy().check("an apple pie").decision == "allow"
assert estimate_flops("a red circle", 4, "1280x720", 8, 4.0, 0) > 1e9
print("torch" in sys.modules, "transformers" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]

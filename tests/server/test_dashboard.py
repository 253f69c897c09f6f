"""The operators' dashboard: its JSON feed and thumbnails over HTTP, and the page in a real headless Chromium.

Everything runs for real: a SQLite store filled the way the governor and workers fill it (samples where power crosses
the cap and is then held under it, allocation changing, decisions, completed videos with JPEG thumbnails made by
Pillow), the router mounted on a FastAPI app served by uvicorn on a loopback port, Debian's Chromium driven by
Playwright. Without /usr/bin/chromium the browser tests skip, and fail under CI.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from PIL import Image, ImageDraw

from garrison.server.dashboard import dashboard_router
from garrison.server.errors import install_error_handlers
from garrison.store import Store, open_store

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
POWER_RGB = (0xE4, 0x57, 0x2E)  # dashboard.js COLORS.power
CAP_RGB = (0x1F, 0x4F, 0xD6)  # dashboard.js COLORS.cap
POOL_RGB = {"training": (0x6A, 0x3D, 0x9A), "serving": (0x2C, 0xA0, 0x2C), "lent": (0xFF, 0x7F, 0x0E)}  # COLORS.pools
POWER_CAP_W = 1000.0
N_SAMPLES = 120
SAMPLE_PERIOD_S = 2.0
GATE_REASON = "serving at quality level 2 to hold the 1000 W cap; SLO attainment 0.91 is below the 0.95 target"


@dataclass
class Fleet:
    """The filled store and what the tests need to know about it."""

    store: Store
    admin_key: str
    user_key: str
    revoked_key: str
    completed_ids: list[str]  # newest first
    queued_id: str
    in_progress_id: str
    failed_id: str
    thumbnail_sizes: dict[str, tuple[int, int]]


def _power_w(i: int) -> float:
    """Fleet power at sample i: rising from 620 W, over the cap at samples 40..54 (peaking at 1,150 W), then the
    governor holds it at about 940 W."""
    if i < 40:
        return 620.0 + 9.0 * i
    if i < 55:
        return 1000.0 + 150.0 * (1.0 - abs(i - 47) / 8.0) + 1.0
    return 940.0 + 8.0 * ((i % 5) - 2)


def _allocation(i: int) -> dict[str, int]:
    if i < 30:
        return {"training": 4, "serving": 2, "lent": 2, "idle": 0}
    if i < 60:
        return {"training": 4, "serving": 2, "lent": 1, "idle": 1}  # one lent device reclaimed and drained
    return {"training": 5, "serving": 2, "lent": 0, "idle": 1}


def _thumbnail(path: Path, size: tuple[int, int], rgb: tuple[int, int, int]) -> None:
    """A frame of the built-in world: one solid shape on a plain background, saved as the worker saves it (JPEG)."""
    image = Image.new("RGB", size, (10, 12, 40))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w // 4, h // 4, w // 4 + h // 2, h // 4 + h // 2), fill=rgb)
    image.save(path, "JPEG", quality=90)


def fill_fleet(store: Store, content_dir: Path) -> Fleet:
    """Fill `store` the way a running garrison would have."""
    _, admin_key = store.create_tenant("ops", admin=True)
    acme, user_key = store.create_tenant("acme")
    globex, _ = store.create_tenant("globex")
    store.create_tenant("former-ops", admin=True)
    revoked_key = store.create_tenant("old-admin", admin=True)[1]
    store.revoke_tenant("old-admin")

    now = time.time()
    for i in range(N_SAMPLES):
        ts = now - (N_SAMPLES - i) * SAMPLE_PERIOD_S
        over = _power_w(i) > POWER_CAP_W
        store.record_sample(
            ts,
            _power_w(i),
            POWER_CAP_W,
            _allocation(i),
            queue_depth=max(0, 3 + (i - 40) // 3) if 40 <= i < 80 else 2,
            gate="degraded" if i >= 45 else "online",
            extra={"slo_attainment": 0.99 - (0.08 if i >= 45 else 0.0), "quality_level": 2 if i >= 45 else 0},
        )
        if i in (41, 44, 47, 60):
            store.record_decision(
                i,
                "set_quality" if i < 47 else ("reclaim" if i == 47 else "lend"),
                "serving" if i < 47 else "cpu:3",
                f"fleet at {_power_w(i):.0f} W over the {POWER_CAP_W:.0f} W cap" if over else "headroom 60 W",
                {"power_w": _power_w(i)},
            )
    store.set_setting("gate.state", "degraded")
    store.set_setting("gate.reason", GATE_REASON)
    store.set_setting("serving.quality_level", 2)
    store.set_setting("admission.mode", "queue")
    store.set_setting("fleet.devices", [f"cpu:{n}" for n in range(8)])

    common = {"model": "garrison-builtin-dit", "steps": 12, "guidance": 4.0}
    thumbnail_sizes: dict[str, tuple[int, int]] = {}
    completed: list[str] = []
    shapes = [((112, 64), (230, 40, 40)), ((64, 64), (240, 200, 20)), ((64, 112), (40, 200, 90))]
    for n, (size, rgb) in enumerate(shapes):
        tenant = acme if n % 2 == 0 else globex
        video, _ = store.create_video(
            tenant.id, prompt=f"a shape {n} moving right", seconds=2, size=f"{size[0]}x{size[1]}", seed=n, **common
        )
        claimed = store.claim_video("worker-1", "cpu:0", lease_s=60.0, quality_level=2)
        assert claimed is not None and claimed.id == video.id
        thumb = content_dir / f"{video.id}.jpg"
        _thumbnail(thumb, size, rgb)
        assert store.complete_video(
            video.id,
            "worker-1",
            path=str(content_dir / f"{video.id}.mp4"),
            thumbnail_path=str(thumb),
            seconds_wall=0.55 + n,
            joules=41.5 * (n + 1),
            energy_source="estimate",
            cost_usd=2.0e-6 * (n + 1),
            co2_g=0.004 * (n + 1),
            flops=8.36e10,
            steps_used=6,
            native_size=f"{size[0]}x{size[1]}",
            scaled=False,
            provenance={},
        )
        thumbnail_sizes[video.id] = size
        completed.insert(0, video.id)
        time.sleep(0.002)  # distinct created_at, so "newest first" has one answer
    in_progress, _ = store.create_video(
        acme.id, prompt="a blue square drifting up", seconds=4, size="64x64", seed=9, **common
    )
    assert store.claim_video("worker-2", "cpu:1", lease_s=60.0, quality_level=2).id == in_progress.id
    store.heartbeat(in_progress.id, "worker-2", progress=40, lease_s=60.0)
    failed, _ = store.create_video(
        globex.id, prompt="a red wedge gliding left", seconds=2, size="64x64", seed=3, **common
    )
    store.fail_video(failed.id, None, "worker_lost", "the worker stopped reporting 3 times")
    queued, _ = store.create_video(globex.id, prompt="a <b>bold</b> circle", seconds=2, size="64x64", seed=4, **common)
    return Fleet(
        store, admin_key, user_key, revoked_key, completed, queued.id, in_progress.id, failed.id, thumbnail_sizes
    )


class LoopbackServer:
    """uvicorn serving `app` on 127.0.0.1 on a free port, in a thread."""

    def __init__(self, app: FastAPI) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        deadline = time.monotonic() + 20.0
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10.0)
        self.sock.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("dashboard")
    content_dir = root / "content"
    content_dir.mkdir()
    store = open_store(f"sqlite:///{root / 'garrison.db'}")
    try:
        yield fill_fleet(store, content_dir)
    finally:
        store.close()


@pytest.fixture(scope="module")
def server(fleet) -> Iterator[LoopbackServer]:
    with LoopbackServer(dashboard_app(fleet.store)) as running:
        yield running


def dashboard_app(store: Store) -> FastAPI:
    """The router over `store` on an app with the server's error handlers, as create_app mounts it."""
    return dashboard_app_over(lambda: store)


def dashboard_app_over(store_getter: Callable[[], Store]) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(dashboard_router(store_getter))
    return app


@pytest.fixture
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        yield client


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _assert_openai_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"]
    return error


# --- the JSON feed and thumbnails ----------------------------------------------------------------------------------


def test_data_needs_an_admin_key(http, fleet):
    error = _assert_openai_error(http.get("/dashboard/data"), 401, "missing_api_key")
    assert "Authorization: Bearer" in error["message"]
    _assert_openai_error(http.get("/dashboard/data", headers={"Authorization": "Basic abc"}), 401, "invalid_api_key")
    _assert_openai_error(http.get("/dashboard/data", headers=_auth("gk-not-a-key")), 401, "invalid_api_key")
    _assert_openai_error(http.get("/dashboard/data", headers=_auth(fleet.revoked_key)), 401, "invalid_api_key")
    error = _assert_openai_error(http.get("/dashboard/data", headers=_auth(fleet.user_key)), 403, "forbidden")
    assert "acme" in error["message"] and "admin" in error["message"]


def test_data_has_power_allocation_gate_queue_and_videos(http, fleet):
    response = http.get("/dashboard/data", headers=_auth(fleet.admin_key))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    data = response.json()

    samples = data["samples"]
    assert len(samples["ts"]) == N_SAMPLES and samples["ts"] == sorted(samples["ts"])
    assert samples["power_w"] == [_power_w(i) for i in range(N_SAMPLES)]
    assert set(samples["power_cap_w"]) == {POWER_CAP_W}
    assert set(samples["allocation"]) == {"training", "serving", "lent", "idle"}
    assert samples["allocation"]["lent"][0] == 2 and samples["allocation"]["lent"][-1] == 0
    assert samples["allocation"]["training"][-1] == 5
    assert samples["slo_attainment"][0] == pytest.approx(0.99) and samples["slo_attainment"][-1] == pytest.approx(0.91)

    assert data["governor"]["reporting"] is True
    assert data["power"] == {"power_w": _power_w(N_SAMPLES - 1), "power_cap_w": POWER_CAP_W}
    assert data["allocation"] == {"training": 5, "serving": 2, "lent": 0, "idle": 1}
    assert data["gate"] == {"state": "degraded", "reason": GATE_REASON}
    assert data["serving"] == {"quality": {"level": 2, "name": "6-steps"}, "admission_mode": "queue"}
    assert len(data["fleet"]["devices"]) == 8
    assert data["slo"]["attainment"] == pytest.approx(0.91)
    queue = data["queue"]
    assert (queue["queued"], queue["in_progress"]) == (1, 1)
    assert queue["completed_last_minute"] == 3 and queue["failed_last_minute"] == 1
    assert queue["joules_last_minute"] == pytest.approx(41.5 * 6)

    decisions = data["decisions"]
    assert [d["tick"] for d in decisions] == [60, 47, 44, 41]  # newest first
    assert decisions[1]["action"] == "reclaim" and "over the 1000 W cap" in decisions[1]["reason"]

    videos = data["videos"]
    ids = [v["id"] for v in videos]
    assert ids == [fleet.queued_id, fleet.failed_id, fleet.in_progress_id, *fleet.completed_ids]  # across tenants
    assert {v["tenant"] for v in videos} == {"acme", "globex"}
    by_id = {v["id"]: v for v in videos}
    newest_done = by_id[fleet.completed_ids[0]]
    assert newest_done["status"] == "completed" and newest_done["joules"] == pytest.approx(41.5 * 3)
    assert newest_done["cost_usd"] == pytest.approx(6.0e-6) and newest_done["energy_source"] == "estimate"
    assert newest_done["thumbnail_url"] == f"/dashboard/thumbnails/{fleet.completed_ids[0]}"
    assert by_id[fleet.in_progress_id]["progress"] == 40 and by_id[fleet.in_progress_id]["thumbnail_url"] is None
    assert by_id[fleet.failed_id]["error_code"] == "worker_lost"
    assert data["totals"]["joules"] == pytest.approx(41.5 * 6)
    assert data["totals"]["cost_usd"] == pytest.approx(12.0e-6)


def test_window_limits_the_samples(http, fleet):
    data = http.get("/dashboard/data", params={"window_s": 30}, headers=_auth(fleet.admin_key)).json()
    assert 0 < len(data["samples"]["ts"]) <= 30 / SAMPLE_PERIOD_S + 1
    assert data["samples"]["ts"][-1] == pytest.approx(time.time() - SAMPLE_PERIOD_S, abs=120)
    for bad in ("0", "-5", "abc", "nan", "inf", str(10 * 86400)):
        response = http.get("/dashboard/data", params={"window_s": bad}, headers=_auth(fleet.admin_key))
        error = _assert_openai_error(response, 400, "invalid_value")
        assert error["param"] == "window_s" and "window_s must be" in error["message"]


def test_thumbnails_are_served_to_admins_only(http, fleet):
    video_id = fleet.completed_ids[0]
    _assert_openai_error(http.get(f"/dashboard/thumbnails/{video_id}"), 401, "missing_api_key")
    _assert_openai_error(http.get(f"/dashboard/thumbnails/{video_id}", headers=_auth(fleet.user_key)), 403, "forbidden")
    response = http.get(f"/dashboard/thumbnails/{video_id}", headers=_auth(fleet.admin_key))
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert Image.open(BytesIO(response.content)).size == fleet.thumbnail_sizes[video_id]
    for missing in (fleet.in_progress_id, "video_0123456789abcdef"):
        response = http.get(f"/dashboard/thumbnails/{missing}", headers=_auth(fleet.admin_key))
        _assert_openai_error(response, 404, "not_found")
    response = http.get("/dashboard/thumbnails/..%2F..%2Fetc%2Fpasswd", headers=_auth(fleet.admin_key))
    assert response.status_code in (400, 404)
    _assert_openai_error(http.get("/dashboard/thumbnails/video_x.y", headers=_auth(fleet.admin_key)), 400, "invalid_id")


def test_page_and_static_files_are_public(http):
    page = http.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<canvas" not in page.text and 'id="chart-power"' in page.text  # uPlot adds the canvases
    for name, media in (("dashboard.js", "text/javascript"), ("uPlot.iife.min.js", "text/javascript")):
        response = http.get(f"/dashboard/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(media)
    assert "MIT License" in http.get("/dashboard/static/uPlot.LICENSE").text
    traversal = http.get("/dashboard/static/..%2Fdashboard.py")
    assert traversal.status_code == 404 and "import" not in traversal.text
    _assert_openai_error(http.get("/dashboard/static/app.py"), 404, "not_found")


def test_an_empty_store_says_the_governor_has_not_reported(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        _, key = store.create_tenant("ops", admin=True)
        with LoopbackServer(dashboard_app(store)) as running:
            data = httpx.get(f"{running.url}/dashboard/data", headers=_auth(key), timeout=10.0).json()
    finally:
        store.close()
    assert data["governor"] == {"reporting": False, "last_sample_ts": None}
    assert data["gate"] == {"state": "offline", "reason": "the governor has not reported"}
    assert data["power"] == {"power_w": None, "power_cap_w": None}
    assert data["samples"]["ts"] == [] and data["samples"]["allocation"] == {}
    assert data["videos"] == [] and data["decisions"] == [] and data["slo"]["attainment"] is None


def test_an_unreachable_store_is_a_503_with_a_reason(tmp_path):
    # A real failure: SQLite cannot create a database under /proc, so opening the store raises StoreError.
    app = dashboard_app_over(lambda: open_store("sqlite:////proc/garrison-dashboard-test.db"))
    with LoopbackServer(app) as running:
        for path in ("/dashboard/data", "/dashboard/thumbnails/video_0123456789abcdef"):
            response = httpx.get(f"{running.url}{path}", headers=_auth("gk-anything"), timeout=30.0)
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "store_unavailable" and "retry" in error["message"]
            assert "/proc" not in error["message"]  # where the database lives is for the log, not the caller
            assert response.headers["retry-after"] == "2"


# --- the page in Chromium -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, device_scale_factor=1)
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    problems: list[str] = []
    opened.on(
        "console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
    )
    opened.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    opened.problems = problems
    yield opened
    context.close()


def _near(pixel: tuple[int, ...], rgb: tuple[int, int, int], tolerance: int) -> bool:
    return all(abs(pixel[c] - rgb[c]) <= tolerance for c in range(3))


def test_page_draws_power_gate_and_thumbnails(page, server, fleet, tmp_path):
    page.goto(f"{server.url}/dashboard")
    assert page.locator("#login").is_visible() and not page.locator("#board").is_visible()
    page.fill("#api-key", fleet.admin_key)
    page.click("#key-submit")

    # Charts drawn with every sample, the thumbnails of the three completed videos decoded.
    page.wait_for_function(f"document.querySelector('#chart-power').dataset.points === '{N_SAMPLES}'")
    page.wait_for_function(f"document.querySelector('#chart-allocation').dataset.points === '{N_SAMPLES}'")
    page.wait_for_function(
        "(() => { const imgs = [...document.querySelectorAll('#videos img.thumb')];"
        " return imgs.length === 3 && imgs.every((i) => i.complete && i.naturalWidth > 0); })()"
    )
    assert page.locator("#gate-state").inner_text() == "degraded"
    assert page.locator("#gate-reason").inner_text() == GATE_REASON
    assert page.locator("#power-cap").inner_text() == "1000 W"
    assert page.locator("#slo-attainment").inner_text() == "91.0 %"
    assert page.locator("#decisions tbody tr").count() == 4
    legend = page.locator("#chart-power .u-legend").inner_text()
    assert f"{_power_w(N_SAMPLES - 1):.0f} W" in legend and "1000 W" in legend  # the latest values, cursor away
    cards = page.locator("#videos .video")
    assert cards.count() == 6
    assert cards.first.get_attribute("data-video-id") == fleet.queued_id
    assert cards.first.locator(".prompt").inner_text() == "a <b>bold</b> circle"  # shown as text, never as HTML
    sizes = page.evaluate(
        "[...document.querySelectorAll('#videos img.thumb')].map((i) => [i.naturalWidth, i.naturalHeight])"
    )
    assert sorted(map(tuple, sizes)) == sorted(fleet.thumbnail_sizes.values())
    assert page.evaluate("sessionStorage.getItem('garrison.dashboard.key')") == fleet.admin_key

    # The key is asked once per tab: a reload goes straight to the board.
    page.reload()
    page.wait_for_function(f"document.querySelector('#chart-power')?.dataset.points === '{N_SAMPLES}'")
    assert not page.locator("#login").is_visible()
    assert page.problems == []

    shot_path = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot_path), full_page=True)
    shot = Image.open(shot_path).convert("RGB")
    pixels = shot.load()

    # Not blank: many distinct colours across the page.
    assert len(shot.getcolors(maxcolors=1 << 20) or []) > 200

    # In the power chart's plot area: the cap is one horizontal line across it, and the power line is drawn both
    # above it (the crossing) and below it (before, and held under after).
    box = page.locator("#chart-power canvas").bounding_box()
    left, top, width, height = (int(round(v)) for v in (box["x"], box["y"], box["width"], box["height"]))
    cap_rows: dict[int, int] = {}
    power_rows: list[int] = []
    for y in range(top, top + height):
        for x in range(left, left + width):
            pixel = pixels[x, y]
            if _near(pixel, CAP_RGB, 24):
                cap_rows[y] = cap_rows.get(y, 0) + 1
            elif _near(pixel, POWER_RGB, 48):
                power_rows.append(y)
    assert cap_rows, "no pixel of the cap line's colour in the power chart"
    cap_y, cap_count = max(cap_rows.items(), key=lambda item: item[1])
    assert cap_count > 0.5 * width, f"the cap line spans {cap_count} px of a {width} px chart"
    assert len(power_rows) > 200, f"only {len(power_rows)} pixels of the power line's colour"
    assert sum(1 for y in power_rows if y < cap_y - 3) > 20, "the power line never goes above the cap"
    assert sum(1 for y in power_rows if y > cap_y + 3) > 100, "the power line is never under the cap"

    # The allocation chart is stacked areas filled with each pool's colour at 60% over the white page.
    box = page.locator("#chart-allocation canvas").bounding_box()
    crop = shot.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"])))
    area = crop.width * crop.height
    for pool, rgb in POOL_RGB.items():
        fill = tuple(round(0.6 * c + 0.4 * 255) for c in rgb)
        filled = sum(1 for p in crop.getdata() if _near(p, fill, 12))
        assert filled > 0.02 * area, f"{pool}: {filled} px of its fill colour {fill} in a {area} px chart"


def test_page_rejects_a_wrong_key_and_asks_again(page, server, fleet):
    page.goto(f"{server.url}/dashboard")
    page.fill("#api-key", fleet.user_key)
    page.click("#key-submit")
    page.wait_for_function("document.querySelector('#key-error').textContent.length > 0")
    assert "not an admin" in page.locator("#key-error").inner_text()
    assert page.locator("#login").is_visible() and not page.locator("#board").is_visible()
    assert page.evaluate("sessionStorage.getItem('garrison.dashboard.key')") is None


def test_page_starts_empty_and_follows_the_governor(page, tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'live.db'}")
    try:
        _, key = store.create_tenant("ops", admin=True)
        with LoopbackServer(dashboard_app(store)) as running:
            page.goto(f"{running.url}/dashboard")
            page.fill("#api-key", key)
            page.click("#key-submit")
            # Nothing reported yet: the page says so instead of drawing made-up zeros.
            page.wait_for_function("document.querySelector('#gate-state').textContent === 'offline'")
            assert page.locator("#gate-reason").inner_text() == "the governor has not reported"
            assert page.locator("#power-now").inner_text() == "–"
            assert "governor has not reported" in page.locator("#status").inner_text()

            # The governor starts writing; the page picks it up on its own within a few polls.
            now = time.time()
            for i in range(5):
                store.record_sample(now - 5 + i, 700.0 + 10 * i, 900.0, {"training": 2, "serving": 2}, 0, "online", {})
            store.set_setting("gate.state", "online")
            store.set_setting("gate.reason", "power 740 W under the 900 W cap; SLO met")
            page.wait_for_function("document.querySelector('#chart-power').dataset.points === '5'", timeout=10_000)
            page.wait_for_function("document.querySelector('#gate-state').textContent === 'online'")
            assert page.locator("#power-now").inner_text() == "740 W"
            assert page.locator("#gate-reason").inner_text() == "power 740 W under the 900 W cap; SLO met"
            assert page.locator("#chart-power .u-legend").inner_text().count("740 W") == 1  # legend at the latest
            assert "governor reporting" in page.locator("#status").inner_text()
            assert page.problems == []
    finally:
        store.close()

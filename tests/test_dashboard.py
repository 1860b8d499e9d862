"""The dashboard: live page in headless chromium, the workspace file route, the token gate."""

from __future__ import annotations

import http.client
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest

from swapd.dashboard.app import FileRefused, served_path
from swapd.dashboard.server import DashboardConfigError, DashboardServer
from swapd.state import FaceRecord, StateStore
from swapd.workspace import Workspace

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = Path(__file__).resolve().parents[1] / "test-artifacts" / "dashboard.png"
JOB = "alice_to_bob"
CELL = 64
TOKEN = "k3Yq-9vTzR2mWb7xLpA4"


def write_grid(path: Path, rows: int, seed: int) -> None:
    """A synthetic 6-column preview grid (A, A>A, A>B, B, B>B, B>A) of cartoon faces."""
    rng = np.random.default_rng(seed)
    grid = np.full((rows * CELL, 6 * CELL, 3), 235, np.uint8)
    for r in range(rows):
        for c in range(6):
            x, y = c * CELL + CELL // 2, r * CELL + CELL // 2
            skin = (90, 150, 220) if c < 3 else (120, 180, 160)
            tint = tuple(int(v) for v in np.clip(np.array(skin) + rng.integers(-25, 25, 3), 0, 255))
            cv2.ellipse(grid, (x, y), (22, 28), 0, 0, 360, tint, -1)
            for dx in (-9, 9):
                cv2.circle(grid, (x + dx, y - 7), 3, (40, 40, 40), -1)
            cv2.ellipse(grid, (x, y + 11), (9, 4), 0, 0, 180, (60, 60, 160), 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), grid)


def loss_rows(start: int, stop: int) -> list[tuple[int, float, float, float]]:
    rng = np.random.default_rng(start)
    now = time.time()
    return [(it, now, 0.02 + 0.2 * np.exp(-it / 150) + rng.uniform(0, 0.004),
             0.025 + 0.25 * np.exp(-it / 180) + rng.uniform(0, 0.004))
            for it in range(start, stop)]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage  # case-insensitive
    body: bytes


def http_get(url: str, path: str, headers: dict[str, str] | None = None,
             method: str = "GET") -> Reply:
    """A request with the path sent exactly as given (no client-side normalisation)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "ws")


# --- the page in a real browser -------------------------------------------------------------


def _chrome(tmp_path: Path) -> WebDriver:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian chromium and chromedriver at /usr/bin (apt install chromium "
                    "chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def _wait(driver: WebDriver, script: str, what: str, timeout: float = 20.0) -> object:
    """Poll a JavaScript expression until it is truthy; fail naming what was awaited."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(
            lambda d: d.execute_script(f"return {script}"))
    except TimeoutException:
        body = driver.execute_script("return document.body.innerText")[:2000]
        pytest.fail(f"timed out waiting for {what}; page text:\n{body}")


def _text(driver: WebDriver, selector: str) -> str:
    """An element's text, read in one script call (the page re-renders every refresh, so a
    found element can be replaced before its text is read)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''", selector)


def _wait_text(driver: WebDriver, selector: str, *needles: str) -> None:
    """Wait until an element's text contains every needle."""
    script = ("(() => { const e = document.querySelector(%s);"
              " return !!e && %s.every(n => e.textContent.includes(n)); })()")
    _wait(driver, script % (json.dumps(selector), json.dumps(list(needles))),
          f"{selector} to show {needles}")


GRAPH = "document.querySelector('#loss-graph .js-plotly-plot')"


def _fill(ws: Workspace, store: StateStore) -> dict[str, Path]:
    store.upsert_job(JOB, str(ws.jobs / f"{JOB}.toml"), "train", "queued", model="lightweight",
                     target=10_000)
    store.set_job_state(JOB, "training")
    store.add_losses(JOB, loss_rows(0, 200))
    store.set_job_progress(JOB, 199, egs=48.6)
    preview = ws.previews_dir(JOB) / "preview_000199.png"
    write_grid(preview, rows=4, seed=1)
    store.add_artifact(JOB, "preview", f"models/{JOB}/previews/{preview.name}", iteration=199)
    merged = ws.output / JOB / "clip_swapped.mp4"
    merged.parent.mkdir(parents=True)
    merged.write_bytes(b"\0" * 4096)
    store.add_artifact(JOB, "merge", str(merged), info={"source": "footage/clip.mp4"})
    export = ws.exports_dir(JOB) / "lightweight_000199.onnx"
    export.parent.mkdir(parents=True)
    export.write_bytes(b"onnx" * 100)
    store.add_artifact(JOB, "export", str(export), iteration=199)
    bad = ws.faces / "bob" / "face_0007.png"
    store.report_problem(str(bad), "face", "not a PNG: the file is truncated", key="IHDR",
                         moved_to=str(ws.quarantine / "bob" / "face_0007.png"))
    store.index_faces(
        [FaceRecord("bob", f"face_{i:04d}.png", "ok", 1000, 1, hash=f"h{i % 6}")
         for i in range(7)]
        + [FaceRecord("bob", "face_0007.png", "quarantined", 10, 1, reason="truncated")],
        set_name="bob")
    store.log_event("training started", job=JOB)
    store.log_event("exported lightweight_000199.onnx", job=JOB)
    return {"merged": merged, "export": export}


@pytest.mark.browser
def test_dashboard_live_in_browser(workspace: Workspace, tmp_path: Path) -> None:
    driver = _chrome(tmp_path)
    server = DashboardServer(workspace, port=0, refresh_ms=500)
    server.start()
    store: StateStore | None = None
    try:
        # the dashboard starts before the service has made its database
        assert not workspace.state_db.exists()
        driver.get(server.url)
        _wait_text(driver, "#service-status", "Waiting for the service")

        store = StateStore(workspace.state_db)
        files = _fill(workspace, store)

        # the page may first show the job half written: wait for the finished picture
        _wait_text(driver, "#jobs", JOB, "training", "lightweight", "199 / 10,000", "48.6")

        # the loss graph: plotly's svg with one drawn line per side
        _wait(driver, f"{GRAPH} && {GRAPH}.data && {GRAPH}.data.length === 2", "loss traces")
        assert driver.execute_script(f"return {GRAPH}.data.map(t => t.x.length)") == [200, 200]
        drawn = driver.execute_script(
            "return [...document.querySelectorAll("
            "'#loss-graph svg .scatterlayer .trace path.js-line')].map(p => p.getAttribute('d'))")
        assert len(drawn) == 2 and all(len(d) > 200 for d in drawn)
        legend = _text(driver, "#loss-graph svg .legend")
        assert "loss A" in legend and "loss B" in legend

        # the preview image was served and decoded
        _wait(driver, "(() => { const i = document.getElementById('preview-img');"
                      " return i && i.complete && i.naturalWidth > 0; })()", "preview image")
        size = driver.execute_script("const i = document.getElementById('preview-img');"
                                     " return [i.naturalWidth, i.naturalHeight]")
        assert size == [6 * CELL, 4 * CELL]

        _wait_text(driver, "#problems", "face_0007.png", "truncated", "IHDR",
                   ".swapd/quarantine/bob/face_0007.png")
        _wait_text(driver, "#exports", "lightweight_000199.onnx")
        # the face index: 7 files, one a copy of another, one set aside
        _wait_text(driver, "#face-sets-table", "faces/bob")
        assert _text(driver, "#face-sets-table").replace(" ", "") == "SetFacesQuarantined" \
            "Duplicatesfaces/bob711"
        _wait_text(driver, "#events", "training started", "exported lightweight_000199.onnx")
        name, href = driver.execute_script(
            "const a = document.querySelector('#merges a'); return [a.textContent, a.href]")
        assert name == files["merged"].name
        assert "/files/output/alice_to_bob/clip_swapped.mp4?v=" in href

        # new losses and a new preview show up without a reload
        driver.execute_script("window.__same_page = true")
        store.add_losses(JOB, loss_rows(200, 400))
        store.set_job_progress(JOB, 399, egs=51.2)
        newer = workspace.previews_dir(JOB) / "preview_000399.png"
        write_grid(newer, rows=6, seed=2)
        store.add_artifact(JOB, "preview", str(newer), iteration=399)

        _wait(driver, f"{GRAPH}.data[0].x.length === 400", "the graph to grow")
        _wait(driver, "(() => { const i = document.getElementById('preview-img');"
                      f" return i && i.complete && i.naturalHeight === {6 * CELL}; }})()",
              "the new preview")
        _wait_text(driver, "#jobs", "399 / 10,000", "51.2")
        assert driver.execute_script("return window.__same_page === true")

        for _ in range(2):  # the whole page in the picture (the window has chrome around it)
            inner = driver.execute_script("return [window.outerHeight - window.innerHeight,"
                                          " document.documentElement.scrollHeight]")
            driver.set_window_size(1400, max(900, sum(inner)))
        time.sleep(0.5)  # let plotly's responsive resize settle before the picture
        SCREENSHOT.parent.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(SCREENSHOT))
    finally:
        driver.quit()
        server.stop()
        if store is not None:
            store.close()


# --- the file route ---------------------------------------------------------------------------


def test_file_route_serves_only_models_and_output(workspace: Workspace, tmp_path: Path) -> None:
    preview = workspace.previews_dir(JOB) / "p.png"
    write_grid(preview, rows=2, seed=3)
    merged = workspace.output / JOB / "out.mp4"
    merged.parent.mkdir(parents=True)
    merged.write_bytes(b"merged")
    (workspace.root / "secret.txt").write_text("workspace secret")
    (workspace.jobs / f"{JOB}.toml").write_text("[train]\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("outside secret")
    os.symlink(outside, workspace.model_dir(JOB) / "link_out.txt")
    os.symlink(tmp_path, workspace.models / "dir_out")
    os.symlink(preview, workspace.model_dir(JOB) / "link_in.png")

    with DashboardServer(workspace, port=0) as server:
        ok = http_get(server.url, f"/files/models/{JOB}/previews/p.png?v=1")
        assert ok.status == 200 and ok.body == preview.read_bytes()
        assert "max-age" in ok.headers["Cache-Control"]
        assert http_get(server.url, f"/files/output/{JOB}/out.mp4").body == b"merged"
        assert http_get(server.url, f"/files/models/{JOB}/link_in.png").status == 200

        refused = [
            "/files/models/../secret.txt",
            "/files/%2e%2e/secret.txt",
            f"/files/models/{JOB}/%2e%2e/%2e%2e/%2e%2e/outside.txt",
            f"/files/jobs/{JOB}.toml",
            "/files/.swapd/state.db",
            "/files/secret.txt",
            f"/files/models/{JOB}/link_out.txt",
            "/files/models/dir_out/outside.txt",
            "/files//etc/passwd",
            f"/files/{outside}",
        ]
        for path in refused:
            response = http_get(server.url, path)
            assert response.status == 403, (path, response.status)
            assert b"secret" not in response.body
        assert http_get(server.url, f"/files/models/{JOB}/missing.png").status == 404
    with pytest.raises(ConnectionRefusedError):
        http_get(server.url, "/")


def test_served_path_rules(workspace: Workspace, tmp_path: Path) -> None:
    target = workspace.output / "j" / "a b.mp4"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert served_path(workspace, "output/j/a b.mp4") == target.resolve()
    for bad in ("/etc/passwd", "C:/Windows/win.ini", "C:x", "models\\..\\..\\secret",
                "output/../faces/x.png", "", "faces/bob/1.png"):
        with pytest.raises(FileRefused):
            served_path(workspace, bad)
    with pytest.raises(FileNotFoundError):
        served_path(workspace, "output/j")  # a folder is not a file

    # a models/ folder that is itself a link (moved to a bigger disk) is still served
    elsewhere = tmp_path / "big-disk" / "models"
    (elsewhere / "j").mkdir(parents=True)
    (elsewhere / "j" / "m.onnx").write_bytes(b"m")
    moved = Workspace.open(tmp_path / "ws2", create=False)
    moved.root.mkdir()
    os.symlink(elsewhere, moved.models)
    assert served_path(moved, "models/j/m.onnx") == (elsewhere / "j" / "m.onnx").resolve()


# --- binding and the token --------------------------------------------------------------------


def test_public_bind_needs_a_token(workspace: Workspace) -> None:
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.org"):
        with pytest.raises(DashboardConfigError, match="needs a token"):
            DashboardServer(workspace, host=host, port=0)
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        DashboardServer(workspace, host=host, port=0)  # loopback: no token needed
    with pytest.raises(DashboardConfigError, match="at least 16"):
        DashboardServer(workspace, host="0.0.0.0", port=0, token="short")


def test_token_is_required_on_every_request(workspace: Workspace) -> None:
    preview = workspace.previews_dir(JOB) / "p.png"
    write_grid(preview, rows=1, seed=4)
    with DashboardServer(workspace, host="0.0.0.0", port=0, token=TOKEN) as server:
        assert server.url.startswith("http://127.0.0.1:")
        file_path = f"/files/models/{JOB}/previews/p.png"
        for path in ("/", file_path, "/_dash-layout"):
            response = http_get(server.url, path)
            assert response.status == 401, path
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert http_get(server.url, "/", {"Authorization": "Bearer wrong-token-0000000"}).status \
            == 401
        assert http_get(server.url, "/?token=wrong-token-0000000").status == 401
        update = http_get(server.url, "/_dash-update-component", method="POST")
        assert update.status == 401

        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert http_get(server.url, "/", bearer).status == 200
        assert http_get(server.url, file_path, bearer).body == preview.read_bytes()

        # ?token= once: a cookie (HttpOnly) and a redirect that drops the token from the address
        first = http_get(server.url, f"/?token={TOKEN}&x=1")
        assert first.status == 303 and first.headers["Location"] == "/?x=1"
        cookie = first.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        with_cookie = {"Cookie": cookie.split(";")[0]}
        assert http_get(server.url, "/?x=1", with_cookie).status == 200
        assert http_get(server.url, file_path, with_cookie).status == 200

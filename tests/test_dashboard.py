"""The dashboard: the overview and a job's page live in headless Chromium, the file routes,
binding and the token."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.dashboard.files import FileRefused, served_path
from swapd.dashboard.server import DashboardConfigError, DashboardServer
from swapd.state import FaceRecord, Session, StateStore
from swapd.workspace import Workspace
from tests.browser import (
    chrome,
    click,
    full_page_screenshot,
    http_get,
    text,
    wait,
    wait_text,
)

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
JOB = "alice_to_bob"
CELL = 64
TOKEN = "k3Yq-9vTzR2mWb7xLpA4"
GRAPH = "document.querySelector('#loss-graph .js-plotly-plot')"


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


def loss_rows(start: int, stop: int) -> list[tuple[object, ...]]:
    """Rows as the worker writes them: losses, components, learning rate and EG/s."""
    rng = np.random.default_rng(start)
    now = time.time() - (stop - start) * 0.5
    rows = []
    for it in range(start, stop):
        a = 0.02 + 0.2 * np.exp(-it / 150) + rng.uniform(0, 0.004)
        b = 0.025 + 0.25 * np.exp(-it / 180) + rng.uniform(0, 0.004)
        parts = {"a": {"ssim": a * 0.6, "eyes": a * 0.25, "mouth": a * 0.15},
                 "b": {"ssim": b * 0.7, "eyes": b * 0.3}}
        rows.append((it, now + 0.5 * (it - start), a, b, parts, 5e-5, 48.0 + rng.uniform(-2, 2)))
    return rows


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "ws")


def _fill(ws: Workspace, store: StateStore) -> dict[str, Path]:
    job_file = ws.jobs / f"{JOB}.toml"
    job_file.write_text('[train]\na = "faces/alice"\nb = "faces/bob"\nbatch_size = 16\n'
                        'iterations = 10000\n')
    config = {"train": {"a": "faces/alice", "b": "faces/bob", "model": "lightweight",
                        "batch_size": 16, "options": {"loss": "ssim"}},
              "schedule": {"windows": ["00:00-00:00"]}}
    store.upsert_job(JOB, str(job_file), "train", "queued", model="lightweight",
                     target=10_000, config=config)
    store.set_job_state(JOB, "training")
    store.set_job_info(JOB, {"parameters": 51_123_456, "model_options": {"width": 0.5}})
    store.add_losses(JOB, loss_rows(0, 200))
    store.set_job_progress(JOB, 199, egs=48.6)
    first = time.time() - 400
    store.record_session(Session(JOB, first, first + 100, 0, 120, 16, 120 * 32, 80.0, 120))
    store.record_session(Session(JOB, first + 200, first + 400, 120, 199, 16, 79 * 32, 52.0,
                                 79))
    store.add_mark(JOB, 120, "rollback", {"reason": "NaN", "learning_rate": 2.5e-5})
    for iteration, seed in ((99, 1), (199, 2)):
        preview = ws.previews_dir(JOB) / f"preview_{iteration:06d}.png"
        write_grid(preview, rows=4, seed=seed)
        store.add_artifact(JOB, "preview", f"models/{JOB}/previews/{preview.name}", iteration)
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
    store.report_problem(f"jobs/{JOB}.toml", "job", "train.batch_size: must be 1 or more",
                         key="train.batch_size")
    store.index_faces(
        [FaceRecord("bob", f"face_{i:04d}.png", "ok", 1000, 1, hash=f"h{i % 6}")
         for i in range(7)]
        + [FaceRecord("bob", "face_0007.png", "quarantined", 10, 1, reason="truncated")],
        set_name="bob")
    store.log_event("training started", job=JOB)
    store.log_event("exported lightweight_000199.onnx", job=JOB)
    return {"merged": merged, "export": export}


@pytest.mark.browser
def test_overview_and_job_page_in_browser(workspace: Workspace, tmp_path: Path) -> None:
    driver = chrome(tmp_path)
    server = DashboardServer(workspace, port=0, refresh_ms=500)
    server.start()
    store: StateStore | None = None
    try:
        # the dashboard starts before the service has made its database
        assert not workspace.state_db.exists()
        driver.get(server.url)
        wait_text(driver, "#service-status", "Waiting for the service")

        store = StateStore(workspace.state_db)
        files = _fill(workspace, store)
        # the page may first show the job half written: wait for the finished picture
        wait_text(driver, "#jobs", JOB, "training", "lightweight", "199 / 10,000", "48.6",
                  "in its window")
        wait(driver, "/ETA \\d/.test(document.querySelector('#jobs').textContent)",
             "an ETA to the target")
        wait_text(driver, "#problems", "face_0007.png", "truncated", "IHDR",
                  ".swapd/quarantine/bob/face_0007.png")
        wait_text(driver, "#exports", "lightweight_000199.onnx")
        assert text(driver, "#face-sets-table").replace(" ", "") == "SetFacesQuarantined" \
            "Duplicatesfaces/bob711"
        wait_text(driver, "#events", "training started", "exported lightweight_000199.onnx")
        name, href = driver.execute_script(
            "const a = document.querySelector('#merges a'); return [a.textContent, a.href]")
        assert name == files["merged"].name
        assert "/files/output/alice_to_bob/clip_swapped.mp4?v=" in href
        full_page_screenshot(driver, ARTIFACTS / "dashboard-overview.png")

        # the job's own page, reached by its link, then by its address after a reload
        click(driver, f"#jobs a[href='/jobs/{JOB}']")
        wait(driver, f"location.pathname === '/jobs/{JOB}'", "the job's address")
        wait(driver, f"{GRAPH} && {GRAPH}.data && {GRAPH}.data.length === 4", "loss traces")
        names = driver.execute_script(f"return {GRAPH}.data.map(t => t.name)")
        assert names == ["loss A (raw)", "loss A", "loss B (raw)", "loss B"]
        assert driver.execute_script(f"return {GRAPH}.data.map(t => t.x.length)") == [200] * 4
        # the rollback is marked on the graph at the iteration it went back to
        marks = driver.execute_script(f"return {GRAPH}.layout.shapes.map(s => s.x0)")
        assert marks == [120]
        # faceswap's smoothing: 0 draws the raw values only
        raw = driver.execute_script(f"return {GRAPH}.data[0].y")
        driver.execute_script("window.__same_page = true")
        slider_to_start(driver, "#graph-smoothing")
        wait(driver, f"{GRAPH}.data.length === 2", "the smoothing to go")
        assert driver.execute_script(f"return {GRAPH}.data[0].y") == pytest.approx(raw)
        # components, the learning rate and EG/s on axes of their own
        click(driver, "#graph-components input[value='a.eyes']")
        click(driver, "#graph-axes input[value='lr']")
        click(driver, "#graph-axes input[value='egs']")
        wait(driver, f"{GRAPH}.data.length === 5", "component and axes traces")
        axes = driver.execute_script(f"return {GRAPH}.data.map(t => [t.name, t.yaxis])")
        assert axes == [["loss A", "y"], ["loss B", "y"], ["A eyes", "y"],
                        ["learning rate", "y2"], ["EG/s", "y3"]]
        # zoom to the last 50 iterations
        type_into(driver, "#graph-last", "50")
        wait(driver, f"{GRAPH}.data[0].x[0] === 149", "the graph zoomed to the last 50")

        # faceswap's rate: the session's examples over its whole time (3,840 in 100 s)
        wait_text(driver, "#sessions", "0–120", "120–199", "38.4", "12.6", "1 min 40 s",
                  "3 min 20 s")
        wait_text(driver, "#job-file", "jobs/alice_to_bob.toml", "train.batch_size",
                  "iterations = 10000")
        wait_text(driver, "#model-options", "51,123,456")
        # the preview and its history: the slider goes back to the first save
        wait(driver, "(() => { const i = document.getElementById('preview-img');"
                     " return i && i.complete && i.naturalWidth > 0; })()", "preview image")
        assert "preview_000199.png" in driver.execute_script(
            "return document.getElementById('preview-img').src")
        wait_text(driver, "#preview-body", "iteration 199", "2 kept", "download")

        # new losses and a new preview show up without a reload
        store.add_losses(JOB, loss_rows(200, 400))
        store.set_job_progress(JOB, 399, egs=51.2)
        newer = workspace.previews_dir(JOB) / "preview_000399.png"
        write_grid(newer, rows=6, seed=3)
        store.add_artifact(JOB, "preview", str(newer), iteration=399)
        wait(driver, f"{GRAPH}.data[0].x[{GRAPH}.data[0].x.length - 1] === 399",
             "the graph to grow")
        wait(driver, "(() => { const i = document.getElementById('preview-img');"
                     f" return i && i.complete && i.naturalHeight === {6 * CELL}; }})()",
             "the new preview")
        assert driver.execute_script("return window.__same_page === true")
        full_page_screenshot(driver, ARTIFACTS / "dashboard-job.png")

        driver.refresh()  # a reload lands on the same view, the graph as the user set it
        wait_text(driver, "#job-title", JOB)
        wait(driver, f"{GRAPH} && {GRAPH}.data && {GRAPH}.data.length === 5 && "
                     f"{GRAPH}.data[0].x[0] === 349", "the same graph again")
    finally:
        driver.quit()
        server.stop()
        if store is not None:
            store.close()


def type_into(driver: object, selector: str, value: str) -> None:
    """Type into an input as a user does, and press Enter."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, selector)  # type: ignore[attr-defined]
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(value, Keys.ENTER)


def slider_to_start(driver: object, selector: str) -> None:
    """Move a Dash slider to its lowest value from the keyboard (Home on its thumb)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    thumb = driver.find_element(By.CSS_SELECTOR,  # type: ignore[attr-defined]
                                f"{selector} [role=slider]")
    thumb.send_keys(Keys.HOME)


# --- the file routes --------------------------------------------------------------------------


def test_file_route_serves_only_what_the_dashboard_shows(workspace: Workspace,
                                                         tmp_path: Path) -> None:
    preview = workspace.previews_dir(JOB) / "p.png"
    write_grid(preview, rows=2, seed=3)
    merged = workspace.output / JOB / "out.mp4"
    merged.parent.mkdir(parents=True)
    merged.write_bytes(b"merged")
    model_dir = workspace.model_dir(JOB)
    for private in ("model.pt", ".trainer.lock", "backup/model.pt", "replaced/model-4.pt",
                    "snapshots/00000004/model.pt", "exports/../model.pt"):
        (model_dir / private).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / private).write_bytes(b"secret checkpoint")
    tracker_image = model_dir / "snapshots" / "00000004" / "tracker" / "a" / "x.png.recon.webp"
    tracker_image.parent.mkdir(parents=True)
    tracker_image.write_bytes(b"RIFF....WEBP")
    (workspace.root / "secret.txt").write_text("workspace secret")
    (workspace.jobs / f"{JOB}.toml").write_text("[train]\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("outside secret")
    os.symlink(outside, workspace.previews_dir(JOB) / "link_out.png")
    os.symlink(tmp_path, workspace.models / "dir_out")
    os.symlink(preview, workspace.previews_dir(JOB) / "link_in.png")
    os.link(outside, workspace.previews_dir(JOB) / "hard.png")  # a second name of a file

    with DashboardServer(workspace, port=0) as server:
        ok = http_get(server.url, f"/files/models/{JOB}/previews/p.png?v=1")
        assert ok.status == 200 and ok.body == preview.read_bytes()
        assert "max-age" in ok.headers["Cache-Control"]
        assert http_get(server.url, f"/files/output/{JOB}/out.mp4").body == b"merged"
        assert http_get(server.url, f"/files/models/{JOB}/previews/link_in.png").status == 200
        image = http_get(server.url, f"/files/models/{JOB}/snapshots/00000004/tracker/a/"
                                     "x.png.recon.webp")
        assert image.status == 200 and image.body == b"RIFF....WEBP"
        # a video plays and seeks: range requests
        part = http_get(server.url, f"/files/output/{JOB}/out.mp4", {"Range": "bytes=2-4"})
        assert part.status == 206 and part.body == b"rge"

        refused = [
            "/files/models/../secret.txt",
            "/files/%2e%2e/secret.txt",
            f"/files/models/{JOB}/%2e%2e/%2e%2e/%2e%2e/outside.txt",
            f"/files/jobs/{JOB}.toml",
            "/files/.swapd/state.db",
            "/files/secret.txt",
            f"/files/models/{JOB}/previews/link_out.png",
            f"/files/models/{JOB}/previews/hard.png",
            "/files/models/dir_out/outside.txt",
            "/files//etc/passwd",
            f"/files/{outside}",
            f"/files/models/{JOB}/model.pt",
            f"/files/models/{JOB}/.trainer.lock",
            f"/files/models/{JOB}/backup/model.pt",
            f"/files/models/{JOB}/replaced/model-4.pt",
            f"/files/models/{JOB}/snapshots/00000004/model.pt",
            f"/files/models/{JOB}/previews/p.png%00.txt",
        ]
        for path in refused:
            response = http_get(server.url, path)
            assert response.status in (403, 404), (path, response.status)
            assert b"secret" not in response.body, path
        assert http_get(server.url, f"/files/models/{JOB}/previews/missing.png").status == 404
    with pytest.raises(ConnectionRefusedError):
        http_get(server.url, "/")


def test_served_path_rules(workspace: Workspace, tmp_path: Path) -> None:
    target = workspace.output / "j" / "a b.mp4"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert served_path(workspace, "output/j/a b.mp4") == target.resolve()
    for bad in ("/etc/passwd", "C:/Windows/win.ini", "C:x", "models\\..\\..\\secret",
                "output/../faces/x.png", "", "faces/bob/1.png", "models/j/model.pt",
                "models/j/exports/model.pt", "models/j/snapshots/1/model.pt"):
        with pytest.raises(FileRefused):
            served_path(workspace, bad)
    with pytest.raises(FileNotFoundError):
        served_path(workspace, "output/j")  # a folder is not a file

    # a models/ folder that is itself a link (moved to a bigger disk) is still served
    elsewhere = tmp_path / "big-disk" / "models"
    (elsewhere / "j" / "exports").mkdir(parents=True)
    (elsewhere / "j" / "exports" / "m.onnx").write_bytes(b"m")
    moved = Workspace.open(tmp_path / "ws2", create=False)
    moved.root.mkdir()
    os.symlink(elsewhere, moved.models)
    assert served_path(moved, "models/j/exports/m.onnx") == (
        elsewhere / "j" / "exports" / "m.onnx").resolve()


def test_face_thumbnails_only_of_indexed_faces(workspace: Workspace) -> None:
    folder = workspace.face_set("bob")
    folder.mkdir()
    write_grid(folder / "listed.png", rows=2, seed=5)
    write_grid(folder / "unlisted.png", rows=2, seed=6)
    store = StateStore(workspace.state_db)
    store.index_faces([FaceRecord("bob", "listed.png", "ok", 1, 1)], set_name="bob")
    store.close()
    with DashboardServer(workspace, port=0) as server:
        thumb = http_get(server.url, "/thumbs/bob/listed.png?s=64&v=1")
        assert thumb.status == 200 and thumb.headers["Content-Type"] == "image/webp"
        decoded = cv2.imdecode(np.frombuffer(thumb.body, np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == (2 * CELL * 64 // (6 * CELL), 64, 3)
        assert (workspace.cache / "thumbs" / "bob" / "listed.png.64.webp").is_file()
        for path, status in (("/thumbs/bob/unlisted.png?s=64", 404),
                             ("/thumbs/bob/listed.png?s=65", 400),
                             ("/thumbs/..%2Fjobs/x.png", 404), ("/thumbs/bob/", 404)):
            assert http_get(server.url, path).status == status, path


# --- binding and the token --------------------------------------------------------------------


def test_public_bind_needs_a_token(workspace: Workspace) -> None:
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.org"):
        with pytest.raises(DashboardConfigError, match="needs a token"):
            DashboardServer(workspace, host=host, port=0)
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        DashboardServer(workspace, host=host, port=0)  # loopback: no token needed
    with pytest.raises(DashboardConfigError, match="at least 16"):
        DashboardServer(workspace, host="0.0.0.0", port=0, token="short")


def test_token_link_sets_a_cookie_and_leaves_the_address(workspace: Workspace) -> None:
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

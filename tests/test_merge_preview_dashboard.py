"""The outputs page's merge preview (issue 16, "choosing by eye"): a user picks a job's footage,
a frame and the candidates; the request goes through the control queue; the service renders
the labelled sheet with `swapd merge --preview` (real onnxruntime, detector, watermark, C2PA);
the page shows it, marked as every merged output is."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest

from swapd.config import ServiceConfig
from swapd.daemon.jobs import JobRegistry
from swapd.daemon.merge_previews import MergePreviews
from swapd.dashboard.server import DashboardServer
from swapd.merger.look import candidates
from swapd.merger.preview import COLUMNS, TILE_WIDTH
from swapd.merger.provenance import verify_file
from swapd.state import StateStore
from swapd.workspace import Workspace
from tests.browser import choose, chrome, click, http_get, post_json, wait, wait_text
from tests.support import ServiceProcess, require_tools, wait_for
from tests.test_merger import export_model

MERGE_JOB = ('[merge]\nfootage = "footage/clip"\nmodel = "models/clip/exports/a_to_b.onnx"\n'
             'color_transfer = "lct"\n')


def merge_workspace(root: Path, clip: Path) -> Workspace:
    """A workspace with a merge job ``clip``: its model and one video in its footage."""
    ws = Workspace.open(root)
    ws.exports_dir("clip").mkdir(parents=True)
    export_model(ws.exports_dir("clip") / "a_to_b.onnx")
    (ws.footage / "clip").mkdir(parents=True)
    shutil.copy(clip, ws.footage / "clip" / "take.mp4")
    (ws.jobs / "clip.toml").write_text(MERGE_JOB)
    return ws


def check_sheet(path: Path, compared: str) -> None:
    """A sheet of the source and one tile per candidate, labelled rows of COLUMNS, marked."""
    sheet = cv2.imread(str(path))
    tiles = 1 + len(candidates(compared))
    rows = -(-tiles // COLUMNS)
    assert sheet.shape[1] == TILE_WIDTH * COLUMNS and sheet.shape[0] % rows == 0
    evidence = verify_file(path)
    assert evidence.marked and evidence.metadata_tag, evidence


def test_a_preview_asked_through_the_api_is_rendered_by_the_service(
        tmp_path: Path, synthetic_clip: Path) -> None:
    ws = merge_workspace(tmp_path / "ws", synthetic_clip)
    (ws.jobs / "train_only.toml").write_text('[train]\na = "faces/a"\nb = "faces/b"\n')
    store = StateStore(ws.state_db)
    jobs = JobRegistry(ws, store)
    jobs.scan()
    previews = MergePreviews(ws, jobs, ServiceConfig())
    source = "footage/clip/take.mp4"
    try:
        with DashboardServer(ws, port=0) as server:
            listed = http_get(server.url, "api/v1/footage").json()["footage"]
            assert listed == [{"job": "clip", "source": source, "label": "clip: take.mp4",
                               "frames": 50}]

            def ask(job: str, **body: object) -> tuple[int, dict]:
                answer = post_json(server.url, f"api/v1/jobs/{job}/controls",
                                   {"action": "preview", **body})
                return answer.status, answer.json()

            # bad requests are refused, each naming what is wrong
            assert ask("clip", source=source, frame=50) == (400, {
                "error": "take.mp4 has 50 frames (0 to 49): no frame 50"})
            status, refused = ask("clip", source=source, frame=3, compare="colour")
            assert status == 400 and "compare must be one of color_transfer" in refused["error"]
            status, refused = ask("clip", source="jobs/clip.toml", frame=0)
            assert status == 400 and "footage folder (footage/clip)" in refused["error"]
            status, refused = ask("clip", source="../../etc/passwd")
            assert status == 400
            status, refused = ask("train_only", source=source)
            assert status == 400 and "no [merge] section" in refused["error"]
            assert ask("nobody", source=source)[0] == 404

            status, asked = ask("clip", source=source, frame=12, compare="color_transfer")
            assert status == 202
            url = f"api/v1/jobs/clip/previews/{asked['id']}"
            assert http_get(server.url, url).json()["state"] == "waiting"
            # a training worker's requests never include it: the service takes it
            assert store.take_control_requests("clip") == []
            previews.start_next(store)
            state = wait_for(lambda: (s := http_get(server.url, url).json())["state"] not in (
                "waiting", "rendering") and s, 180, "the preview")
            assert state["state"] == "ready", state
            assert state["path"] == (f"output/clip/previews/{asked['id']}/"
                                     "take_preview_12_color_transfer.png")
            assert state["result"] == f"rendered {state['path']}"
            image = http_get(server.url, state["url"].lstrip("/"))
            assert image.status == 200 and image.body[:8] == b"\x89PNG\r\n\x1a\n"
            check_sheet(ws.resolve(state["path"]), "color_transfer")

            # the job's model gone: the request's answer says so, the page shows it
            (ws.exports_dir("clip") / "a_to_b.onnx").unlink()
            _, again = ask("clip", source=source, frame=0)
            previews.start_next(store)
            state = http_get(server.url, f"api/v1/jobs/clip/previews/{again['id']}").json()
            assert state["state"] == "failed"
            assert state["message"] == ("not rendered: no model to merge with yet "
                                        "(models/clip/exports/a_to_b.onnx is missing)")
            assert http_get(server.url, "api/v1/jobs/clip/previews/999").status == 404
    finally:
        previews.stop()
        store.close()


def test_a_worker_never_takes_the_services_requests(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    try:
        store.upsert_job("j", "jobs/j.toml", "train", "training")
        pause = store.request_control("j", "pause")
        preview = store.request_control("j", "preview", {"frame": 1})
        assert [r.id for r in store.take_control_requests("j")] == [pause]
        assert [r.id for r in store.take_service_requests("preview")] == [preview]
        assert store.take_service_requests("preview") == []
    finally:
        store.close()


@pytest.mark.slow  # a service of its own, a merge and a preview (about 40 s)
@pytest.mark.browser
def test_the_outputs_page_shows_a_preview_the_service_rendered(
        service: Callable[[], ServiceProcess], synthetic_clip: Path, tmp_path: Path,
        artifacts_dir: Path) -> None:
    require_tools("ffprobe")
    ws = merge_workspace(tmp_path / "ws", synthetic_clip)
    svc = service()
    store = StateStore(wait_for(lambda: ws.state_db.is_file() and ws.state_db, 60,
                                "the state database", svc.process))
    wait_for(lambda: store.job("clip"), 60, "the merge job", svc.process)
    driver = chrome(tmp_path)
    try:
        with DashboardServer(Workspace.open(ws.root, create=False), port=0,
                             refresh_ms=700) as server:
            driver.get(f"{server.url}outputs")
            value = json.dumps(["clip", "footage/clip/take.mp4"])
            wait(driver, "(() => { const d = document.querySelector('#look-footage');"
                 " return d && d.innerText.includes('clip: take.mp4'); })()",
                 "the footage to be offered", 60)
            choose(driver, "#look-footage", value)
            # the footage's frame count first (its probe answers the footage's choice; a frame
            # typed before that answer is taken back by it)
            wait(driver, "Number(document.querySelector('#look-frame').max) > 30",
                 "the footage's frames", 60)
            frame = driver.find_element("css selector", "#look-frame")
            frame.clear()
            frame.send_keys("30\n")
            wait(driver, "document.querySelector('#look-frame').value === '30'", "frame 30")
            choose(driver, "#look-compare", "mask")
            click(driver, "#look-render")
            wait_text(driver, "#look-status", "frame 30")
            wait(driver, "(() => { const i = document.getElementById('look-sheet-img');"
                 " return i && i.complete && i.naturalWidth > 0; })()", "the sheet", 180)
            wait_text(driver, "#look-status", "take_preview_30_mask.png")
            requests = [r for r in store.control_requests("clip") if r.action == "preview"]
            assert len(requests) == 1 and requests[0].args == {
                "source": "footage/clip/take.mp4", "frame": 30, "compare": "mask"}
            sheet = ws.merge_preview_dir("clip", requests[0].id) / "take_preview_30_mask.png"
            assert sheet.is_file()
            check_sheet(sheet, "mask")
            shown = driver.execute_script(
                "return document.getElementById('look-sheet-img').naturalWidth")
            assert shown == cv2.imread(str(sheet)).shape[1]
            driver.save_screenshot(str(artifacts_dir / "outputs_merge_preview.png"))
            driver.get(f"{server.url}outputs")  # back later: the newest preview is shown
            wait(driver, "(() => { const i = document.getElementById('look-sheet-img');"
                 " return i && i.complete && i.naturalWidth > 0; })()", "the sheet again", 60)
            wait_text(driver, "#look-status", "frame 30 of footage/clip/take.mp4, mask modes")
            # ... and the controls say what it was asked with, so Render asks for it again
            wait(driver, "document.querySelector('#look-frame').value === '30'",
                 "the shown preview's frame in the box", 30)
            wait(driver, "document.querySelector('#look-compare').innerText"
                 ".includes('mask modes')", "the shown preview's candidates", 30)
            assert "clip: take.mp4" in driver.find_element(
                "css selector", "#look-footage").text
    finally:
        driver.quit()
        svc.terminate()
        store.close()

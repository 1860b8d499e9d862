"""The snapshot tracker, faces and outputs pages in a real Chromium, on a workspace trained by
the worker's own code: what each shows is checked against the state database."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swapd.dashboard.server import DashboardServer
from swapd.state import StateStore
from swapd.workspace import Workspace
from tests.browser import (
    choose,
    chrome,
    click,
    click_plot_point,
    full_page_screenshot,
    wait,
    wait_text,
)
from tests.dashboard_support import TrainedWorkspace

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TILE_NAMES = ("[...document.querySelectorAll('#tracker-grid .tile')]"
              ".map(t => t.dataset.name)")
IMAGES_LOADED = ("[...document.querySelectorAll('#tracker-grid img')].every("
                 "i => i.complete && i.naturalWidth > 0)")


@pytest.fixture(scope="module")
def served(trained_ws: TrainedWorkspace) -> Iterator[str]:
    with DashboardServer(trained_ws.workspace, port=0, refresh_ms=1000) as server:
        yield server.url


def tracked(trained_ws: TrainedWorkspace, iteration: int, side: str) -> list[dict[str, object]]:
    store = StateStore(trained_ws.workspace.state_db, readonly=True)
    try:
        return store.tracked_faces("tiny", iteration, side, "face", limit=10_000)
    finally:
        store.close()


def wait_tiles(driver: object, names: list[str], what: str) -> None:
    try:
        wanted = json.dumps(json.dumps(names, separators=(",", ":")))
        wait(driver, f"JSON.stringify({TILE_NAMES}) === {wanted}", what)
    except BaseException:
        shown = driver.execute_script(f"return {TILE_NAMES}")  # type: ignore[attr-defined]
        print(f"expected {names}\nshown    {shown}")
        raise


def test_tracker_filters_sorts_and_opens_timelines(served: str, trained_ws: TrainedWorkspace,
                                                   tmp_path: Path) -> None:
    rows = tracked(trained_ws, 12, "a")
    worst_first = [r["face"] for r in sorted(rows, key=lambda r: (-r["loss"], r["face"]))]
    driver = chrome(tmp_path)
    try:
        driver.get(f"{served}jobs/tiny/tracker")
        wait_tiles(driver, worst_first, "the newest snapshot's faces, worst first")
        wait(driver, IMAGES_LOADED, "every image of the page")
        wait_text(driver, "#tracker-pager", f"faces 1–{len(rows)} of {len(rows)}")
        wait_text(driver, "#tracker-filter", "Snapshot 12", "all poses", "change since 8")
        counts = driver.execute_script("return [...document.querySelectorAll("
                                       "'#tracker-grid .tile')].map(t => t.querySelectorAll("
                                       "'img').length)")
        assert set(counts) == {3}  # aligned face, output, swap
        # the shown loss is the stored one
        first = driver.execute_script("return document.querySelector('#tracker-grid .tile "
                                      ".loss').textContent")
        assert first == f"{max(r['loss'] for r in rows):.4f}"

        choose(driver, "#tracker-sort", "loss")
        wait_tiles(driver, worst_first[::-1] if len(set(r["loss"] for r in rows)) == len(rows)
                   else [r["face"] for r in sorted(rows, key=lambda r: (r["loss"], r["face"]))],
                   "best first")
        wait(driver, "location.search.includes('sort=loss')", "the sort in the address")

        # a heatmap cell filters the grid to exactly the faces whose pose lies in it
        known = [r for r in rows if r["yaw"] is not None]
        cell = max(((r["yaw"] // 10 * 10, r["pitch"] // 10 * 10) for r in known),
                   key=lambda c: sum(c == (r["yaw"] // 10 * 10, r["pitch"] // 10 * 10)
                                     for r in known))
        inside = sorted((r for r in known if cell == (r["yaw"] // 10 * 10,
                                                      r["pitch"] // 10 * 10)),
                        key=lambda r: (r["loss"], r["face"]))
        click_plot_point(driver, "#heatmap-count", cell[0] + 5, cell[1] + 5)
        wait_tiles(driver, [r["face"] for r in inside], "the cell's faces")
        wait_text(driver, "#tracker-filter", f"yaw {cell[0]:g}° to {cell[0] + 10:g}°")
        wait(driver, f"location.search.includes('yaw={cell[0]:g}%2C{cell[0] + 10:g}')",
             "the cell in the address")

        # the filter survives a change of snapshot
        earlier = {r["face"]: r for r in tracked(trained_ws, 4, "a")}
        choose(driver, "#tracker-snapshot", "4")
        expected = sorted((earlier[r["face"]] for r in inside),
                          key=lambda r: (r["loss"], r["face"]))
        wait_tiles(driver, [r["face"] for r in expected], "the cell's faces at snapshot 4")
        wait_text(driver, "#tracker-filter", "Snapshot 4", f"yaw {cell[0]:g}°")
        click(driver, "#tracker-unselect")
        wait(driver, f"{TILE_NAMES}.length === {len(rows)}", "every face again")

        # a face's timeline: one column per snapshot, its loss at each
        face = expected[0]["face"]
        click(driver, f"#tracker-grid .tile[data-name='{face}'] .tile-images")
        wait_text(driver, "#timeline-title", f"Timeline: {face}")
        wait(driver, "document.querySelectorAll('#timeline-row .timeline-column"
                     "[data-iteration]').length === 3", "a column per snapshot")
        columns = driver.execute_script(
            "return [...document.querySelectorAll('#timeline-row .timeline-column"
            "[data-iteration]')].map(c => [c.dataset.iteration, c.querySelector('.loss')"
            ".textContent, c.querySelectorAll('img').length])")
        losses = {it: next(r["loss"] for r in tracked(trained_ws, it, "a") if r["face"] == face)
                  for it in trained_ws.snapshots}
        assert columns == [[str(it), f"{losses[it]:.4f}", 2] for it in trained_ws.snapshots]
        wait(driver, "[...document.querySelectorAll('#timeline-row img')].every("
                     "i => i.complete && i.naturalWidth > 0)", "the timeline's images")

        # a reload lands on the same view
        address = driver.execute_script("return location.href")
        full_page_screenshot(driver, ARTIFACTS / "dashboard-tracker.png")
        driver.get(address)
        wait_text(driver, "#timeline-title", f"Timeline: {face}")
        wait_text(driver, "#tracker-filter", "Snapshot 4", "all poses")
        assert driver.execute_script("return location.href") == address

        # the B side: outputs, no swap
        choose(driver, "#tracker-snapshot", "latest")
        click(driver, "#tracker-side input[value='b']")
        wait_text(driver, "#tracker-filter", "B (src)")
        wait(driver, "[...document.querySelectorAll('#tracker-grid .tile')].every("
                     "t => t.querySelectorAll('img').length === 2)", "face and output only")
        wait(driver, "document.querySelector('#timeline-card').style.display === 'none'",
             "the timeline to close on the other set")
        # no script of the page failed on the way (a failing clientside callback drops clicks)
        failed = [e["message"] for e in driver.get_log("browser")
                  if e["level"] == "SEVERE" and e.get("source") == "javascript"]
        assert not failed, failed
    finally:
        driver.quit()


def test_a_5000_face_snapshot_sends_one_page_of_images(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    store = StateStore(ws.state_db)
    store.upsert_job("big", "jobs/big.toml", "train", "training", config={
        "train": {"a": "faces/a", "b": "faces/b", "snapshot_every": 100}})

    class Row:
        def __init__(self, k: int) -> None:
            self.side, self.face, self.loss = "a", f"f{k:05d}.png", 1.0 / (k + 1)
            self.yaw, self.pitch = float(k % 80 - 40), float(k % 40 - 20)
            self.recon, self.swap = f"a/{self.face}.recon.webp", f"a/{self.face}.swap.webp"
            self.crop, self.tile = f"a/{self.face}.face.webp", f"a/{self.face}.tile.webp"

    store.add_tracked_faces("big", 100, [Row(k) for k in range(5000)])
    store.close()
    driver = chrome(tmp_path)
    try:
        with DashboardServer(ws, port=0) as server:
            driver.get(f"{server.url}jobs/big/tracker")
            wait_text(driver, "#tracker-pager", "faces 1–60 of 5,000")
            assert driver.execute_script(f"return {TILE_NAMES}.length") == 60
            assert driver.execute_script(f"return {TILE_NAMES}[0]") == "f00000.png"
            time.sleep(1.0)
            images = driver.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)"
                ".filter(n => n.includes('/files/') || n.includes('/thumbs/')).length")
            assert images <= 60  # one page, one image a face (its tile: crop, output, swap)
            callbacks = driver.execute_script(
                "return performance.getEntriesByType('resource').filter(e => "
                "e.name.includes('_dash-update-component')).map(e => e.encodedBodySize)")
            assert max(callbacks) < 400_000  # URLs of images, never the images themselves
            click(driver, "#tracker-next")
            wait_text(driver, "#tracker-pager", "faces 61–120 of 5,000")
            assert driver.execute_script(f"return {TILE_NAMES}[0]") == "f00060.png"
    finally:
        driver.quit()


def test_a_job_without_snapshots_says_how_to_turn_them_on(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    store = StateStore(ws.state_db)
    store.upsert_job("plain", "jobs/plain.toml", "train", "training",
                     config={"train": {"a": "faces/a", "b": "faces/b", "snapshot_every": 0}})
    store.close()
    driver = chrome(tmp_path)
    try:
        with DashboardServer(ws, port=0) as server:
            driver.get(f"{server.url}jobs/plain/tracker")
            wait_text(driver, "#tracker-how", "snapshot_every = 5000", "tracker = true",
                      "jobs/plain.toml")
    finally:
        driver.quit()


def test_faces_page_shows_sets_poses_and_the_quarantine(served: str,
                                                        trained_ws: TrainedWorkspace,
                                                        tmp_path: Path) -> None:
    store = StateStore(trained_ws.workspace.state_db, readonly=True)
    poses = [(f.yaw, f.pitch) for f in store.faces("alice", status="ok") if f.yaw is not None]
    store.close()
    cell = max({(y // 10 * 10, p // 10 * 10) for y, p in poses},
               key=lambda c: sum(c == (y // 10 * 10, p // 10 * 10) for y, p in poses))
    in_cell = sum(cell == (y // 10 * 10, p // 10 * 10) for y, p in poses)
    driver = chrome(tmp_path)
    try:
        driver.get(f"{served}faces?set=alice")
        wait_text(driver, "#faces-counts", f"faces/alice: {trained_ws.faces_per_side} usable")
        wait(driver, f"document.querySelectorAll('#faces-grid .tile').length === "
                     f"{trained_ws.faces_per_side}", "a thumbnail per face")
        wait(driver, "[...document.querySelectorAll('#faces-grid img')].every("
                     "i => i.complete && i.naturalWidth > 0)", "the thumbnails")
        wait_text(driver, "#quarantine-table", "Nothing set aside")
        click_plot_point(driver, "#faces-heatmap", cell[0] + 5, cell[1] + 5)
        wait(driver, f"document.querySelectorAll('#faces-grid .tile').length === {in_cell}",
             "the cell's faces")
        full_page_screenshot(driver, ARTIFACTS / "dashboard-faces.png")
    finally:
        driver.quit()


def test_outputs_page_plays_merged_video_and_shows_its_marks(
        trained_ws: TrainedWorkspace, synthetic_clip: Path, tmp_path: Path) -> None:
    from swapd.daemon.merge_worker import run as merge_worker

    copy = trained_ws.copy(tmp_path / "ws")
    ws = copy.workspace
    footage = ws.footage / "tiny"
    footage.mkdir(parents=True)
    clip = footage / "clip.mp4"
    clip.write_bytes(synthetic_clip.read_bytes())
    model = ws.exports_dir("tiny") / "a_to_b.onnx"
    assert merge_worker(ws, "tiny", clip, model, ws.output / "tiny", "all", "cpu") == 0
    driver = chrome(tmp_path)
    try:
        with DashboardServer(ws, port=0, refresh_ms=700) as server:
            driver.get(f"{server.url}outputs")
            wait(driver, "!!document.querySelector('#outputs-list video')", "the video")
            wait_text(driver, "#outputs-list", "clip_swapd.mp4", "job tiny", "50 frames",
                      "from footage/tiny/clip.mp4")
            # the line `swapd verify` prints: every mark it found
            wait_text(driver, "#outputs-list .verify", "MARKED as synthetic",
                      "metadata tag present", "watermark", "C2PA manifest", timeout=90)
            wait_text(driver, "#under-way", "No merge under way")
            # it plays: the browser fetched it with range requests and decodes its frames
            driver.execute_script("const v = document.querySelector('#outputs-list video');"
                                  "v.muted = true; v.play();")
            wait(driver, "(() => { const v = document.querySelector('#outputs-list video');"
                         " return v.readyState >= 2 && v.videoWidth === 640 &&"
                         " v.currentTime > 0.2; })()", "the video to play")
            full_page_screenshot(driver, ARTIFACTS / "dashboard-outputs.png")
    finally:
        driver.quit()


def test_faces_are_picked_and_marked_focus_from_the_tracker(trained_ws: TrainedWorkspace,
                                                            tmp_path: Path) -> None:
    copy = trained_ws.copy(tmp_path / "ws")
    rows = sorted(tracked(copy, 12, "a"), key=lambda r: (-r["loss"], r["face"]))
    driver = chrome(tmp_path)
    store = StateStore(copy.workspace.state_db, readonly=True)
    try:
        with DashboardServer(copy.workspace, port=0, refresh_ms=800) as server:
            driver.get(f"{server.url}jobs/tiny/tracker")
            wait_tiles(driver, [r["face"] for r in rows], "the faces")
            click(driver, "#pick-mode input")
            picked = [rows[1]["face"], rows[4]["face"]]
            for name in picked:
                click(driver, f"#tracker-grid .tile[data-name='{name}'] .tile-images")
            wait(driver, "document.querySelectorAll('#tracker-grid .tile-images.picked')"
                         ".length === 2", "two faces picked")
            assert driver.execute_script(
                "return document.querySelector('#timeline-card').style.display") == "none"
            click(driver, "#focus-picked")
            wait_text(driver, "#focus-message", "Marked 2 faces")
            assert store.focus_faces("tiny") == {"a": set(picked), "b": set()}
            wait(driver, "JSON.stringify([...document.querySelectorAll('#tracker-grid "
                         ".tile.focused')].map(t => t.dataset.name).sort()) === "
                         f"{json.dumps(json.dumps(sorted(picked), separators=(',', ':')))}",
                 "the focus marks on the tiles")
            wait_text(driver, "#focus-count", "2 focus faces in this set")
            click(driver, "#focus-only input")
            wait(driver, f"{TILE_NAMES}.length === 2", "the focus faces only")
            click(driver, "#focus-only input")
            click(driver, "#focus-worst")
            wait_text(driver, "#focus-message", f"Marked {min(50, len(rows))} faces")
            assert store.focus_faces("tiny")["a"] == {r["face"] for r in rows[:50]}
            click(driver, "#focus-clear")
            wait_text(driver, "#focus-message", "Unmarked")
            assert store.focus_faces("tiny") == {"a": set(), "b": set()}
            actions = [(r.action, r.args.get("focus")) for r in store.control_requests("tiny")]
            assert actions[:3] == [("focus", False), ("focus", True), ("focus", True)]
    finally:
        driver.quit()
        store.close()

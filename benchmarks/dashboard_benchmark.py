"""Dashboard at scale (issue 13): the snapshot tracker over 5,000 faces per side and 20
snapshots, timed in a real headless Chromium.

    nice .venv/bin/python benchmarks/dashboard_benchmark.py [--faces 5000] [--snapshots 20] \\
        [--repeat 5] [--keep /tmp/dashboard_bench] [--quiet 0.25] \\
        [--out benchmarks/results/dashboard.json]

1. The workspace (:func:`build_workspace`; with ``--keep DIR`` made once and reused):
   faces/alice and faces/bob with ``--faces`` synthetic faceswap-format faces each (the tracker
   benchmark's generator), indexed by the service's own ingest; a job ``bench`` (its job file
   under jobs/, in the state store); one real snapshot with tracker data for every face, taken
   by the real trainer (WebP files in models/bench/snapshots/00001000/tracker/); ``--snapshots``
   minus one more snapshot folders whose ``tracker`` is a symbolic link to the first one's
   (the file route follows links that stay inside models/), each with its own rows in the state
   store, every face's loss varied per snapshot; a loss history of ``--history`` iterations.
2. The dashboard: swapd's own waitress server (DashboardServer, in this process's threads),
   and Chromium at 1400x1000 (Debian's chromium and chromedriver).
3. Each view ``--repeat`` times, timed in the browser from the user's input (the pointer
   press, or the navigation's start) to the view complete (the expected tiles in
   #tracker-grid in the expected order and every one of their images loaded; the heatmaps
   redrawn; the timeline's columns and images loaded), then the next animation frame:
   opening the tracker (browser cache emptied; once also with no thumbnail made yet; with
   "Show" at face + output and at face only; with the browser's cache kept), choosing another
   snapshot and another sort in their dropdowns, clicking a heatmap cell with the mouse,
   opening a face's timeline (also with a sparse cell's few tiles in the grid), and opening
   the job page (loss graph). Dropdowns are used as a user does: a click opens one, a click
   on an option chooses it. For each: the image requests, the Dash callbacks (which output,
   when answered, bytes, any data: image inside), the request that brought the view (queued
   in the browser, waited on the server), the main thread's long tasks; one more snapshot
   change under Chromium's profiler (main-thread time by script); the CPU share this
   benchmark and everything else used while timing (``--quiet`` waits for a calmer machine).
4. The server alone: the tracker_reads functions behind each callback, each callback the page
   made replayed on the WSGI app, an image of each route; no browser, no network.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import swapd  # noqa: F401  (first: it sets OpenMP's wait policy before torch loads)

# isort: split

import numpy as np

from swapd.config import JobFile, load_job_file
from swapd.demo.identity import DEMO_A, DEMO_B
from swapd.state import StateStore
from swapd.trainer.tracker import TrackedFace, read_tracked
from swapd.workspace import Workspace

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.dashboard_benchmark
    from tracker_benchmark import DEMO_OPTIONS, faces_in
except ImportError:
    from benchmarks.tracker_benchmark import DEMO_OPTIONS, faces_in

JOB = "bench"
SNAPSHOT_EVERY = 1000
JOB_FILE = """\
[train]
a = "faces/alice"
b = "faces/bob"
model = "lightweight"
batch_size = 16
iterations = 100000
save_every = 250
snapshot_every = {every}
tracker = true

[train.options]
{options}
"""


@dataclass(frozen=True)
class BenchWorkspace:
    root: Path
    job: str
    iterations: list[int]  # snapshots with tracker data, oldest first
    faces_per_side: int
    seconds: dict[str, float]  # how long each part of building it took


# --- the workspace ----------------------------------------------------------------------------


def build_workspace(root: Path, faces: int = 5000, snapshots: int = 20, history: int = 20000,
                    seed: int = 0) -> BenchWorkspace:
    """A workspace with ``faces`` indexed faces per side and a job with ``snapshots``
    snapshots of tracker data (see the module doc). Safe to call again on the same ``root``:
    what is there already (faces, the real snapshot) is kept."""
    ws = Workspace.open(root)
    seconds: dict[str, float] = {}
    iterations = [SNAPSHOT_EVERY * (k + 1) for k in range(snapshots)]
    start = time.perf_counter()
    faces_in(ws.face_set("alice"), DEMO_A, faces, 1)
    faces_in(ws.face_set("bob"), DEMO_B, faces, 2)
    seconds["render_faces"] = time.perf_counter() - start
    store = StateStore(ws.state_db)
    try:
        from swapd.daemon.ingest import FaceIngest

        start = time.perf_counter()
        FaceIngest(ws, store, min_size=64, settle_seconds=0).scan()
        seconds["ingest"] = time.perf_counter() - start
        spec = write_job(ws, store)
        start = time.perf_counter()
        tracked = first_snapshot(ws, spec, iterations[0])
        seconds["first_snapshot"] = time.perf_counter() - start
        start = time.perf_counter()
        link_snapshots(ws, iterations)
        write_tracker_rows(store, tracked, iterations, seed)
        write_loss_history(store, history, seed)
        store.set_job_progress(JOB, history, egs=58.0)
        store.set_job_state(JOB, "stopped")
        seconds["rows"] = time.perf_counter() - start
    finally:
        store.close()
    return BenchWorkspace(ws.root, JOB, iterations, faces, seconds)


def write_job(ws: Workspace, store: StateStore) -> JobFile:
    """jobs/bench.toml (the demo's model, a snapshot every SNAPSHOT_EVERY), in the store."""
    path = ws.jobs / f"{JOB}.toml"
    options = "\n".join(f"{key} = {value!r}" for key, value in DEMO_OPTIONS.items())
    path.write_text(JOB_FILE.format(every=SNAPSHOT_EVERY, options=options))
    spec = load_job_file(path)
    store.upsert_job(JOB, str(path), "train", "stopped", model="lightweight", target=100000,
                     config=spec.model_dump())
    return spec


def first_snapshot(ws: Workspace, spec: JobFile, iteration: int) -> list[TrackedFace]:
    """The real snapshot (trainer, tracker data for every face) at ``iteration``: taken after
    a few steps, then moved to ``iteration`` so the snapshots are evenly spaced. Reused when
    it is there already."""
    from swapd.trainer.loop import Trainer
    from swapd.trainer.model_io import ModelIO
    from swapd.trainer.options import split_options

    folder = ws.model_dir(JOB) / "snapshots" / f"{iteration:08d}"
    kept = read_tracked(folder) if (folder / "snapshot.json").is_file() else []
    if kept and all(t.tile for t in kept):  # (one from before the tracker kept tiles: again)
        return kept
    assert spec.train is not None
    trainer_options, model_options = split_options(spec.train.model, spec.train.options)
    trainer = Trainer(spec.train.model, model_options.model_dump(), trainer_options,
                      ws.resolve(spec.train.a), ws.resolve(spec.train.b), ws.model_dir(JOB),
                      batch_size=spec.train.batch_size)
    try:
        for _ in range(3):
            trainer.step()
        taken = ModelIO(trainer).snapshot(tracker=True)
    finally:
        trainer.close()
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(taken.snapshot.folder, folder)
    info = {**taken.snapshot.info, "iteration": iteration}
    (folder / "snapshot.json").write_text(json.dumps(info, indent=2))
    return taken.tracked


def link_snapshots(ws: Workspace, iterations: list[int]) -> None:
    """Snapshot folders after the first: snapshot.json and ``tracker`` linked to the first's
    (a symbolic link: the file route refuses hard links)."""
    root = ws.model_dir(JOB) / "snapshots"
    first = root / f"{iterations[0]:08d}"
    info = json.loads((first / "snapshot.json").read_text())
    for iteration in iterations[1:]:
        folder = root / f"{iteration:08d}"
        folder.mkdir(exist_ok=True)
        link = folder / "tracker"
        if not link.is_symlink():
            if link.exists():
                shutil.rmtree(link)
            link.symlink_to(Path("..") / first.name / "tracker", target_is_directory=True)
        (folder / "snapshot.json").write_text(json.dumps({**info, "iteration": iteration},
                                                         indent=2))


def write_tracker_rows(store: StateStore, tracked: list[TrackedFace], iterations: list[int],
                       seed: int) -> None:
    """Each snapshot's rows: the real losses at the first, then lower on the whole (by up to
    30 %) with every face moved by its own random factor, so changes differ face by face."""
    stale = {r["iteration"] for r in store.tracker_snapshots(JOB)} - set(iterations)
    store.forget_tracked_faces(JOB, sorted(stale))
    rng = np.random.default_rng(seed)
    for k, iteration in enumerate(iterations):
        trend = 1.0 - 0.3 * k / max(1, len(iterations) - 1)
        factors = trend * rng.lognormal(0.0, 0.12, len(tracked)) if k else np.ones(len(tracked))
        rows = [t if t.loss is None else dataclasses.replace(t, loss=round(t.loss * f, 6))
                for t, f in zip(tracked, factors, strict=True)]
        store.add_tracked_faces(JOB, iteration, rows)


def write_loss_history(store: StateStore, iterations: int, seed: int) -> None:
    """A loss history of ``iterations`` rows, as the training worker writes them."""
    rng = np.random.default_rng(seed + 1)
    store.truncate_losses(JOB, -1)
    start = time.time() - iterations * 0.55
    rows = []
    for i in range(1, iterations + 1):
        base = 0.08 + 0.25 * math.exp(-i / 4000)
        la, lb = (base * float(rng.lognormal(0.0, 0.05)) for _ in range(2))
        rows.append((i, start + i * 0.55, la, lb,
                     {"a": {"ssim": 0.8 * la, "mae": 0.2 * la},
                      "b": {"ssim": 0.8 * lb, "mae": 0.2 * lb}}, 1e-3, 58.0))
    store.add_losses(JOB, rows)


# --- the browser ------------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# Run in every page before its own scripts: a big enough resource-timing buffer (300 images
# and more), the time of the last pointer press, and each Dash callback's response (when it
# came, how big, whether it carries a data: image).
PAGE_HOOKS = """
performance.setResourceTimingBufferSize(100000);
window.__bench = {t0: null, done: null, calls: [], long: []};
new PerformanceObserver(list => list.getEntries().forEach(e => window.__bench.long.push(
  [e.startTime, e.duration]))).observe({type: 'longtask', buffered: true});
document.addEventListener('pointerdown', e => { window.__bench.t0 = e.timeStamp; }, true);
const pageFetch = window.fetch;
window.fetch = async function (input, init) {
  const url = typeof input === 'string' ? input : input.url;
  if (!url.includes('_dash-update-component')) return pageFetch.apply(this, arguments);
  const start = performance.now();
  let output = '';
  try { output = JSON.parse(init.body).output; } catch (e) { output = '?'; }
  const response = await pageFetch.apply(this, arguments);
  response.clone().text().then(text => window.__bench.calls.push({
    output, start, end: performance.now(), chars: text.length, body: init.body,
    data_images: (text.match(/data:image/g) || []).length}));
  return response;
};
// An image counts as loaded once decoded, except while the watcher asks whether the view's
// elements are there at all (then every image counts).
window.__benchLoaded = i => window.__bench.structure || (i.complete && i.naturalWidth > 0);
window.__benchWatch = function (expression) {
  const ready = new Function('return ' + expression), b = window.__bench;
  b.done = b.shown = null;
  const poll = () => {
    b.structure = true;
    if (b.shown === null && ready()) b.shown = performance.now();
    b.structure = false;
    if (ready()) requestAnimationFrame(() => { b.done = performance.now(); });
    else setTimeout(poll, 4);
  };
  poll();
};
"""
# Ready conditions (JS expressions; $names filled in with JSON values).
GRID_READY = Template("""(() => {
  const want = $urls, imgs = document.querySelectorAll('#tracker-grid img');
  return imgs.length === want.length && [...imgs].every((i, k) =>
    i.getAttribute('src') === want[k] && __benchLoaded(i)); })()""")
HEATMAPS_READY = Template("""['heatmap-count', 'heatmap-loss'].every(id => {
  const g = document.querySelector('#' + id + ' .js-plotly-plot');
  const s = g && g._fullLayout && g._fullLayout.shapes;
  return !!s && s.length === 1 && s[0].x0 === $yaw && s[0].y0 === $pitch
    && g.querySelectorAll('.shapelayer path').length > 0; })""")
TIMELINE_READY = Template("""(() => {
  const row = document.getElementById('timeline-row'); if (!row) return false;
  const first = row.querySelector('.timeline-column.first .name');
  const imgs = row.querySelectorAll('img');
  return !!first && first.textContent === $name
    && row.querySelectorAll('.timeline-column').length === $columns
    && imgs.length === $images && [...imgs].every(__benchLoaded);
  })()""")


# Wait (in the page) for the watcher to see the view complete; its time, or null.
WAIT_JS = """
const [timeout, callback] = arguments; const until = performance.now() + timeout;
const check = () => { if (window.__bench.done !== null) callback(window.__bench.done);
  else if (performance.now() > until) callback(null); else setTimeout(check, 20); };
check();
"""
# What happened between the input (t0; 0 = the navigation's start) and the view complete.
MEASURE_JS = """
const b = window.__bench, t0 = b.t0 === null ? 0 : b.t0, done = b.done;
const view = arguments[0];
const middle = v => v.length ? v.sort((p, q) => p - q)[Math.floor(v.length / 2)] : 0;
const inside = e => e.startTime >= t0 - 1 && e.startTime <= done;
const res = performance.getEntriesByType('resource').filter(inside);
const images = res.filter(e => e.name.includes('/files/') || e.name.includes('/thumbs/'));
const calls = b.calls.filter(c => c.start >= t0 - 1 && c.start <= done);
const dash = res.filter(e => e.name.includes('_dash-update-component'));
// the call that brought the view: its biggest answer; its request's timing
const call = calls.filter(c => c.output.includes(view) && c.end <= done)
  .sort((p, q) => q.chars - p.chars)[0];
const entry = call && dash.sort((p, q) => Math.abs(p.startTime - call.start)
  - Math.abs(q.startTime - call.start))[0];
const nav = performance.getEntriesByType('navigation')[0];
const boot = b.t0 !== null || !nav ? null : {
  dom_content_loaded_ms: nav.domContentLoadedEventEnd, load_ms: nav.loadEventEnd,
  first_callback_ms: Math.min(...b.calls.map(c => c.start)),
  scripts_bytes: res.filter(e => e.initiatorType === 'script' || e.name.endsWith('.js'))
    .reduce((n, e) => n + e.encodedBodySize, 0)};
// main-thread tasks of 50 ms and more (scripts, layout, paint) inside the view's time
const busy = b.long.reduce((n, [start, length]) =>
  n + Math.max(0, Math.min(done, start + length) - Math.max(t0, start)), 0);
return {ms: done - t0, boot, shown_ms: b.shown - t0, main_thread_long_tasks_ms: busy,
  image_requests: images.filter(e => e.transferSize > 0).length,
  images_from_cache: images.filter(e => e.transferSize === 0).length,
  images_end_ms: Math.max(0, ...images.map(e => e.responseEnd - t0)),
  callbacks: calls.length, callbacks_end_ms: Math.max(0, ...calls.map(c => c.end - t0)),
  view_data_ms: call ? call.end - t0 : null,
  view_callback: entry ? {queued_ms: entry.requestStart - entry.startTime,
    server_ms: entry.responseStart - entry.requestStart,
    download_ms: entry.responseEnd - entry.responseStart, bytes: call.chars} : null,
  image_queued_ms: middle(images.map(e => e.requestStart - e.startTime)),
  image_wait_ms: middle(images.map(e => e.responseStart - e.requestStart)),
  callback_outputs: calls.map(c => [c.output, Math.round(c.end - c.start)]),
  callback_bytes: dash.reduce((n, e) => n + e.encodedBodySize, 0),
  callback_transfer_bytes: dash.reduce((n, e) => n + e.transferSize, 0),
  data_images: calls.reduce((n, c) => n + c.data_images, 0)};
"""


def chrome(profile: Path, width: int = 1400, height: int = 1000) -> Any:
    """Headless Chromium (as tests/browser.py starts it) with PAGE_HOOKS in every page."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--window-size={width},{height}",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(60)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PAGE_HOOKS})
    return driver


def grid_ready(urls: list[str]) -> str:
    """JS: #tracker-grid shows exactly these images, in this order, every one loaded."""
    return GRID_READY.substitute(urls=json.dumps(urls))


def heatmaps_ready(yaw: float, pitch: float) -> str:
    """JS: both heatmaps redrawn with the cell at (yaw, pitch) outlined."""
    return HEATMAPS_READY.substitute(yaw=json.dumps(yaw), pitch=json.dumps(pitch))


def timeline_ready(name: str, columns: int, images: int) -> str:
    """JS: the timeline card shows ``name`` with ``columns`` columns, every image loaded."""
    return TIMELINE_READY.substitute(name=json.dumps(name), columns=columns, images=images)


def finish(driver: Any, view: str = "tracker-grid.children", timeout: float = 30.0
           ) -> dict[str, Any]:
    """Wait for the watcher armed before the action; the time from the pointer press (or the
    navigation's start) to the view complete, and the requests made in between (``view``:
    the output of the callback that brings the view's data)."""
    done = driver.execute_async_script(WAIT_JS, timeout * 1000)
    if done is None:
        raise TimeoutError("the view did not complete in time: "
                           + driver.execute_script("return document.body.innerText")[:500])
    return driver.execute_script(MEASURE_JS, view)


def arm(driver: Any, expression: str) -> None:
    """Start watching for ``expression`` (a ready condition) before the user's input."""
    driver.execute_script("window.__bench.t0 = null; window.__benchWatch(arguments[0]);",
                          expression)


# --- what each view should show -----------------------------------------------------------


class Expected:
    """What the tracker page must show for a choice (side A, every image shown): the image
    URLs of its grid, read with the dashboard's own functions from the same store."""

    def __init__(self, ws: Workspace, job: str, side: str = "a") -> None:
        self.ws, self.job, self.side = ws, job, side

    def faces(self, snapshot: str, sort: str, cell: tuple[float, float] | None = None,
              step: float = 10) -> list[dict[str, Any]]:
        from swapd.dashboard import reads, tracker_reads

        def read(store: StateStore) -> list[dict[str, Any]]:
            chosen, against = tracker_reads.chosen_snapshot(store, self.job, snapshot,
                                                             "previous")
            assert chosen is not None
            return tracker_reads.snapshot_faces(
                self.ws, store, self.job, chosen, self.side, sort, against,
                yaw=(cell[0], cell[0] + step) if cell else None,
                pitch=(cell[1], cell[1] + step) if cell else None)["faces"]

        found = reads.with_store(self.ws, read)
        assert found is not None
        return found

    def urls(self, snapshot: str, sort: str, cell: tuple[float, float] | None = None,
             kinds: tuple[str, ...] = ("face", "output", "swap")) -> list[str]:
        """The grid's images in order (``kinds``: what the Show choice shows of a face; a
        face with a tile shows each part from that one image)."""
        return [face["tile"] or face[kind] for face in self.faces(snapshot, sort, cell)
                for kind in kinds if face["tile"] or face[kind]]

    def cells(self, snapshot: int) -> list[tuple[int, float, float]]:
        """The yaw x pitch cells that hold faces: (faces, yaw, pitch; low edges), fullest
        first."""
        from swapd.dashboard import reads, tracker_reads

        found = reads.with_store(self.ws, lambda store: tracker_reads.snapshot_cells(
            store, self.job, snapshot, self.side))
        assert found is not None
        cells = [(n, yaw, pitch) for pitch, row in zip(found["pitch"], found["count"],
                                                        strict=True)
                 for yaw, n in zip(found["yaw"], row, strict=True) if n]
        return sorted(cells, reverse=True)


# --- the measurements -------------------------------------------------------------------------


def choose(driver: Any, dropdown: str, value: str) -> None:
    """Open a Dash 4 dcc.Dropdown (a button with the component's id) and click the option
    whose value is ``value`` (a label holding an input of that value), as a user does."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element("id", dropdown).click()
    option = WebDriverWait(driver, 10, poll_frequency=0.05).until(lambda d: d.execute_script(
        "const i = document.querySelector('.dash-dropdown-content input[value=\"' + "
        "arguments[0] + '\"]'); return i && i.closest('label');", value))
    option.click()


def open_tracker(driver: Any, url: str, expected: str, repeat: int,
                 thumbs: Path | None = None, empty_cache: bool = True
                 ) -> list[dict[str, Any]]:
    """Open the tracker at ``url`` afresh ``repeat`` times, the browser's cache emptied each
    time unless ``empty_cache`` is False; with ``thumbs`` (the server's thumbnail cache) once
    more before, that emptied too (the first visit ever)."""
    script = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {
        "source": f"window.__benchWatch({json.dumps(expected)});"})["identifier"]
    runs = []
    try:
        for k in range(repeat + (thumbs is not None)):
            if k == 0 and thumbs is not None:
                shutil.rmtree(thumbs, ignore_errors=True)
            driver.get("about:blank")
            if empty_cache:
                driver.execute_cdp_cmd("Network.clearBrowserCache", {})
            driver.get(url)
            runs.append(finish(driver))
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                               {"identifier": script})
    return runs


def page_totals(driver: Any, settle: float = 4.0) -> dict[str, Any]:
    """Everything the open page fetched so far, after ``settle`` seconds more (refresh ticks
    included): image requests, Dash callback bytes, and the main thread's long tasks while
    the page sat there."""
    since = driver.execute_script("return performance.now()")
    time.sleep(settle)
    return driver.execute_script("""
        const since = arguments[0], now = performance.now();
        const idle = window.__bench.long.filter(([start]) => start >= since)
          .reduce((n, [, length]) => n + length, 0);
        const res = performance.getEntriesByType('resource');
        const images = res.filter(e => e.name.includes('/files/') || e.name.includes('/thumbs/'));
        const dash = res.filter(e => e.name.includes('_dash-update-component'));
        return {image_requests: images.filter(e => e.transferSize > 0).length,
          images_from_cache: images.filter(e => e.transferSize === 0).length,
          image_bytes: images.reduce((n, e) => n + e.encodedBodySize, 0),
          callbacks: dash.length,
          callback_bytes: dash.reduce((n, e) => n + e.encodedBodySize, 0),
          largest_callback_bytes: Math.max(0, ...dash.map(e => e.encodedBodySize)),
          data_images: window.__bench.calls.reduce((n, c) => n + c.data_images, 0),
          tiles: document.querySelectorAll('#tracker-grid .tile').length,
          idle_seconds: (now - since) / 1000, idle_long_tasks_ms: idle};""", since)


def change_snapshot(driver: Any, expected: Expected, iterations: list[int], repeat: int
                    ) -> list[dict[str, Any]]:
    """Choose older snapshots one after the other in #tracker-snapshot (worst first)."""
    runs = []
    for k in range(repeat):
        iteration = iterations[-2 - k % (len(iterations) - 1)]
        arm(driver, grid_ready(expected.urls(str(iteration), "-loss")))
        choose(driver, "tracker-snapshot", str(iteration))
        runs.append(finish(driver))
    return runs


SORT_CYCLE = ("loss", "-delta", "delta", "yaw", "-loss")  # best first, most worsened, ...


def change_sort(driver: Any, expected: Expected, snapshot: int, repeat: int
                ) -> list[dict[str, Any]]:
    """Choose sorts one after the other in #tracker-sort (best first, most worsened, ...)."""
    runs = []
    for k in range(repeat):
        sort = SORT_CYCLE[k % len(SORT_CYCLE)]
        arm(driver, grid_ready(expected.urls(str(snapshot), sort)))
        choose(driver, "tracker-sort", sort)
        runs.append({**finish(driver), "sort": sort})
    return runs


def click_cells(driver: Any, expected: Expected, snapshot: int, sort: str,
                cells: list[tuple[float, float]]) -> list[dict[str, Any]]:
    """Click these cells (yaw, pitch: low edges) of #heatmap-count one after the other, the
    mouse at the cell's centre."""
    from selenium.webdriver.common.action_chains import ActionChains

    runs = []
    for yaw, pitch in cells:
        x, y = driver.execute_script("""
            const g = document.querySelector('#heatmap-count .js-plotly-plot');
            g.scrollIntoView({block: 'center'}); const r = g.getBoundingClientRect();
            const xa = g._fullLayout.xaxis, ya = g._fullLayout.yaxis;
            return [r.left + xa._offset + xa.d2p(arguments[0]),
                    r.top + ya._offset + ya.d2p(arguments[1])];""", yaw + 5, pitch + 5)
        arm(driver, f"{grid_ready(expected.urls(str(snapshot), sort, (yaw, pitch)))} && "
                    f"{heatmaps_ready(yaw, pitch)}")
        actions = ActionChains(driver)
        actions.w3c_actions.pointer_action.move_to_location(round(x), round(y))
        actions.w3c_actions.pointer_action.click()
        actions.perform()
        runs.append({**finish(driver), "cell": [yaw, pitch]})
    return runs


def open_timelines(driver: Any, names: list[str], snapshots: int) -> list[dict[str, Any]]:
    """Click faces' tiles one after the other (closing the timeline between)."""
    from selenium.webdriver.support.ui import WebDriverWait

    runs = []
    for name in names:
        arm(driver, timeline_ready(name, 1 + snapshots, 1 + 2 * snapshots))
        driver.find_element("css selector",
                            f'#tracker-grid .tile[data-name="{name}"] .tile-images').click()
        runs.append({**finish(driver, "timeline-body.children"), "face": name})
        driver.find_element("id", "timeline-close").click()
        WebDriverWait(driver, 10, poll_frequency=0.05).until(lambda d: d.execute_script(
            "return document.getElementById('timeline-card').style.display === 'none'"))
    return runs


LOSS_GRAPH_READY = ("(() => { const g = document.querySelector('#loss-graph .js-plotly-plot');"
                    " return !!g && !!g.data && g.data.length >= 2 && g.data.every("
                    "t => t.x && t.x.length > 100); })()")


def open_job_page(driver: Any, url: str, repeat: int) -> list[dict[str, Any]]:
    """Open the job's page (its loss graph over the whole history) ``repeat`` times."""
    script = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {
        "source": f"window.__benchWatch({json.dumps(LOSS_GRAPH_READY)});"})["identifier"]
    try:
        runs = []
        for _ in range(repeat):
            driver.get("about:blank")
            driver.get(url)
            runs.append(finish(driver, "loss-graph.figure"))
        return runs
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                               {"identifier": script})


def open_from_job_page(driver: Any, base: str, job: str, expected: str, repeat: int
                       ) -> list[dict[str, Any]]:
    """Open the tracker as a user mostly does: from the job's page, by its "Snapshot
    tracker" tab (the app is loaded; the tracker's images are not in the browser's cache)."""
    from selenium.webdriver.support.ui import WebDriverWait

    runs = []
    for _ in range(repeat):
        driver.get("about:blank")
        driver.execute_cdp_cmd("Network.clearBrowserCache", {})
        driver.get(f"{base}/jobs/{job}")
        WebDriverWait(driver, 30, poll_frequency=0.1).until(lambda d: d.execute_script(
            f"return {LOSS_GRAPH_READY}"))
        arm(driver, expected)
        driver.find_element("css selector", f".tabs a[href='/jobs/{job}/tracker']").click()
        runs.append(finish(driver))
    return runs


def profile_snapshot_change(driver: Any, expected: Expected, iteration: int, sort: str
                            ) -> dict[str, Any]:
    """One more change of snapshot under Chromium's sampling profiler: the main thread's
    time by script (self time; "(program)" is the browser's own work: style, layout, paint,
    image decoding)."""
    driver.execute_cdp_cmd("Profiler.enable", {})
    driver.execute_cdp_cmd("Profiler.setSamplingInterval", {"interval": 500})
    arm(driver, grid_ready(expected.urls(str(iteration), sort)))
    driver.execute_cdp_cmd("Profiler.start", {})
    choose(driver, "tracker-snapshot", str(iteration))
    run = finish(driver)
    profile = driver.execute_cdp_cmd("Profiler.stop", {})["profile"]
    driver.execute_cdp_cmd("Profiler.disable", {})
    nodes = {node["id"]: node["callFrame"] for node in profile["nodes"]}
    by_script: dict[str, float] = {}
    for node, micros in zip(profile["samples"], profile["timeDeltas"], strict=True):
        frame = nodes[node]
        name = frame["url"].rsplit("/", 1)[-1].split("?")[0] or frame["functionName"]
        name = re.sub(r"\.v\d+_\d+_\d+m\d+", "", name)  # Dash's cache-busting stamp
        by_script[name] = by_script.get(name, 0.0) + micros / 1000
    top = sorted(by_script.items(), key=lambda kv: -kv[1])[:8]
    return {"ms": round(run["ms"]), "by_script_ms": {k: round(v) for k, v in top}}


# --- the server's side --------------------------------------------------------------------------


def timed_ms(call: Callable[[], object], repeat: int = 5) -> float:
    """Median milliseconds of ``call()``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 2)


def server_side(ws: Workspace, job: str, iterations: list[int], face: str) -> dict[str, float]:
    """The reads behind each callback, timed on their own against the same store (what a
    callback adds: building the Dash components and their JSON)."""
    from swapd.dashboard import tracker_reads as tr
    from swapd.dashboard.files import make_thumbnail

    store = StateStore(ws.state_db, readonly=True)
    newest, before = iterations[-1], iterations[-2]
    cell = Expected(ws, job).cells(newest)[0][1:]
    yaw, pitch = (cell[0], cell[0] + 10), (cell[1], cell[1] + 10)
    try:
        return {
            "open a read-only store (each callback does)": timed_ms(
                lambda: StateStore(ws.state_db, readonly=True).close()),
            "snapshots (snapshot list; each grid/heatmap callback too)": timed_ms(
                lambda: tr.snapshots(store, job)),
            "snapshot_faces, a page worst first": timed_ms(lambda: tr.snapshot_faces(
                ws, store, job, newest, "a", "-loss", before)),
            "snapshot_faces, a page most worsened": timed_ms(lambda: tr.snapshot_faces(
                ws, store, job, newest, "a", "-delta", before)),
            "snapshot_faces, a page of one cell": timed_ms(lambda: tr.snapshot_faces(
                ws, store, job, newest, "a", "-loss", before, yaw=yaw, pitch=pitch)),
            "snapshot_cells (the heatmaps)": timed_ms(
                lambda: tr.snapshot_cells(store, job, newest, "a")),
            "timeline (one face)": timed_ms(lambda: tr.timeline(ws, store, job, "a", face)),
            "compare (each change of the grid's snapshot)": timed_ms(
                lambda: tr.compare(ws, store, job, before, newest)),
            "a face thumbnail made (first view only), 128 px": timed_ms(
                lambda: make_thumbnail(ws.face_set("alice") / face, 128)),
        }
    finally:
        store.close()


CALLBACKS = {  # the callbacks to replay on the server alone: a part of their output's id
    "grid (a page of 100 tiles)": "tracker-grid.children",
    "heatmaps (both figures)": "heatmap-count.figure",
    "compare (the panel below the grid)": "compare-body.children",
    "timeline (one face)": "timeline-body.children",
}
UNCHANGED_KEYS = ("tracker-grid-key", "tracker-cells-key")  # states that skip the work


def captured_callbacks(driver: Any) -> dict[str, str]:
    """The request body of one call of each of CALLBACKS the page made, with the states
    that let a callback answer "no change" cleared, so a replay does the whole work."""
    calls = driver.execute_script(
        "return window.__bench.calls.map(c => [c.output, c.body, c.chars])")
    found = {}
    for name, part in CALLBACKS.items():
        bodies = [(chars, body) for output, body, chars in calls if part in output]
        if not bodies:
            continue
        body = max(bodies)[1]  # the call that answered most: it did the whole work
        payload = json.loads(body)
        for state in payload.get("state", []):
            if state.get("id") in UNCHANGED_KEYS:
                state["value"] = None
        found[name] = json.dumps(payload)
    return found


def components(value: Any) -> int:
    """How many Dash components a callback's answer holds."""
    if isinstance(value, dict):
        own = 1 if {"type", "namespace", "props"} <= value.keys() else 0
        return own + sum(components(v) for v in value.values())
    if isinstance(value, list):
        return sum(components(v) for v in value)
    return 0


def server_requests(ws: Workspace, bodies: dict[str, str], images: list[str]
                    ) -> dict[str, Any]:
    """The dashboard's requests on the server alone (the WSGI app, no network, no browser):
    each callback the page makes (ms a call), an image of each route (ms a request, and the
    headers it is served with), the Dash components in a page of the grid."""
    from werkzeug.test import Client

    from swapd.dashboard.access import AccessGate
    from swapd.dashboard.app import create_app

    client = Client(AccessGate(create_app(ws).server, None))

    def post(body: str) -> Any:
        reply = client.post("/_dash-update-component", data=body,
                            content_type="application/json")
        assert reply.status_code in (200, 204), reply.status_code
        return reply

    def get(urls: list[str]) -> dict[str, str]:
        for url in urls:
            reply = client.get(url)
            assert reply.status_code == 200, (url, reply.status_code)
            reply.get_data()
            reply.close()
        return {key: reply.headers.get(key, "") for key in ("Content-Type", "Cache-Control")}

    found: dict[str, Any] = {"ms": {f"callback: {name}": timed_ms(lambda body=body: post(body))
                                    for name, body in bodies.items()}, "headers": {}}
    grid = next((b for name, b in bodies.items() if name.startswith("grid")), None)
    found["grid_components"] = components(post(grid).get_json()) if grid else None
    for route in ("/files/", "/thumbs/"):
        urls = [url for url in images if url.startswith(route)]
        if urls:
            found["ms"][f"one image from {route} (mean of {len(urls)})"] = round(
                timed_ms(lambda urls=urls: get(urls), repeat=3) / len(urls), 2)
            found["headers"][route] = get(urls[:1])
    return found


# --- the run ------------------------------------------------------------------------------------


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and max of the runs, with the medians of their parts."""
    def median(values: list[float]) -> float:
        return round(statistics.median(values), 1) if values else 0.0

    def part(key: str) -> float:
        return median([r[key] for r in runs if r[key] is not None])

    views = [r["view_callback"] for r in runs if r["view_callback"]]
    boots = [r["boot"] for r in runs if r["boot"]]
    boot = {key: median([b[key] for b in boots]) for key in boots[0]} if boots else None
    return {"median_ms": part("ms"), "max_ms": round(max(r["ms"] for r in runs), 1),
            "runs_ms": [round(r["ms"], 1) for r in runs],
            "view_data_ms": part("view_data_ms"), "shown_ms": part("shown_ms"),
            "main_thread_long_tasks_ms": part("main_thread_long_tasks_ms"),
            "view_callback_queued_ms": median([v["queued_ms"] for v in views]),
            "view_callback_server_ms": median([v["server_ms"] for v in views]),
            "view_callback_bytes": median([v["bytes"] for v in views]),
            "callbacks_done_ms": part("callbacks_end_ms"),
            "images_done_ms": part("images_end_ms"), "image_queued_ms": part("image_queued_ms"),
            "image_wait_ms": part("image_wait_ms"),
            "image_requests": part("image_requests"),
            "images_from_cache": part("images_from_cache"), "callbacks": part("callbacks"),
            "callback_bytes": part("callback_bytes"),
            "data_images_in_callbacks": max(r["data_images"] for r in runs), "boot": boot,
            "details": runs}


def in_page(driver: Any, expected: Expected, iterations: list[int], repeat: int
            ) -> dict[str, Any]:
    """On the opened tracker: snapshots, sorts, heatmap cells, timelines, one after the
    other (each starts from the view the one before left)."""
    results: dict[str, Any] = {
        "snapshot": summary(change_snapshot(driver, expected, iterations, repeat))}
    shown = iterations[-2 - (repeat - 1) % (len(iterations) - 1)]
    results["sort"] = summary(change_sort(driver, expected, shown, repeat))
    sort = SORT_CYCLE[(repeat - 1) % len(SORT_CYCLE)]
    other = iterations[0] if iterations[0] != shown else iterations[-1]
    results["main_thread_profile"] = profile_snapshot_change(driver, expected, other, sort)
    shown = other
    found = expected.cells(shown)
    cells = click_cells(driver, expected, shown, sort, [c[1:] for c in found[:repeat]])
    results["heatmap_cell"] = summary(cells)
    faces = expected.faces(str(shown), sort, cells[-1]["cell"])
    results["timeline"] = summary(open_timelines(driver, [f["name"] for f in faces[:repeat]],
                                                 len(iterations)))
    results["shown"] = {"snapshot": shown, "sort": sort, "cell": cells[-1]["cell"],
                        "face": faces[0]["name"]}
    few = next((c for c in reversed(found) if c[0] >= max(10, repeat)), None)
    if few is not None:  # the same with fewer tiles (and Dash components) on the page
        click_cells(driver, expected, shown, sort, [few[1:]])
        names = [f["name"] for f in expected.faces(str(shown), sort, few[1:])]
        results["timeline_few_tiles"] = {**summary(open_timelines(
            driver, names[:repeat], len(iterations))), "tiles": few[0]}
    return results


def measure(ws: Workspace, bench: BenchWorkspace, repeat: int, profile: Path
            ) -> dict[str, Any]:
    """Serve the dashboard and time every view in Chromium (see the module doc)."""
    from swapd.dashboard.server import DashboardServer

    expected = Expected(ws, bench.job)
    tracker = f"/jobs/{bench.job}/tracker"
    results: dict[str, Any] = {"load_average_before": os.getloadavg()}
    with DashboardServer(Workspace.open(ws.root, create=False), port=0) as server:
        base = server.url.rstrip("/")
        start = cpu_ticks()
        driver = chrome(profile)
        try:
            results["browser"] = f"Chromium {driver.capabilities.get('browserVersion')}"
            first, *opens = open_tracker(driver, base + tracker,
                                         grid_ready(expected.urls("latest", "-loss")), repeat,
                                         ws.cache / "thumbs")
            results["open_first_visit"], results["open"] = first, summary(opens)
            results["opened_page"] = page_totals(driver)
            results["open_cached"] = summary(open_tracker(
                driver, base + tracker, grid_ready(expected.urls("latest", "-loss")), repeat,
                empty_cache=False))
            results["open_from_job_page"] = summary(open_from_job_page(
                driver, base, bench.job, grid_ready(expected.urls("latest", "-loss")), repeat))
            results.update(in_page(driver, expected, bench.iterations, repeat))
            bodies = captured_callbacks(driver)
            for show, kinds in (("output", ("face", "output")), ("none", ("face",))):
                results[f"open_show_{show}"] = summary(open_tracker(
                    driver, f"{base}{tracker}?show={show}",
                    grid_ready(expected.urls("latest", "-loss", kinds=kinds)), repeat))
            results["job_page"] = summary(open_job_page(driver, f"{base}/jobs/{bench.job}",
                                                        repeat))
            results["cpu_while_timing"] = cpu_shares(start, cpu_ticks())
        finally:
            driver.quit()
    results["load_average_after"] = os.getloadavg()
    shown = results["shown"]
    results["server_reads_ms"] = server_side(ws, bench.job, bench.iterations, shown["face"])
    replayed = server_requests(ws, bodies, expected.urls(str(shown["snapshot"]),
                                                         shown["sort"]))
    results["grid_components"] = replayed["grid_components"]
    results["image_headers"] = replayed["headers"]
    results["server_requests_ms"] = replayed["ms"]
    return results


def busy_share(seconds: float = 3.0) -> float:
    """How busy the machine's CPUs were over ``seconds`` (0 idle .. 1 every core busy)."""
    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return round((busy1 - busy0) / max(1, total1 - total0), 2)


def cpu_ticks() -> tuple[int, int, int]:
    """(busy, all) CPU ticks of the machine so far, and the ticks of this process and its
    descendants (the server's threads, chromedriver, Chromium)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
    parents, ticks = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid], ticks[pid] = int(fields[1]), int(fields[11]) + int(fields[12])

    def ours(pid: int) -> bool:
        while pid > 1:
            if pid == os.getpid():
                return True
            pid = parents.get(pid, 0)
        return False

    own = sum(t for pid, t in ticks.items() if ours(pid))
    return sum(values) - values[3] - values[4], sum(values), own


def cpu_shares(before: tuple[int, int, int], after: tuple[int, int, int]) -> dict[str, float]:
    """How busy the CPUs were between two cpu_ticks(): in all, by this benchmark (browser and
    server), by everything else on the machine."""
    total = max(1, after[1] - before[1])
    machine, own = (after[0] - before[0]) / total, (after[2] - before[2]) / total
    return {"machine": round(machine, 2), "this_benchmark": round(own, 2),
            "others": round(max(0.0, machine - own), 2)}


def wait_for_quiet(limit: float, timeout: float = 900.0) -> float:
    """Wait (up to ``timeout`` s) until others' work leaves the CPUs at most ``limit`` busy;
    the share last seen."""
    until = time.monotonic() + timeout
    while (share := busy_share()) > limit and time.monotonic() < until:
        print(f"the machine is {share:.0%} busy; waiting for it to calm down")
        time.sleep(20)
    return share


def machine() -> str:
    """The CPU's model, cores, memory and system."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text(
        ).splitlines() if line.startswith("model name")), platform.processor())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, {platform.system()}"


ROWS = (("open", "opening the tracker (browser cache empty)"),
        ("open_show_output", "  the same, showing face + output (200 images)"),
        ("open_show_none", "  the same, showing the face only (100 images)"),
        ("open_cached", "opening it again (browser cache kept)"),
        ("open_from_job_page", "opening it from the job page's tab (images not cached)"),
        ("snapshot", "choosing another snapshot"), ("sort", "changing the sort"),
        ("heatmap_cell", "clicking a heatmap cell"), ("timeline", "opening a face's timeline"),
        ("timeline_few_tiles", "  the same, a sparse cell's faces in the grid"),
        ("job_page", "opening the job page (loss graph)"))


def print_table(results: dict[str, Any]) -> None:
    """The views' medians and parts, what the opened page fetched, the server alone."""
    print(f"\n{'view':50} {'median':>7} {'max':>7} {'data in':>8} {'shown':>6} "
          f"{'images in':>9} {'img reqs':>8}")
    first = results["open_first_visit"]
    rows = [("opening the tracker, first visit (no thumbnails yet)", first["ms"], None,
             first["view_data_ms"], first["shown_ms"], first["images_end_ms"],
             first["image_requests"])]
    rows += [(label + (f" ({r['tiles']})" if "tiles" in r else ""), r["median_ms"],
              r["max_ms"], r["view_data_ms"], r["shown_ms"], r["images_done_ms"],
              r["image_requests"])
             for key, label in ROWS if key in results for r in (results[key],)]
    for label, *values in rows:
        print(f"{label:50} " + " ".join(
            f"{'' if v is None else round(v):>{w}}" for v, w in zip(values, (7, 7, 8, 6, 9, 8),
                                                                     strict=True)))
    print("(ms from the user's input, medians; data in: the answer of the callback that "
          "brings the view;\n shown: its elements in the page; images in: the last image "
          "received)")
    print("opened tracker:", json.dumps(results["opened_page"]),
          f"\nDash components in a page of the grid: {results['grid_components']}; "
          f"images served as {json.dumps(results['image_headers'])}")
    print("main thread during one more change of snapshot, by script:",
          json.dumps(results["main_thread_profile"]))
    print("CPU while timing (share of all cores):", json.dumps(results["cpu_while_timing"]))
    print("server alone:")
    for name, ms in {**results["server_reads_ms"], **results["server_requests_ms"]}.items():
        print(f"  {name:60} {ms:8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=5000, help="faces per side")
    parser.add_argument("--snapshots", type=int, default=20)
    parser.add_argument("--history", type=int, default=20000, help="iterations of losses")
    parser.add_argument("--repeat", type=int, default=5, help="times each view is timed")
    parser.add_argument("--keep", type=Path, help="build the workspace here once and reuse it")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dashboard.json"))
    parser.add_argument("--quiet", type=float, default=1.0, metavar="SHARE",
                        help="before timing, wait (up to 15 min) until the CPUs are at most "
                        "this busy (0..1; a shared machine), default 1 (do not wait)")
    args = parser.parse_args()
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        sys.exit("needs Debian chromium and chromedriver at /usr/bin")

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp) / "workspace"
        start = time.perf_counter()
        bench = build_workspace(root, args.faces, args.snapshots, args.history)
        print(f"workspace at {root} in {time.perf_counter() - start:.1f} s "
              f"({', '.join(f'{k} {v:.1f} s' for k, v in bench.seconds.items())})")
        ws = Workspace.open(root, create=False)
        busy = wait_for_quiet(args.quiet)
        results = measure(ws, bench, args.repeat, Path(tmp) / "chrome-profile")
        results["cpu_busy_before"] = busy
    results = {"machine": machine(), "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d"), "faces_per_side": args.faces,
               "snapshots": args.snapshots, "loss_history_iterations": args.history,
               "repeat": args.repeat, "build_seconds": {
                   k: round(v, 1) for k, v in bench.seconds.items()}, **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


if __name__ == "__main__":
    main()

"""What an open dashboard costs training: the demo job's EG/s with the snapshot tracker open in
a browser (refreshing at the default interval), against no browser, alternating in one run.

    .venv/bin/python benchmarks/dashboard_cost.py [--window 60] [--pairs 4] \\
        [--out benchmarks/results/dashboard_cost.json]

The service runs as users run it (`swapd run`, the dashboard inside it, its worker training
the demo job with its snapshots and tracker data); after a warm-up, windows of ``--window``
seconds alternate (A B B A ...) between no browser and headless Chromium on
/jobs/demo/tracker. Each window's EG/s is the iterations it trained, times the faces a step
sees, over its length; beside it, the CPU the service (its dashboard included), the browser and
the worker used, from /proc: what the open page burns is measured directly, whatever else the
machine is doing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swapd.demo.workspace import create_demo_workspace  # noqa: E402
from swapd.state import StateStore  # noqa: E402
from swapd.workspace import Workspace  # noqa: E402
from tests.browser import chrome, wait  # noqa: E402

PORT = 8061
CONFIG = f"""\
[service]
poll_seconds = 0.5
[dashboard]
port = {PORT}
"""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def iteration(store: StateStore) -> int:
    row = store.job("demo")
    return row.iteration if row is not None else 0


def cpu_seconds(match: str) -> float:
    """CPU seconds used so far by the processes whose command line holds ``match``."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            if match not in command.decode(errors="replace"):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def window(store: StateStore, seconds: float, batch: int) -> dict[str, float]:
    """Over ``seconds`` of training: EG/s (the iterations the job moved on), and the CPU the
    service (its dashboard included), the browser and the worker used, in cores."""
    watched = {"service": "swapd run", "browser": "chromium", "worker": "train_worker"}
    start_it, start = iteration(store), time.monotonic()
    before = {k: cpu_seconds(v) for k, v in watched.items()}
    time.sleep(seconds)
    elapsed = time.monotonic() - start
    used = {f"{k}_cores": round((cpu_seconds(v) - before[k]) / elapsed, 3)
            for k, v in watched.items()}
    return {"egs": (iteration(store) - start_it) * 2 * batch / elapsed, **used}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--window", type=float, default=60.0, help="seconds per window")
    parser.add_argument("--pairs", type=int, default=4, help="no-browser/browser pairs")
    parser.add_argument("--warmup", type=float, default=90.0)
    parser.add_argument("--out", type=Path,
                        default=REPO / "benchmarks" / "results" / "dashboard_cost.json")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="swapd-cost-"))
    ws = Workspace.open(tmp / "ws")
    create_demo_workspace(ws, iterations=100_000)
    config = tmp / "swapd.toml"
    config.write_text(CONFIG)
    log = (tmp / "service.log").open("wb")
    service = subprocess.Popen([sys.executable, "-m", "swapd", "run", "--workspace",
                                str(ws.root), "--config", str(config)],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    runs: dict[str, list[dict[str, float]]] = {"no browser": [], "tracker open": []}
    try:
        while not ws.state_db.is_file():
            time.sleep(1)
        store = StateStore(ws.state_db, readonly=True)
        while iteration(store) < 10:  # faces indexed, model built
            time.sleep(2)
        time.sleep(args.warmup)
        batch = 16
        for k in range(args.pairs):  # A B B A ...: a drift over the run cancels out
            for state in (("no browser", "tracker open") if k % 2 == 0
                          else ("tracker open", "no browser")):
                if state == "no browser":
                    runs[state].append(window(store, args.window, batch))
                    continue
                driver = chrome(tmp)
                try:
                    driver.get(f"http://127.0.0.1:{PORT}/jobs/demo/tracker")
                    wait(driver, "document.querySelectorAll('#tracker-grid .tile').length > 0"
                         " || !!document.querySelector('#tracker-how')", "the tracker",
                         timeout=60)
                    runs[state].append(window(store, args.window, batch))
                finally:
                    driver.quit()
        snapshots = len({s["iteration"] for s in store.tracker_snapshots("demo")})
        store.close()
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(timeout=60)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    def median(state: str, key: str) -> float:
        return statistics.median(w[key] for w in runs[state])

    off, on = median("no browser", "egs"), median("tracker open", "egs")
    # what the open page itself burns: the browser, and what the service uses beyond its
    # own share without a browser (its dashboard answering the page's refreshes)
    page_cores = (median("tracker open", "browser_cores")
                  + median("tracker open", "service_cores") - median("no browser", "service_cores"))
    result = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "window_seconds": args.window, "pairs": args.pairs, "windows": runs,
        "median_egs_no_browser": round(off, 2), "median_egs_tracker_open": round(on, 2),
        "cost": round(1 - on / off, 4),
        "page_cores": round(page_cores, 3), "page_share_of_cpus": round(
            page_cores / (os.cpu_count() or 1), 4),
        "worker_cores": {s: median(s, "worker_cores") for s in runs},
        "snapshots_during_run": snapshots,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""The service: one process that owns the watcher, the scheduler, the state store and the
dashboard, and starts and supervises the training and merge workers.

The main loop sleeps until something changes (watchdog, a window boundary, a worker exiting, the
poll timer), then reconciles: ingest new faces, (re)read job files, reap workers, start or stop
training to match schedules and priorities, start the next merge, write status files. Which
jobs train, and what a training worker's exit means, is training.py's; the merges, merges.py's.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable

from swapd.config import ServiceConfig
from swapd.daemon import sdnotify
from swapd.daemon.disk import MARGIN, RESERVE_BYTES, Reserve, shortage, size_text
from swapd.daemon.idle_controls import answer_idle_controls
from swapd.daemon.ingest import FaceIngest
from swapd.daemon.jobs import JobRegistry, write_status_files
from swapd.daemon.merge_previews import MergePreviews
from swapd.daemon.merges import MergeQueue
from swapd.daemon.schedule import WindowClock
from swapd.daemon.training import TrainingWorkers
from swapd.daemon.watcher import WorkspaceWatcher
from swapd.daemon.workers import WorkerProcess
from swapd.fsutil import is_disk_full
from swapd.state import StateStore
from swapd.workspace import Workspace

log = logging.getLogger("swapd.service")

RESCAN_SECONDS = 30.0  # full rescan even without watchdog events
PROGRESS_LOG_SECONDS = 30.0  # how often training progress goes to the log
TROUBLE_LOG_SECONDS = 60.0  # the same trouble of the loop is logged again after this long


class Service:
    def __init__(self, workspace: Workspace, config: ServiceConfig) -> None:
        self.ws = workspace
        self.config = config
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.store = StateStore(workspace.state_db)
        self.jobs = JobRegistry(workspace, self.store)
        self.ingest = FaceIngest(workspace, self.store, config.ingest.min_face_size,
                                 config.ingest.settle_seconds, config.ingest.landmark_detector)
        self.watcher = WorkspaceWatcher(workspace, self.wake)
        self.clock = WindowClock(self.wake)
        self.reserve = Reserve(workspace.internal)
        self.merges = MergeQueue(workspace, self.store, self.jobs, config, self._wake_later)
        self.previews = MergePreviews(workspace, self.jobs, config)  # the dashboard's
        self.training = TrainingWorkers(workspace, self.store, self.jobs, self._wake_later)
        self._trouble: tuple[str, float] = ("", 0.0)  # the loop's last error, when logged
        self._dashboard = None
        self.dashboard_url: str | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signal_handlers()
        self._carry_on(self._recover_after_restart)
        self.watcher.start()
        self.clock.start()
        self._start_dashboard()
        sdnotify.notify("READY=1", "STATUS=watching " + str(self.ws.root))
        self._carry_on(lambda: self.store.log_event(f"service started on {self.ws.root}"))
        log.info("watching %s", self.ws.root)
        watchdog_every = sdnotify.watchdog_interval()
        last_rescan = last_status = last_ping = 0.0
        last_progress = time.monotonic()
        try:
            while not self.stopping.is_set():
                self.wake.wait(timeout=self.config.service.poll_seconds)
                self.wake.clear()
                if self.stopping.is_set():
                    break
                now = time.monotonic()
                if now - last_rescan >= RESCAN_SECONDS:
                    self.watcher.mark_all()
                    last_rescan = now
                if watchdog_every and now - last_ping >= watchdog_every:
                    sdnotify.notify("WATCHDOG=1")  # (the loop runs, whatever it meets)
                    last_ping = now
                self._carry_on(self.reconcile)
                if now - last_status >= 2.0:
                    self._carry_on(lambda: write_status_files(self.ws, self.store))
                    self._carry_on(self.reserve.keep)
                    last_status = now
                if now - last_progress >= PROGRESS_LOG_SECONDS:
                    self._carry_on(self._log_progress)
                    last_progress = now
        finally:
            self.shutdown()
        return 0

    def _carry_on(self, work: Callable[[], object]) -> None:
        """Do ``work``; a full disk or a database that cannot be written (the same thing, most
        often) is logged, and the loop tries again on its next turn."""
        try:
            work()
        except (OSError, sqlite3.Error) as exc:
            if is_disk_full(exc):
                short = shortage(self.ws.internal, MARGIN, "the state database",
                                 "the service carries on and tries again")
                text = str(short) if short else f"disk full: {exc}"
                if self.reserve.release():  # the next turn's records fit in its room
                    text += (f"; gave up the {size_text(RESERVE_BYTES)} kept in reserve to "
                             "record why jobs wait")
            else:
                text = f"{type(exc).__name__}: {exc} (the service carries on and tries again)"
            key = "disk full" if is_disk_full(exc) else text  # (the free bytes change)
            last, when = self._trouble
            if key != last or time.monotonic() - when > TROUBLE_LOG_SECONDS:
                log.error("%s", text, exc_info=not is_disk_full(exc))
                self._trouble = (key, time.monotonic())

    def request_stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signals = [signal.SIGTERM, signal.SIGINT]
        if sys.platform == "win32":
            signals.append(signal.SIGBREAK)  # type: ignore[attr-defined]
        for sig in signals:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stopping.is_set():
            log.warning("second stop signal: killing workers now")
            for worker in self._workers():
                worker.process.kill()
            return
        log.info("%s: stopping (workers save first)", signal.Signals(signum).name)
        self.request_stop()

    def _recover_after_restart(self) -> None:
        """Jobs that were training when the service last stopped queue up again; what merges
        cut short left behind goes."""
        self.merges.clear_temp_files()
        self.store.end_merge_progress()  # merges cut short by the stop start again
        for row in self.store.jobs():  # (a paused job stays paused until resumed)
            if row.state in ("training", "interrupted", "waiting"):
                self.store.set_job_state(row.name, "queued")

    def _start_dashboard(self) -> None:
        cfg = self.config.dashboard
        if not cfg.enabled:
            return
        from swapd.dashboard.server import DashboardServer

        try:
            server = DashboardServer(self.ws, host=cfg.host, port=cfg.port,
                                     token=cfg.token or None,
                                     refresh_ms=round(cfg.refresh_seconds * 1000),
                                     trust_anchors=self.config.merge.c2pa_trust_anchors)
            server.start()
        except Exception as exc:  # a busy port must not stop training
            said = f"dashboard not started: {exc}"
            log.error("%s", said)
            self._carry_on(lambda: self.store.log_event(said, level="error"))
            return
        self._dashboard = server
        self.dashboard_url = server.url
        log.info("dashboard at %s", server.url)
        print(f"swapd: dashboard at {server.url}", flush=True)

    def shutdown(self) -> None:
        """Ask every worker to save and stop, wait, kill stragglers, close everything."""
        sdnotify.notify("STOPPING=1", "STATUS=saving and stopping")
        workers = list(self._workers())
        self.previews.stop()
        for worker in workers:
            self._carry_on(lambda w=worker: w.request_stop(self.store))
        deadline = time.monotonic() + self.config.service.stop_timeout
        while any(w.poll() is None for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        for worker in workers:
            if worker.poll() is None:
                log.error("%s worker of %s did not stop in time: killed", worker.kind,
                          worker.job)
                worker.process.kill()
                worker.process.wait()
        for name in self.training.workers:
            self._carry_on(lambda n=name: self._interrupted(n))
        self.training.workers.clear()
        self.merges.worker = None
        self._carry_on(lambda: self.store.log_event("service stopped"))
        self._carry_on(lambda: write_status_files(self.ws, self.store))
        self.clock.stop()
        self.watcher.stop()
        if self._dashboard is not None:
            self._dashboard.stop()
        self.store.close()

    def _interrupted(self, name: str) -> None:
        self.store.close_pending_controls(name, "stop", "the worker has stopped")
        row = self.store.job(name)
        if row is not None and row.state not in ("done", "error", "paused"):
            self.store.set_job_state(name, "interrupted")

    def _log_progress(self) -> None:
        for name in self.training.workers:
            row = self.store.job(name)
            if row is not None:
                target = f"/{row.target}" if row.target else ""
                egs = f", {row.egs:.1f} EG/s" if row.egs else ""
                log.info("%s: %s, iteration %d%s%s", name, row.state, row.iteration, target, egs)
        sdnotify.notify("STATUS=" + ", ".join(f"{n} training" for n in self.training.workers)
                        if self.training.workers else "STATUS=idle")

    def _workers(self) -> list[WorkerProcess]:
        merger = self.merges.worker
        return [*self.training.workers.values(), *([merger] if merger else [])]

    # --- the loop's work ----------------------------------------------------------------------

    def reconcile(self) -> None:
        """One turn of the loop. Each step goes on when another fails (a full disk fails
        the state store's writes): what failed is tried again at a later turn."""
        changes = self.watcher.take_changes()
        self._carry_on(lambda: self._read_changes(changes))
        self.clock.set_windows(
            [w for job in self.jobs.jobs.values() for w in job.spec.schedule.windows])
        self._carry_on(self._reap_workers)
        # requests for jobs without a worker (paused, waiting, stopped, ...) are answered here
        self._carry_on(lambda: answer_idle_controls(self.ws, self.store,
                                                    set(self.training.workers)))
        self._carry_on(lambda: self.previews.start_next(self.store))
        if not self.stopping.is_set():
            self._carry_on(lambda: self.training.schedule(self.config.service.max_workers))
            self._carry_on(self.merges.start_next)
        for worker in self._workers():
            if worker.kill_if_overdue(self.config.service.stop_timeout):
                log.error("%s worker of %s ignored stop: killed", worker.kind, worker.job)

    def _read_changes(self, changes: set[str]) -> None:
        if "faces" in changes:
            if self.ingest.scan().settling:
                self._wake_later(self.config.ingest.settle_seconds)
            changes.add("jobs")  # a face set that appeared may make a job valid
        if "jobs" in changes:
            before = {name: job.spec for name, job in self.jobs.jobs.items()}
            changed, removed = self.jobs.scan(recheck_failed="faces" in changes,
                                              running=frozenset(self.training.workers))
            self.training.jobs_changed(changed, removed, before)

    def _wake_later(self, seconds: float) -> None:
        timer = threading.Timer(seconds + 0.1, self.watcher.mark_all)
        timer.daemon = True
        timer.start()

    def _reap_workers(self) -> None:
        for name, worker in list(self.training.workers.items()):
            code = worker.poll()
            if code is None:
                continue
            del self.training.workers[name]
            self.wake.set()
            self._carry_on(lambda n=name, w=worker, c=code: self.training.exited(n, w, c))
            # a stop asked of it that it did not take (a signal ended it first) is done
            self.store.close_pending_controls(name, "stop", "the worker has stopped")
        if self.merges.reap():
            self.wake.set()

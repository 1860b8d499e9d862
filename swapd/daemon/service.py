"""The service: one process that owns the watcher, the scheduler, the state store and the
dashboard, and starts and supervises the training and merge workers.

The main loop sleeps until something changes (watchdog, a window boundary, a worker exiting, the
poll timer), then reconciles: ingest new faces, (re)read job files, reap workers, start or stop
training to match schedules and priorities, start the next merge, write status files.
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
from swapd.daemon.crashes import Backoff, crash_cause
from swapd.daemon.disk import MARGIN, RESERVE_BYTES, Reserve, shortage, size_text
from swapd.daemon.edits import Restarts
from swapd.daemon.idle_controls import answer_idle_controls
from swapd.daemon.ingest import FaceIngest
from swapd.daemon.jobs import Job, JobRegistry, write_status_files
from swapd.daemon.merge_previews import MergePreviews
from swapd.daemon.merges import MergeQueue
from swapd.daemon.readiness import Hold, Readiness
from swapd.daemon.schedule import WindowClock, in_window
from swapd.daemon.watcher import WorkspaceWatcher
from swapd.daemon.workers import (
    EXIT_BAD_INPUT,
    EXIT_BUSY,
    EXIT_DISK_FULL,
    EXIT_NON_FINITE,
    EXIT_OK,
    WorkerProcess,
    start_worker,
)
from swapd.fsutil import is_disk_full
from swapd.state import JobRow, StateStore
from swapd.workspace import Workspace

log = logging.getLogger("swapd.service")

RESCAN_SECONDS = 30.0  # full rescan even without watchdog events
PROGRESS_LOG_SECONDS = 30.0  # how often training progress goes to the log
BUSY_RETRY_SECONDS = 10.0  # a model folder another process held: look again after this
TROUBLE_LOG_SECONDS = 60.0  # the same trouble of the loop is logged again after this long
# States in which a training job wants a worker.
RUNNABLE = ("queued", "waiting", "training", "paused")


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
        self.readiness = Readiness(workspace, self.store)
        self.reserve = Reserve(workspace.internal)
        self.merges = MergeQueue(workspace, self.store, self.jobs, config, self._wake_later)
        self.previews = MergePreviews(workspace, self.jobs, config)  # the dashboard's
        self.trainers: dict[str, WorkerProcess] = {}
        self._backoff: dict[str, Backoff] = {}
        self._held: dict[str, Hold] = {}  # jobs kept from starting (readiness.py), and why
        self._service_stopped: set[str] = set()  # jobs the service itself asked to stop
        self.restarts = Restarts()  # workers stopped to take an edit of their job file
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
                                     refresh_ms=round(cfg.refresh_seconds * 1000))
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
        for name in self.trainers:
            self._carry_on(lambda n=name: self._interrupted(n))
        self.trainers.clear()
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
        for name in self.trainers:
            row = self.store.job(name)
            if row is not None:
                target = f"/{row.target}" if row.target else ""
                egs = f", {row.egs:.1f} EG/s" if row.egs else ""
                log.info("%s: %s, iteration %d%s%s", name, row.state, row.iteration, target, egs)
        sdnotify.notify("STATUS=" + ", ".join(f"{n} training" for n in self.trainers)
                        if self.trainers else "STATUS=idle")

    def _workers(self) -> list[WorkerProcess]:
        merger = self.merges.worker
        return [*self.trainers.values(), *([merger] if merger else [])]

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
        self._carry_on(lambda: answer_idle_controls(self.ws, self.store, set(self.trainers)))
        self._carry_on(lambda: self.previews.start_next(self.store))
        self._carry_on(self._schedule_training)
        if not self.stopping.is_set():
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
                                              running=frozenset(self.trainers))
            for name in changed:
                self._backoff.pop(name, None)  # a new version may cure its crashes: try it
                if name in self.trainers and name in before:  # (edits.py)
                    self.restarts.edited(self.store, self.ws, self.jobs.jobs[name],
                                         before[name], self.trainers[name])
            for name in removed:
                if name in self.trainers:
                    self.trainers[name].request_stop(self.store)

    def _wake_later(self, seconds: float) -> None:
        timer = threading.Timer(seconds + 0.1, self.watcher.mark_all)
        timer.daemon = True
        timer.start()

    def _reap_workers(self) -> None:
        for name, worker in list(self.trainers.items()):
            code = worker.poll()
            if code is None:
                continue
            del self.trainers[name]
            self.wake.set()
            self._carry_on(lambda n=name, w=worker, c=code: self._after_training_exit(n, w, c))
            # a stop asked of it that it did not take (a signal ended it first) is done
            self.store.close_pending_controls(name, "stop", "the worker has stopped")
        if self.merges.reap():
            self.wake.set()

    def _after_training_exit(self, name: str, worker: WorkerProcess, code: int) -> None:
        """What a training worker's exit means. Outcomes the worker recorded itself (done,
        stopped, a job that cannot train) end here; a full disk, or a folder another process
        holds, waits (readiness.py); anything else is a crash, retried after a back-off."""
        row = self.store.job(name)
        if self.restarts.exited(self.store, name, code, row):  # to start with an edit
            self._service_stopped.discard(name)
            return
        if name in self._service_stopped:
            self._service_stopped.discard(name)
            if row is not None and row.state not in ("done", "error"):
                self.store.set_job_state(name, "waiting")
            return
        if code in (EXIT_OK, EXIT_BAD_INPUT, EXIT_NON_FINITE):
            self._backoff.pop(name, None)
            return
        if code == EXIT_BUSY:  # (the worker said who holds the folder)
            self._backoff.setdefault(name, Backoff()).not_before = (
                time.monotonic() + BUSY_RETRY_SECONDS)
            self._wake_later(BUSY_RETRY_SECONDS)
            return
        full = self._disk_hold(name, row) if row is not None else None
        if full is not None or code == EXIT_DISK_FULL:  # not a crash: it waits for space
            if full is not None and row is not None:
                self._hold(name, row, full)
            return
        cause = crash_cause(code, worker.log_tail())
        backoff = self._backoff.setdefault(name, Backoff())
        delay = backoff.crashed(time.monotonic() - worker.started)
        message = (f"training worker of {name} crashed ({cause}); log: "
                   f"{self.ws.relative(worker.log_path)}")
        log.error("%s\n%s", message, worker.log_tail())
        self.store.report_problem(self.ws.relative(worker.log_path), "worker", message)
        self.store.set_job_state(name, "queued", f"restarting in {delay:.0f} s after crash "
                                 f"{backoff.count} in a row ({cause})")
        self.store.log_event(f"worker crashed ({cause}); restarting in {delay:.0f} s", name,
                             level="error")
        self._wake_later(delay)

    # --- training -----------------------------------------------------------------------------

    def _schedule_training(self) -> None:
        if self.stopping.is_set():
            return
        train_jobs = [job for job in self.jobs.jobs.values() if job.spec.train is not None]
        # Running jobs first, then by priority: the first job on a model folder owns it.
        train_jobs.sort(key=lambda j: (j.name not in self.trainers,
                                       -j.spec.schedule.priority, j.name))
        owners = self.readiness.owners([j.name for j in train_jobs])
        wanted: list[Job] = []
        for job in train_jobs:
            row = self.store.job(job.name)
            if row is None or not (row.state in RUNNABLE or (
                    row.state == "error" and job.name in self._held)):
                continue
            if row.state == "paused" and job.name not in self.trainers:
                continue  # paused while it had no worker: it waits for a resume
            if not in_window(job.spec.schedule.windows):
                if job.name not in self.trainers and (row.state != "waiting" or row.error):
                    self._held.pop(job.name, None)
                    self.store.set_job_state(job.name, "waiting")
                continue
            if job.name not in self.trainers:
                if job.name in self._backoff and self._backoff[job.name].waiting():
                    continue
                held = self._readiness(job, row, owners.get(job.name))
                if held is not None:
                    self._hold(job.name, row, held)
                    continue
                if (was := self._held.pop(job.name, None)) is not None:
                    self.store.log_event(f"may train again (it waited: "
                                         f"{was.reason.split(': ')[0]})", job.name)
            wanted.append(job)
        chosen = {j.name for j in wanted[: self.config.service.max_workers]}
        for name, worker in self.trainers.items():
            row = self.store.job(name)
            if row is not None and row.state not in RUNNABLE:
                continue  # finishing by itself (done, stopped by the user): let it exit
            if name not in chosen and worker.stop_requested is None:
                log.info("pausing %s (outside its window or outranked)", name)
                self._service_stopped.add(name)
                worker.request_stop(self.store)
        running = sum(1 for w in self.trainers.values() if w.stop_requested is None)
        for job in wanted:
            if job.name in self.trainers or job.name not in chosen:
                continue
            if running >= self.config.service.max_workers:
                break
            self._start_training(job)
            running += 1

    def _readiness(self, job: Job, row: JobRow, owner: str | None) -> Hold | None:
        return (self.readiness.hold(job.name, job.spec, owner)
                or self._disk_hold(job.name, row))

    def _disk_hold(self, name: str, row: JobRow) -> Hold | None:
        checkpoint = self.store.latest_artifact(name, "checkpoint")
        return self.readiness.disk_hold(name, checkpoint.iteration if checkpoint else None,
                                        (row.info or {}).get("parameters"))

    def _hold(self, name: str, row: JobRow, held: Hold) -> None:
        """Keep a job from starting, saying why in its state and (once for each kind of
        reason) the events. A full disk is said once: the free space its words name changes
        all the time, and the worker's own words name the checkpoint it kept."""
        error = row.error or ""
        said = row.state == held.state and (error == held.reason or (
            held.kind == "disk" and error.startswith("disk full on ")))
        if not said:
            self.store.set_job_state(name, held.state, held.reason)
        before = self._held.get(name)
        if before is None or before.kind != held.kind:
            log.warning("%s: %s", name, held.reason)
            self.store.log_event(held.reason, name, level="warning")
        self._held[name] = held

    def _start_training(self, job: Job) -> None:
        self.store.set_job_state(job.name, "training")
        log_path = self.ws.logs / f"{job.name}.train.log"
        self.trainers[job.name] = start_worker(
            "train_worker", ["--workspace", str(self.ws.root), "--job", job.name],
            job.name, "train", log_path)
        log.info("training %s (worker pid %d)", job.name, self.trainers[job.name].pid)

"""The service's training workers: which training jobs get a worker (their windows, priority,
readiness, back-off, ``max_workers``), starting them, stopping those outranked or outside their
window, and what each worker's exit means.

A job kept from starting (no usable faces, a model folder in use, no room: readiness.py) waits
with its reason in its state; a crash is retried after a back-off (crashes.py); a worker
stopped to take an edit of its job file starts again with it (edits.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from swapd import threads
from swapd.config import JobFile
from swapd.daemon.crashes import Backoff, crash_cause
from swapd.daemon.edits import Restarts
from swapd.daemon.jobs import Job, JobRegistry
from swapd.daemon.readiness import Hold, Readiness
from swapd.daemon.schedule import in_window
from swapd.daemon.workers import (
    EXIT_BAD_INPUT,
    EXIT_BUSY,
    EXIT_DISK_FULL,
    EXIT_NON_FINITE,
    EXIT_OK,
    WorkerProcess,
    start_worker,
)
from swapd.state import JobRow, StateStore
from swapd.workspace import Workspace

log = logging.getLogger("swapd.service")

BUSY_RETRY_SECONDS = 10.0  # a model folder another process held: look again after this
# States in which a training job wants a worker.
RUNNABLE = ("queued", "waiting", "training", "paused")


class TrainingWorkers:
    """The training workers the service runs, by job, and what keeps other jobs from one."""

    def __init__(self, ws: Workspace, store: StateStore, jobs: JobRegistry,
                 wake_later: Callable[[float], None]) -> None:
        self.ws, self.store, self.jobs = ws, store, jobs
        self.wake_later = wake_later
        self.readiness = Readiness(ws, store)
        self.workers: dict[str, WorkerProcess] = {}  # job name -> its training worker
        self.backoff: dict[str, Backoff] = {}
        self._held: dict[str, Hold] = {}  # jobs kept from starting (readiness.py), and why
        self._service_stopped: set[str] = set()  # jobs the service itself asked to stop
        self.restarts = Restarts()  # workers stopped to take an edit of their job file

    def jobs_changed(self, changed: set[str], removed: set[str],
                     before: dict[str, JobFile]) -> None:
        """Job files that changed (``before``: their specs before) or went: a changed job's
        crashes are forgotten and its worker takes the edit (edits.py); a removed job's
        worker stops."""
        for name in changed:
            self.backoff.pop(name, None)  # a new version may cure its crashes: try it
            if name in self.workers and name in before:  # (edits.py)
                self.restarts.edited(self.store, self.ws, self.jobs.jobs[name],
                                     before[name], self.workers[name])
        for name in removed:
            if name in self.workers:
                self.workers[name].request_stop(self.store)

    def exited(self, name: str, worker: WorkerProcess, code: int) -> None:
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
            self.backoff.pop(name, None)
            return
        if code == EXIT_BUSY:  # (the worker said who holds the folder)
            self.backoff.setdefault(name, Backoff()).not_before = (
                time.monotonic() + BUSY_RETRY_SECONDS)
            self.wake_later(BUSY_RETRY_SECONDS)
            return
        full = self._disk_hold(name, row) if row is not None else None
        if full is not None or code == EXIT_DISK_FULL:  # not a crash: it waits for space
            if full is not None and row is not None:
                self._hold(name, row, full)
            return
        cause = crash_cause(code, worker.log_tail())
        backoff = self.backoff.setdefault(name, Backoff())
        delay = backoff.crashed(time.monotonic() - worker.started)
        message = (f"training worker of {name} crashed ({cause}); log: "
                   f"{self.ws.relative(worker.log_path)}")
        log.error("%s\n%s", message, worker.log_tail())
        self.store.report_problem(self.ws.relative(worker.log_path), "worker", message)
        self.store.set_job_state(name, "queued", f"restarting in {delay:.0f} s after crash "
                                 f"{backoff.count} in a row ({cause})")
        self.store.log_event(f"worker crashed ({cause}); restarting in {delay:.0f} s", name,
                             level="error")
        self.wake_later(delay)

    def schedule(self, max_workers: int) -> None:
        """Start, and stop, training workers to match the jobs' windows and priorities: at
        most ``max_workers``."""
        train_jobs = [job for job in self.jobs.jobs.values() if job.spec.train is not None]
        # Running jobs first, then by priority: the first job on a model folder owns it.
        train_jobs.sort(key=lambda j: (j.name not in self.workers,
                                       -j.spec.schedule.priority, j.name))
        owners = self.readiness.owners([j.name for j in train_jobs])
        wanted: list[Job] = []
        for job in train_jobs:
            row = self.store.job(job.name)
            if row is None or not (row.state in RUNNABLE or (
                    row.state == "error" and job.name in self._held)):
                continue
            if row.state == "paused" and job.name not in self.workers:
                continue  # paused while it had no worker: it waits for a resume
            if not in_window(job.spec.schedule.windows):
                if job.name not in self.workers and (row.state != "waiting" or row.error):
                    self._held.pop(job.name, None)
                    self.store.set_job_state(job.name, "waiting")
                continue
            if job.name not in self.workers:
                if job.name in self.backoff and self.backoff[job.name].waiting():
                    continue
                held = self._readiness(job, row, owners.get(job.name))
                if held is not None:
                    self._hold(job.name, row, held)
                    continue
                if (was := self._held.pop(job.name, None)) is not None:
                    self.store.log_event(f"may train again (it waited: "
                                         f"{was.reason.split(': ')[0]})", job.name)
            wanted.append(job)
        chosen = {j.name for j in wanted[:max_workers]}
        for name, worker in self.workers.items():
            row = self.store.job(name)
            if row is not None and row.state not in RUNNABLE:
                continue  # finishing by itself (done, stopped by the user): let it exit
            if name not in chosen and worker.stop_requested is None:
                log.info("pausing %s (outside its window or outranked)", name)
                self._service_stopped.add(name)
                worker.request_stop(self.store)
        running = sum(1 for w in self.workers.values() if w.stop_requested is None)
        for job in wanted:
            if job.name in self.workers or job.name not in chosen:
                continue
            if running >= max_workers:
                break
            self._start(job, max_workers)
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

    def _start(self, job: Job, max_workers: int) -> None:
        self.store.set_job_state(job.name, "training")
        log_path = self.ws.logs / f"{job.name}.train.log"
        # up to max_workers run side by side: each takes its share of the cores and of the
        # memory its face cache may take by default
        self.workers[job.name] = start_worker(
            "train_worker", ["--workspace", str(self.ws.root), "--job", job.name],
            job.name, "train", log_path,
            env_extra={threads.PROCESSES_ENV: str(max_workers)})
        log.info("training %s (worker pid %d)", job.name, self.workers[job.name].pid)

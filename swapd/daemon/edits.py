"""A job file edited while its job trains: what the edit changes, and how it reaches the worker.

Three kinds of change, by where they take effect:

- **live**: the iteration target, the save and snapshot cadence, exports, the learning rate and
  its schedule, the focus weight. The worker takes them between two steps (a "retune" request
  in the control queue, answered like any other), so a target lowered below the current
  iteration ends the job at once, saved and "done".
- **the service's own**: ``[schedule]`` (windows, priority) and ``[merge]``: the service reads
  them from the job it holds at every turn, so there is nothing to tell the worker.
- **everything else** (the model, its options, the face sets, the batch size, ...): the worker
  saves and stops, and a new one starts with the new file; a paused job stays paused and takes
  the new file when resumed.

An edit that does not validate never reaches here: the registry keeps the running version and
reports the file's error (jobs.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from swapd.config import JobFile
from swapd.daemon.jobs import Job
from swapd.daemon.workers import EXIT_OK, WorkerProcess
from swapd.state import JobRow, StateStore
from swapd.workspace import Workspace

# [train] keys the training driver's cadence holds (trainer/driver.py Cadence): changed live.
LIVE_TRAIN_KEYS = ("iterations", "save_every", "snapshot_every", "snapshot_policy",
                   "snapshot_keep", "tracker", "tracker_faces")
# [train.options] keys the trainer reads at every step (the learning rate and its schedule,
# the focus weight): changed live. Any other option is built into the model, its loss or its
# optimizer when the worker starts, so it needs a new worker.
LIVE_OPTIONS = ("learning_rate", "warmup", "lr_schedule", "lr_decay_iterations", "lr_floor",
                "focus_weight")
SERVICE_SECTIONS = ("schedule", "merge")


@dataclass(frozen=True)
class Edit:
    """What changed between two valid versions of a job file."""

    cadence: dict[str, Any] = field(default_factory=dict)  # Cadence fields -> new values
    options: dict[str, Any] = field(default_factory=dict)  # live options -> new values
    restart: tuple[str, ...] = ()  # the keys that need a new worker
    service: tuple[str, ...] = ()  # the service's own sections that changed

    @property
    def live(self) -> bool:
        return bool(self.cadence or self.options)

    def request(self) -> dict[str, Any]:
        """The "retune" request's arguments (see Driver.retune)."""
        return {"cadence": self.cadence, "options": self.options}

    def describe(self) -> str:
        """The changed keys, for the event log."""
        keys = [*self.cadence, *self.options, *self.restart, *self.service]
        return ", ".join(dict.fromkeys(keys)) or "nothing"


def job_edit(old: JobFile, new: JobFile) -> Edit:
    """Compare the running version ``old`` with ``new``."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    service = tuple(s for s in SERVICE_SECTIONS if before.get(s) != after.get(s))
    restart: list[str] = []
    cadence: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if before.get("kind") != after.get("kind"):
        restart.append("kind")
    if before.get("export") != after.get("export"):
        cadence["export_on"] = sorted((after.get("export") or {}).get("on", []))
    train_old, train_new = before.get("train"), after.get("train")
    if (train_old is None) != (train_new is None):
        restart.append("train")
    elif train_old is not None and train_new is not None:
        for key in sorted(set(train_old) | set(train_new)):
            if key == "options" or train_old.get(key) == train_new.get(key):
                continue
            if key in LIVE_TRAIN_KEYS:
                cadence[key] = train_new[key]
            else:
                restart.append(f"train.{key}")
        opts_old, opts_new = train_old.get("options", {}), train_new.get("options", {})
        for key in sorted(set(opts_old) | set(opts_new)):
            if opts_old.get(key) == opts_new.get(key):
                continue
            if key in LIVE_OPTIONS:
                options[key] = opts_new.get(key)  # None: back to the option's default
            else:
                restart.append(f"train.options.{key}")
    return Edit(cadence, options, tuple(restart), service)


def apply_edit(store: StateStore, shown: str, name: str, edit: Edit, worker: WorkerProcess
               ) -> bool:
    """Bring the edit ``edit`` of job ``name`` (its file shown as ``shown``) to its running
    ``worker``: live changes as a "retune" request, others by asking the worker to save and
    stop. True when the worker was asked to stop (the caller starts it again)."""
    if edit.restart:
        store.log_event(f"{shown} changed ({edit.describe()}): the worker saves and starts "
                        "again with it", name)
        if worker.stop_requested is None:  # (a worker stopping already reads it at its start)
            worker.request_stop(store)
            return True
        return False
    if edit.live:
        store.request_control(name, "retune", edit.request())
        store.log_event(f"{shown} changed ({edit.describe()}): applied from the next step",
                        name)
    elif edit.service:
        store.log_event(f"{shown} changed ({edit.describe()}): the service applies it", name)
    return False


class Restarts:
    """The service's side of edits: the workers it asked to stop to take one, and the state
    each job had then (a paused job stays paused)."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}

    def edited(self, store: StateStore, ws: Workspace, job: Job, running: JobFile,
               worker: WorkerProcess) -> None:
        """``job``'s file changed (and validates) while ``worker`` trains ``running``."""
        row = store.job(job.name)
        if apply_edit(store, ws.relative(job.path), job.name, job_edit(running, job.spec),
                      worker):
            self.states[job.name] = row.state if row is not None else "training"

    def exited(self, store: StateStore, name: str, code: int, row: JobRow | None) -> bool:
        """True when the worker of ``name`` that exited (``code``) was stopped for an edit and
        did so cleanly: the job is queued for a new worker (or stays paused, to take the new
        version when resumed). A crash instead is the caller's to handle."""
        was = self.states.pop(name, None)
        if was is None or code != EXIT_OK:
            return False
        if row is not None and row.state not in ("done", "error"):
            store.set_job_state(name, "paused" if was == "paused" else "queued")
        return True

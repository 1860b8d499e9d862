"""Control requests for a training job that has no worker running: the service answers them.

A running worker takes its job's requests between iterations. When none runs (the job is
queued, waiting for its window, stopped, done or in error), the service does what can be done
without one: pause keeps the job from starting, resume and stop change whether it will, a
restore brings back the backup or a snapshot (in a child process: restoring loads checkpoints,
and the service itself never loads torch), and each request gets a result in words that the
dashboard shows beside it.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading

from swapd.state import ControlRequest, StateStore
from swapd.workspace import Workspace

log = logging.getLogger("swapd.service")

RESTORE_TIMEOUT = 600.0
_RESTORED = re.compile(r"at iteration (\d+)")


def answer_idle_controls(ws: Workspace, store: StateStore, busy: set[str]) -> None:
    """Take and answer the pending requests of every training job not in ``busy`` (those
    with a worker, which take their own)."""
    for row in store.jobs():
        if row.kind != "train" or row.name in busy:
            continue
        for request in store.take_control_requests(row.name):
            state = (store.job(row.name) or row).state
            result = _answer(ws, store, request, state)
            if result is not None:
                store.finish_control(request.id, result)


# What pause, resume and stop do to a job without a worker: the states they apply in, the
# state they leave, and what the event log and the request's answer say.
_STATE_CHANGES = {
    "pause": (("queued", "waiting", "interrupted"), "paused",
              "paused: it will not train until resumed",
              "paused (it was not training): it will not start until resumed"),
    "resume": (("paused", "stopped", "interrupted"), "queued", "resumed: queued to train",
               "queued to train"),
    "stop": (("queued", "waiting", "paused", "interrupted"), "stopped",
             "stopped before it trained again", "stopped: it will not train until resumed"),
}


def _answer(ws: Workspace, store: StateStore, request: ControlRequest, state: str
            ) -> str | None:
    job, action = request.job, request.action
    if action in _STATE_CHANGES:
        applies, becomes, event, result = _STATE_CHANGES[action]
        if state not in applies:
            return f"nothing to {action}: the job is {state}"
        store.set_job_state(job, becomes)
        store.log_event(event, job)
        return result
    if action == "restore":
        _restore_in_background(ws, request)
        return None  # the background restore records its own result
    if action == "focus":
        return "kept: the trainer draws these faces more often whenever it trains"
    return f"not training now ({state}): nothing new to {action}"


def _restore_in_background(ws: Workspace, request: ControlRequest) -> None:
    snapshot = request.args.get("snapshot")
    command = [sys.executable, "-m", "swapd", "model", "restore", str(ws.model_dir(request.job))]
    if snapshot is not None:
        command += ["--snapshot", str(int(snapshot))]

    def run() -> None:
        store = StateStore(ws.state_db)
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=RESTORE_TIMEOUT, check=False)
            output = (done.stdout or done.stderr).strip().splitlines()
            line = output[-1] if output else f"exit status {done.returncode}"
            found = _RESTORED.search(line)
            if done.returncode == 0 and found:
                source = f"snapshot {snapshot}" if snapshot is not None else "backup"
                restored_to(store, request.job, int(found.group(1)), source, line)
            store.finish_control(request.id, line if done.returncode == 0
                                 else f"not restored: {line}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            store.finish_control(request.id, f"not restored: {exc}")
        finally:
            store.close()

    threading.Thread(target=run, name=f"swapd-restore-{request.job}", daemon=True).start()


def restored_to(store: StateStore, job: str, iteration: int, source: str, message: str
                ) -> None:
    """The state store's side of a restore (of ``source``: "backup" or "snapshot N"): the
    history past it is gone, the graph marks it, the event log says it in ``message``."""
    store.truncate_losses(job, iteration)
    # snapshots past it were set aside with the timeline they belonged to
    store.forget_tracked_faces(job, [s["iteration"] for s in store.tracker_snapshots(job)
                                     if s["iteration"] > iteration])
    store.set_job_progress(job, iteration)
    store.add_mark(job, iteration, "restore", {"what": source})
    store.log_event(message, job)
    log.info("%s: %s", job, message)


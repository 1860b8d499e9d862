"""Actions the dashboard asks of a job: checked here, then queued in the state store's control
queue for the job's worker (or, when none runs, the service) to take.

The dashboard never acts on a model itself and never writes a user's file: a restore, a pause
or a new focus selection is a row in the queue; the page shows when it was taken and what came
of it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from swapd.dashboard import reads
from swapd.dashboard.merge_previews import PreviewRefused, preview_args
from swapd.state import StateStore
from swapd.workspace import Workspace

ACTIONS = ("pause", "resume", "save", "snapshot", "export", "stop", "restore", "focus",
           "preview")  # preview: a merge preview of a job's footage, rendered by the service
MAX_FOCUS = 10_000  # faces in one focus request


class ControlError(ValueError):
    """A control request that cannot be queued; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def request(workspace: Workspace, job: str, body: dict[str, Any]) -> int:
    """Check and queue ``body`` ({"action": ..., ...}) for ``job``; returns the request's id."""
    action = body.get("action")
    if action not in ACTIONS:
        raise ControlError(f"action must be one of {', '.join(ACTIONS)}")
    if not workspace.state_db.is_file():
        raise ControlError("waiting for the service: no state database yet", 503)
    try:
        store = StateStore(workspace.state_db)
    except sqlite3.Error as exc:
        raise ControlError(f"the state database cannot be written: {exc}", 503) from None
    try:
        row = store.job(job)
        if row is None:
            raise ControlError(f"no job {job!r}", 404)
        if action == "preview":
            try:
                return store.request_control(job, action, preview_args(workspace, row, body))
            except PreviewRefused as exc:
                raise ControlError(str(exc)) from None
        if row.kind != "train":
            raise ControlError(f"{job} is a merge job: it has no training to control", 409)
        if action == "restore":
            args = _restore_args(workspace, job, body)
        elif action == "focus":
            args = _focus_args(body)
            store.set_focus(job, args["side"], body["faces"], args["focus"])
        else:
            args = {}
        return store.request_control(job, action, args)
    finally:
        store.close()


def _restore_args(workspace: Workspace, job: str, body: dict[str, Any]) -> dict[str, Any]:
    targets = reads.restore_targets(workspace, job)
    snapshot = body.get("snapshot")
    if snapshot is None:
        if targets["backup"] is None:
            raise ControlError(f"{job} has no backup yet (one is kept once a save reaches the "
                               "lowest average loss so far)", 409)
        return {"backup": True}
    if isinstance(snapshot, bool) or not isinstance(snapshot, int):
        raise ControlError("snapshot must be a snapshot's iteration (a whole number)")
    if snapshot not in {s["iteration"] for s in targets["snapshots"]}:
        have = ", ".join(str(s["iteration"]) for s in targets["snapshots"]) or "none"
        raise ControlError(f"{job} has no snapshot at iteration {snapshot} (have: {have})", 404)
    return {"snapshot": snapshot}


def _focus_args(body: dict[str, Any]) -> dict[str, Any]:
    side, faces, focused = body.get("side"), body.get("faces"), body.get("focus", True)
    if side not in ("a", "b"):
        raise ControlError("side must be a or b")
    if (not isinstance(faces, list) or not faces or len(faces) > MAX_FOCUS
            or not all(isinstance(f, str) and f and "/" not in f for f in faces)):
        raise ControlError(f"faces must be a list of 1 to {MAX_FOCUS} face file names")
    if not isinstance(focused, bool):
        raise ControlError("focus must be true (mark) or false (unmark)")
    return {"side": side, "faces": len(faces), "focus": focused}


def describe_restore(workspace: Workspace, job: str, iteration_now: int,
                     snapshot: int | None) -> str:
    """What a restore will do, in words, for the confirmation a user answers first."""
    targets = reads.restore_targets(workspace, job)
    model_dir = targets["model_dir"]
    if snapshot is None:
        backup = targets["backup"] or {}
        back_to = backup.get("iteration")
        loss = backup.get("average_loss")
        what = f"the backup from iteration {back_to}" + (
            f" (average loss {loss:.4f})" if isinstance(loss, float) else "")
    else:
        back_to, what = snapshot, f"the snapshot at iteration {snapshot}"
    return (f"Restore replaces {model_dir}/model.pt (about iteration {iteration_now:,}) with "
            f"{what}. The checkpoint it replaces is kept in {model_dir}/replaced/, and "
            f"snapshots after iteration {back_to} move to {model_dir}/snapshots/abandoned-<time>/"
            f"; nothing is deleted. Training then goes on from iteration {back_to}.")

"""What the dashboard's pages and its JSON API read, as plain data (JSON-ready dicts).

Everything here reads: the state store (through its own read-only connection, so it never
holds a lock a worker waits on) and the workspace's files. A dashboard that starts before the
service made the database reads None ("waiting for the service").
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from swapd.config import in_window, next_window_change
from swapd.dashboard.files import file_url
from swapd.dashboard.loss_history import LossCache, LossSeries
from swapd.state import Artifact, JobRow, Session, StateStore
from swapd.workspace import Workspace

JOB_FILE_LIMIT = 64 * 1024  # bytes of a job file shown
RATE_WINDOW_SECONDS = 300.0  # the iteration rate behind an ETA: the newest 5 minutes of steps
LOSSES = LossCache()
T = TypeVar("T")


def with_store(workspace: Workspace, read: Callable[[StateStore], T]) -> T | None:
    """``read(store)`` on a read-only connection of its own; None while there is no usable
    database yet (before the service made it, or while it makes its tables)."""
    if not workspace.state_db.is_file():
        return None
    try:
        store = StateStore(workspace.state_db, readonly=True)
    except sqlite3.Error:
        return None
    try:
        return read(store)
    except sqlite3.OperationalError:
        return None
    finally:
        store.close()


# --- jobs -------------------------------------------------------------------------------------


def schedule_state(row: JobRow, now: datetime | None = None) -> dict[str, Any]:
    """Where a job stands with its training windows, in words and as data."""
    windows = list(((row.config or {}).get("schedule") or {}).get("windows") or [])
    now = now or datetime.now()
    change = next_window_change(windows, now)
    if row.state == "paused":
        state, text = "paused", "paused (resume to train)"
    elif not windows:
        state, text = "always", "trains at any time"
    elif in_window(windows, now):
        state = "in_window"
        text = "in its window" + (f" until {change:%H:%M}" if change else "")
    else:
        state = "waiting"
        text = "waiting for its window" + (f" at {change:%H:%M}" if change else "")
    return {"windows": windows, "state": state, "text": text,
            "next_change": change.timestamp() if change else None}


def iteration_rate(series: LossSeries) -> float | None:
    """Iterations per second over the newest steps of the run under way (the rows since the
    last gap of more than a minute, at most the last five minutes)."""
    if len(series) < 2:
        return None
    times = series.time
    gaps = np.flatnonzero(np.diff(times) > 60.0)
    start = int(gaps[-1]) + 1 if len(gaps) else 0
    start = max(start, int(np.searchsorted(times, times[-1] - RATE_WINDOW_SECONDS)))
    seconds = times[-1] - times[start]
    steps = int(series.iteration[-1] - series.iteration[start])
    return steps / seconds if seconds > 0 and steps > 0 else None


def job_summary(store: StateStore, row: JobRow, now: float | None = None) -> dict[str, Any]:
    """A job as the overview and ``GET /api/v1/jobs`` show it."""
    now = now or time.time()
    rate = eta = None
    if row.kind == "train" and row.state == "training":
        series = LOSSES.get(store, row.name)
        rate = iteration_rate(series)
        # only while the history is fresh: a worker that stalled has no ETA
        if rate and row.target > row.iteration and len(series) and now - series.time[-1] < 120:
            eta = (row.target - row.iteration) / rate
    return {
        "name": row.name, "kind": row.kind, "state": row.state, "model": row.model,
        "iteration": row.iteration, "target": row.target, "egs": row.egs, "error": row.error,
        "iterations_per_second": rate, "eta_seconds": eta, "schedule": schedule_state(row),
        "updated_at": row.updated_at, "file": f"jobs/{Path(row.path).name}",
    }


def jobs(store: StateStore) -> list[dict[str, Any]]:
    return [job_summary(store, row) for row in store.jobs()]


def job_file_text(workspace: Workspace, row: JobRow) -> str | None:
    """The job file as the user wrote it (its first 64 KB), None when it is gone."""
    path = workspace.jobs / Path(row.path).name
    try:
        with path.open("rb") as handle:
            data = handle.read(JOB_FILE_LIMIT + 1)
    except OSError:
        return None
    text = data[:JOB_FILE_LIMIT].decode("utf-8", errors="replace")
    return text + ("\n# ... (cut: the file is longer)" if len(data) > JOB_FILE_LIMIT else "")


def restore_targets(workspace: Workspace, job: str) -> dict[str, Any]:
    """What a restore can bring back: the backup and each snapshot (read from their JSON
    files, so the dashboard never loads a checkpoint)."""
    model_dir = workspace.model_dir(job)
    backup = None
    info = _read_json(model_dir / "backup" / "backup.json")
    if info is not None and (model_dir / "backup" / "model.pt").is_file():
        backup = {"iteration": info.get("iteration"), "average_loss": info.get("average_loss"),
                  "time": info.get("time")}
    snapshots = []
    folder = model_dir / "snapshots"
    if folder.is_dir():
        for item in sorted(folder.iterdir()):
            info = _read_json(item / "snapshot.json")
            if info is not None and (item / "model.pt").is_file():
                snapshots.append({"iteration": info.get("iteration"),
                                  "average_loss": info.get("average_loss"),
                                  "time": info.get("time")})
    return {"backup": backup, "snapshots": snapshots,
            "checkpoint": (model_dir / "model.pt").is_file(),
            "model_dir": workspace.relative(model_dir)}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def job_detail(workspace: Workspace, store: StateStore, name: str) -> dict[str, Any] | None:
    """Everything the job page shows beside its graph: the job, its file and its problems,
    the model's options and size, what a restore can bring back, the latest controls."""
    row = store.job(name)
    if row is None:
        return None
    shown = f"jobs/{Path(row.path).name}"
    problems = [p for p in store.problems() if p.source in (shown, row.path)]
    return {
        **job_summary(store, row), "config": row.config, "info": row.info,
        "file_text": job_file_text(workspace, row),
        "problems": [{"key": p.key, "message": p.message, "time": p.time} for p in problems],
        "restore": restore_targets(workspace, name),
        "controls": [control_dict(c) for c in store.control_requests(name, limit=10)],
    }


def control_dict(request: Any) -> dict[str, Any]:
    return {"id": request.id, "action": request.action, "args": request.args,
            "requested_at": request.created_at, "taken_at": request.taken_at,
            "done_at": request.done_at, "result": request.result}


def session_dict(session: Session) -> dict[str, Any]:
    return {"start": session.start, "end": session.end, "elapsed": session.elapsed,
            "start_iteration": session.start_iteration,
            "end_iteration": session.end_iteration, "steps": session.steps,
            "batch_size": session.batch_size, "egs": session.egs}


# --- artifacts --------------------------------------------------------------------------------


def artifact_dict(workspace: Workspace, artifact: Artifact) -> dict[str, Any]:
    path = workspace.resolve(artifact.path)
    try:
        size: int | None = path.stat().st_size
    except OSError:
        size = None
    return {"job": artifact.job, "kind": artifact.kind, "path": workspace.relative(path),
            "url": file_url(workspace, path), "iteration": artifact.iteration,
            "time": artifact.time, "size": size, "info": artifact.info or {}}


def newest_exports(workspace: Workspace, store: StateStore) -> list[dict[str, Any]]:
    """Each export file once, at its newest (an export is rewritten in place at every save)."""
    newest: dict[str, Artifact] = {}
    for artifact in store.artifacts(kind="export", limit=200):  # newest first
        newest.setdefault(artifact.path, artifact)
    return [artifact_dict(workspace, a) for a in newest.values()]


def preview_history(workspace: Workspace, store: StateStore, job: str, limit: int = 200
                    ) -> list[dict[str, Any]]:
    """The job's previews still on disk, oldest first: the kept history of saves (and the
    latest grid)."""
    kept = []
    seen: set[str] = set()
    for artifact in store.artifacts(job, "preview", limit=limit * 4):  # newest first
        path = workspace.resolve(artifact.path)
        # latest.png is rewritten in place: only its newest record describes it
        if artifact.path in seen or not path.is_file():
            continue
        seen.add(artifact.path)
        kept.append(artifact_dict(workspace, artifact))
        if len(kept) >= limit:
            break
    return kept[::-1]

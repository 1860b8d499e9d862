"""Jobs and their control queue: what each job is doing, and what it was asked to do."""

from __future__ import annotations

import json
import time
from typing import Any

from swapd.state.base import Tables
from swapd.state.records import ControlRequest, JobRow, control_request, job_row

# Requests the service answers itself, whether or not the job has a worker: a worker never
# takes them (a merge preview renders apart from training).
SERVICE_ACTIONS = ("preview",)
_NOT_SERVICE = f"action NOT IN ({', '.join(repr(a) for a in SERVICE_ACTIONS)})"


class JobTables(Tables):
    # --- jobs ---------------------------------------------------------------------------------

    def upsert_job(self, name: str, path: str, kind: str, state: str, model: str | None = None,
                   target: int = 0, config: dict[str, Any] | None = None) -> None:
        """Create or refresh a job from its file; keeps its iteration and history."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                """INSERT INTO jobs (name, path, kind, state, model, target, config, error,
                                     created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)
                   ON CONFLICT(name) DO UPDATE SET path=excluded.path, kind=excluded.kind,
                     state=excluded.state, model=excluded.model, target=excluded.target,
                     config=excluded.config, error=NULL, updated_at=excluded.updated_at""",
                (name, path, kind, state, model, target,
                 json.dumps(config) if config is not None else None, now, now),
            )

    def set_job_state(self, name: str, state: str, error: str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET state=?, error=?, updated_at=? WHERE name=?",
                       (state, error, time.time(), name))

    def set_job_progress(self, name: str, iteration: int, egs: float | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET iteration=?, egs=COALESCE(?, egs), updated_at=? "
                       "WHERE name=?", (iteration, egs, time.time(), name))

    def set_job_info(self, name: str, info: dict[str, Any]) -> None:
        """What the worker found out about the job's model (parameters, options in use)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET info=? WHERE name=?", (json.dumps(info), name))

    def remove_job(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE name=?", (name,))

    def job(self, name: str) -> JobRow | None:
        row = self._db.execute("SELECT * FROM jobs WHERE name=?", (name,)).fetchone()
        return job_row(row) if row else None

    def jobs(self) -> list[JobRow]:
        rows = self._db.execute("SELECT * FROM jobs ORDER BY name").fetchall()
        return [job_row(r) for r in rows]

    # --- controls -----------------------------------------------------------------------------

    def request_control(self, job: str, action: str, args: dict[str, Any] | None = None) -> int:
        """Queue an action for a job; returns the request's id."""
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO controls (job, action, created_at, args) VALUES (?, ?, ?, ?)",
                (job, action, time.time(), json.dumps(args) if args else None))
        return int(cursor.lastrowid or 0)

    def take_control_requests(self, job: str) -> list[ControlRequest]:
        """Pending requests for a job, oldest first, marked as taken (not the service's own,
        :data:`SERVICE_ACTIONS`)."""
        return self._take(f"job=? AND {_NOT_SERVICE}", (job,))

    def take_service_requests(self, action: str) -> list[ControlRequest]:
        """Pending ``action`` requests (one of :data:`SERVICE_ACTIONS`) of every job, oldest
        first, marked as taken."""
        return self._take("action=?", (action,))

    def _take(self, where: str, args: tuple[Any, ...]) -> list[ControlRequest]:
        with self._tx() as db:
            rows = db.execute(f"SELECT * FROM controls WHERE {where} AND taken_at IS NULL "
                              "ORDER BY id", args).fetchall()
            if rows:
                db.executemany("UPDATE controls SET taken_at=? WHERE id=?",
                               ((time.time(), r["id"]) for r in rows))
        return [control_request(r) for r in rows]

    def take_controls(self, job: str) -> list[str]:
        """Pending actions for a job, oldest first, marked as taken."""
        return [request.action for request in self.take_control_requests(job)]

    def finish_control(self, request_id: int, result: str) -> None:
        """Record what came of a request (shown beside it in the dashboard)."""
        with self._tx() as db:
            db.execute("UPDATE controls SET done_at=?, result=?, "
                       "taken_at=COALESCE(taken_at, ?) WHERE id=?",
                       (time.time(), result, time.time(), request_id))

    def close_pending_controls(self, job: str, action: str, result: str) -> None:
        """Answer every untaken ``action`` request of a job at once (the service's own stop
        requests, once the worker they were for has exited)."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE controls SET taken_at=?, done_at=?, result=? WHERE job=? AND "
                       "action=? AND taken_at IS NULL", (now, now, result, job, action))

    def control_requests(self, job: str, limit: int = 20) -> list[ControlRequest]:
        """A job's latest requests, newest first."""
        rows = self._db.execute("SELECT * FROM controls WHERE job=? ORDER BY id DESC LIMIT ?",
                                (job, limit)).fetchall()
        return [control_request(r) for r in rows]

    def control_request(self, request_id: int) -> ControlRequest | None:
        row = self._db.execute("SELECT * FROM controls WHERE id=?", (request_id,)).fetchone()
        return control_request(row) if row else None

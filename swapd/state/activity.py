"""What the service made and met: artifacts (checkpoints, previews, exports, merged files),
merges under way, bad input set aside (problems) and the event log."""

from __future__ import annotations

import json
import time
from typing import Any

from swapd.state.base import Tables
from swapd.state.records import Artifact, MergeProgress, Problem, artifact


class ActivityTables(Tables):
    # --- artifacts ----------------------------------------------------------------------------

    def add_artifact(self, job: str, kind: str, path: str, iteration: int | None = None,
                     info: dict[str, Any] | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO artifacts (job, kind, path, iteration, time, info) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (job, kind, path, iteration, time.time(),
                 json.dumps(info) if info is not None else None),
            )

    def artifacts(self, job: str | None = None, kind: str | None = None,
                  limit: int = 100) -> list[Artifact]:
        """Newest first."""
        sql, args = "SELECT * FROM artifacts WHERE 1=1", []
        if job is not None:
            sql, args = sql + " AND job=?", [*args, job]
        if kind is not None:
            sql, args = sql + " AND kind=?", [*args, kind]
        rows = self._db.execute(sql + " ORDER BY time DESC, id DESC LIMIT ?",
                                (*args, limit)).fetchall()
        return [artifact(r) for r in rows]

    def latest_artifact(self, job: str, kind: str) -> Artifact | None:
        found = self.artifacts(job, kind, limit=1)
        return found[0] if found else None

    # --- merges under way ---------------------------------------------------------------------

    def set_merge_progress(self, job: str, source: str, done: int, total: int | None) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO merge_progress (job, source, done, total, started, updated) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(job, source) DO UPDATE SET "
                "done=excluded.done, total=excluded.total, updated=excluded.updated",
                (job, source, done, total, now, now))

    def end_merge_progress(self, job: str | None = None, source: str | None = None) -> None:
        """A merge is over (or, with no arguments, every merge: the service restarted)."""
        with self._tx() as db:
            if job is None:
                db.execute("DELETE FROM merge_progress")
            else:
                db.execute("DELETE FROM merge_progress WHERE job=? AND source=?", (job, source))

    def merges_under_way(self) -> list[MergeProgress]:
        if "merge_progress" not in self._tables():
            return []
        rows = self._db.execute("SELECT job, source, done, total, started, updated "
                                "FROM merge_progress ORDER BY started").fetchall()
        return [MergeProgress(*r) for r in rows]

    # --- problems -----------------------------------------------------------------------------

    def report_problem(self, source: str, kind: str, message: str, key: str | None = None,
                       moved_to: str | None = None) -> None:
        """Record bad input. A repeat of the same active problem is not duplicated."""
        with self._tx() as db:
            same = db.execute(
                "SELECT id FROM problems WHERE source=? AND kind=? AND message=? AND active=1",
                (source, kind, message)).fetchone()
            if same:
                db.execute("UPDATE problems SET time=?, moved_to=COALESCE(?, moved_to) "
                           "WHERE id=?", (time.time(), moved_to, same[0]))
                return
            db.execute(
                "INSERT INTO problems (time, source, kind, key, message, moved_to) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), source, kind, key, message, moved_to))

    def clear_problems(self, source: str) -> None:
        """The file was fixed or removed: its problems are no longer active."""
        with self._tx() as db:
            db.execute("UPDATE problems SET active=0 WHERE source=?", (source,))

    def problems(self, active_only: bool = True, limit: int = 200) -> list[Problem]:
        where = "WHERE active=1" if active_only else ""
        rows = self._db.execute(
            f"SELECT * FROM problems {where} ORDER BY time DESC LIMIT ?", (limit,)).fetchall()
        return [Problem(r["id"], r["time"], r["source"], r["kind"], r["key"], r["message"],
                        r["moved_to"]) for r in rows]

    # --- events -------------------------------------------------------------------------------

    def log_event(self, message: str, job: str | None = None, level: str = "info") -> None:
        with self._tx() as db:
            db.execute("INSERT INTO events (time, job, level, message) VALUES (?, ?, ?, ?)",
                       (time.time(), job, level, message))

    def events(self, limit: int = 50, job: str | None = None
               ) -> list[tuple[float, str | None, str, str]]:
        """The newest events (of one job, or all), newest first."""
        where, args = ("WHERE job=?", (job,)) if job is not None else ("", ())
        rows = self._db.execute(
            f"SELECT time, job, level, message FROM events {where} ORDER BY id DESC LIMIT ?",
            (*args, limit)).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

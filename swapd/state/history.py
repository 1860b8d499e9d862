"""A job's training history: the loss at every iteration, its sessions, and the moments it
went back (rollbacks after a NaN or a collapse, restores of a backup or snapshot)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from swapd.state.base import Tables
from swapd.state.records import Mark, Session, loads


class LossRow(NamedTuple):
    """One iteration of the history, as stored."""

    iteration: int
    time: float
    loss_a: float
    loss_b: float
    components: dict[str, dict[str, float]] | None  # {"a": {part: value}, "b": {...}}
    learning_rate: float | None
    egs: float | None


class HistoryTables(Tables):
    # --- losses -------------------------------------------------------------------------------

    def add_losses(self, job: str, rows: Iterable[tuple[Any, ...]]) -> None:
        """Write a batch of (iteration, time, loss_a, loss_b[, components[, learning_rate[,
        egs]]]) in one transaction; ``components``: {"a": {name: value}, "b": {...}} (see
        FaceLoss.breakdown) and, with the true face, {"true_face": {"discriminator": value}},
        stored as JSON."""
        def values(row: tuple[Any, ...]) -> tuple[Any, ...]:
            components = row[4] if len(row) > 4 else None
            return (job, *row[:4], json.dumps(components) if components else None,
                    row[5] if len(row) > 5 else None, row[6] if len(row) > 6 else None)

        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO losses (job, iteration, time, loss_a, loss_b, "
                "components, learning_rate, egs) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (values(row) for row in rows))

    def losses(self, job: str, max_points: int = 2000) -> list[tuple[int, float, float]]:
        """(iteration, loss_a, loss_b), thinned evenly to about max_points rows; the newest
        row is always included so the graph never trails."""
        count = self._db.execute("SELECT COUNT(*) FROM losses WHERE job=?", (job,)).fetchone()[0]
        step = max(1, -(-count // max_points))
        rows = self._db.execute(
            "SELECT iteration, loss_a, loss_b FROM ("
            "  SELECT iteration, loss_a, loss_b, ROW_NUMBER() OVER (ORDER BY iteration) AS n"
            "  FROM losses WHERE job=?) WHERE (n - 1) % ? = 0 OR n = ? ORDER BY iteration",
            (job, step, count),
        ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def loss_rows(self, job: str, since: int = -1, limit: int | None = None) -> list[LossRow]:
        """Every stored iteration after ``since``, in order (not thinned), at most ``limit``."""
        have = self._columns("losses")  # a read-only look at an older database
        extra = ", ".join(c if c in have else f"NULL AS {c}"
                          for c in ("components", "learning_rate", "egs"))
        rows = self._db.execute(
            f"SELECT iteration, time, loss_a, loss_b, {extra} FROM losses "
            "WHERE job=? AND iteration>? ORDER BY iteration LIMIT ?",
            (job, since, -1 if limit is None else limit))
        return [LossRow(r[0], r[1], r[2], r[3], loads(r[4]), r[5], r[6]) for r in rows]

    def loss_count(self, job: str) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM losses WHERE job=?",
                                    (job,)).fetchone()[0])

    def loss_time(self, job: str, iteration: int) -> float | None:
        """When an iteration's row was written (None without one): with the count, enough to
        tell whether a copy of the history is still current."""
        row = self._db.execute("SELECT time FROM losses WHERE job=? AND iteration=?",
                               (job, iteration)).fetchone()
        return row[0] if row else None

    def iter_losses(self, job: str) -> Iterator[tuple[int, float, float, float,
                                                     dict[str, dict[str, float]] | None]]:
        """Every (iteration, time, loss_a, loss_b, components or None) of a job, in order
        (not thinned)."""
        try:
            rows = self._db.execute(
                "SELECT iteration, time, loss_a, loss_b, components FROM losses WHERE job=? "
                "ORDER BY iteration", (job,))
        except sqlite3.OperationalError:  # a read-only look at a database from before them
            rows = self._db.execute(
                "SELECT iteration, time, loss_a, loss_b, NULL FROM losses WHERE job=? "
                "ORDER BY iteration", (job,))
        for row in rows:
            yield row[0], row[1], row[2], row[3], loads(row[4])

    def truncate_losses(self, job: str, after_iteration: int) -> None:
        """Forget losses past a checkpoint's iteration (they were never saved)."""
        with self._tx() as db:
            db.execute("DELETE FROM losses WHERE job=? AND iteration>?", (job, after_iteration))

    # --- sessions -----------------------------------------------------------------------------

    def record_session(self, session: Session) -> None:
        """Create or update a session (keyed by its job and start)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO sessions (job, start, end, start_iteration, "
                "end_iteration, batch_size, examples, train_seconds, steps) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (session.job, session.start, session.end, session.start_iteration,
                 session.end_iteration, session.batch_size, session.examples,
                 session.train_seconds, session.steps))

    def sessions(self, job: str) -> list[Session]:
        """A job's sessions, oldest first."""
        if "sessions" not in self._tables():
            return []
        steps = "steps" if "steps" in self._columns("sessions") else "0"
        rows = self._db.execute(
            "SELECT job, start, end, start_iteration, end_iteration, batch_size, examples, "
            f"train_seconds, {steps} FROM sessions WHERE job=? ORDER BY start",
            (job,)).fetchall()
        return [Session(*r) for r in rows]

    # --- marks --------------------------------------------------------------------------------

    def add_mark(self, job: str, iteration: int, kind: str,
                 info: dict[str, Any] | None = None) -> None:
        """Record that training went back to ``iteration`` (kind: rollback | restore)."""
        with self._tx() as db:
            db.execute("INSERT INTO marks (job, time, iteration, kind, info) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (job, time.time(), iteration, kind, json.dumps(info or {})))

    def marks(self, job: str) -> list[Mark]:
        if "marks" not in self._tables():
            return []
        rows = self._db.execute("SELECT * FROM marks WHERE job=? ORDER BY time, id",
                                (job,)).fetchall()
        return [Mark(r["id"], r["job"], r["time"], r["iteration"], r["kind"],
                     loads(r["info"]) or {}) for r in rows]

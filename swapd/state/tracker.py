"""The snapshot tracker's data (each face's loss and images at each snapshot) and the focus
faces a user picked from it for the trainer to draw more often."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from swapd.state.base import Tables

# How a snapshot's faces can be ordered (faces without the value go last; then by name).
TRACKER_SORTS = {
    "loss": "t.loss IS NULL, t.loss",  # best first
    "-loss": "t.loss IS NULL, t.loss DESC",  # worst first
    "delta": "delta IS NULL, delta",  # most improved since the earlier snapshot first
    "-delta": "delta IS NULL, delta DESC",  # most worsened first
    "yaw": "t.yaw IS NULL, t.yaw",
    "pitch": "t.pitch IS NULL, t.pitch",
    "name": "t.face",
}
Range = tuple[float, float]  # [low, high)


class TrackerTables(Tables):
    def add_tracked_faces(self, job: str, iteration: int, tracked: Iterable[Any]) -> None:
        """A snapshot's tracker data (objects with side, face, loss, yaw, pitch, recon, swap),
        and its per-side summary, in one transaction."""
        tracked = list(tracked)
        rows = [(job, t.side, t.face, iteration, t.loss, t.yaw, t.pitch, t.recon, t.swap,
                 getattr(t, "crop", None), getattr(t, "tile", None)) for t in tracked]
        now = time.time()
        summary = []
        for side in sorted({t.side for t in tracked}):
            losses = [t.loss for t in tracked if t.side == side and t.loss is not None]
            mean = sum(losses) / len(losses) if losses else None
            summary.append((job, iteration, side, len(losses), mean, now))
        with self._tx() as db:
            # A snapshot taken again at this iteration (after a restore) replaces all of it.
            db.execute("DELETE FROM tracked_faces WHERE job=? AND iteration=?", (job, iteration))
            db.executemany("INSERT OR REPLACE INTO tracked_faces (job, side, face, iteration, "
                           "loss, yaw, pitch, recon, swap, crop, tile) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.executemany("INSERT OR REPLACE INTO tracker_snapshots (job, iteration, side, "
                           "faces, mean_loss, time) VALUES (?, ?, ?, ?, ?, ?)", summary)

    def forget_tracked_faces(self, job: str, iterations: Iterable[int]) -> None:
        """Drop the tracker data of snapshots that were pruned."""
        pairs = [(job, i) for i in iterations]
        with self._tx() as db:
            db.executemany("DELETE FROM tracked_faces WHERE job=? AND iteration=?", pairs)
            db.executemany("DELETE FROM tracker_snapshots WHERE job=? AND iteration=?", pairs)

    def tracker_snapshots(self, job: str) -> list[dict[str, Any]]:
        """Per snapshot with tracker data and side: iteration, side, faces, mean loss (and the
        time it was written, where the database records it)."""
        when = "time" if "time" in self._columns("tracker_snapshots") else "NULL AS time"
        rows = self._db.execute(
            f"SELECT iteration, side, faces, mean_loss, {when} FROM tracker_snapshots "
            "WHERE job=? ORDER BY iteration, side", (job,)).fetchall()
        return [dict(r) for r in rows]

    def tracked_faces(self, job: str, iteration: int, side: str, order: str = "loss",
                      limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """One snapshot's faces of one side, worst first (``order="loss"``), best first
        ("best"), by name or by yaw; a page of ``limit`` from ``offset``."""
        order_by = {"loss": "loss DESC", "best": "loss", "face": "face", "yaw": "yaw"}[order]
        rows = self._db.execute(
            f"SELECT * FROM tracked_faces WHERE job=? AND iteration=? AND side=? "
            f"ORDER BY {order_by} LIMIT ? OFFSET ?",
            (job, iteration, side, limit, offset)).fetchall()
        return [dict(r) for r in rows]

    def tracked_page(self, job: str, iteration: int, side: str, sort: str = "-loss",
                     compare_to: int | None = None, yaw: Range | None = None,
                     pitch: Range | None = None, names: Iterable[str] | None = None,
                     offset: int = 0, limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
        """A page of one snapshot's faces of one side, filtered by yaw and pitch ranges
        ([low, high) in degrees) and to ``names`` if given, in a TRACKER_SORTS order; each
        with ``before`` (its loss at ``compare_to``) and ``delta`` (the change since). Returns
        (how many match, the page)."""
        if sort not in TRACKER_SORTS:
            raise ValueError(f"sort must be one of {', '.join(TRACKER_SORTS)}, not {sort!r}")
        where = ["t.job=?", "t.iteration=?", "t.side=?"]
        args: list[Any] = [job, iteration, side]
        for column, bounds in (("yaw", yaw), ("pitch", pitch)):
            if bounds is not None:
                where.append(f"t.{column}>=? AND t.{column}<?")
                args += [bounds[0], bounds[1]]
        if names is not None:
            wanted = sorted(set(names))
            if not wanted:
                return 0, []
            where.append(f"t.face IN ({', '.join('?' for _ in wanted)})")
            args += wanted
        condition = " AND ".join(where)
        total = self._db.execute(f"SELECT COUNT(*) FROM tracked_faces t WHERE {condition}",
                                 args).fetchone()[0]
        have = self._columns("tracked_faces")
        extra = ", ".join(f"t.{c}" if c in have else f"NULL AS {c}" for c in ("crop", "tile"))
        rows = self._db.execute(
            f"SELECT t.face, t.loss, t.yaw, t.pitch, t.recon, t.swap, {extra}, e.loss AS before, "
            "t.loss - e.loss AS delta FROM tracked_faces t LEFT JOIN tracked_faces e "
            "ON e.job=t.job AND e.side=t.side AND e.face=t.face AND e.iteration=? "
            f"WHERE {condition} ORDER BY {TRACKER_SORTS[sort]}, t.face LIMIT ? OFFSET ?",
            [-1 if compare_to is None else compare_to, *args, limit, offset]).fetchall()
        return int(total), [dict(r) for r in rows]

    def tracked_pose_cells(self, job: str, iteration: int, side: str, cell: int = 10
                           ) -> tuple[list[tuple[int, int, int, float | None]], int]:
        """One snapshot's faces of a side per yaw x pitch cell: (yaw low, pitch low, faces,
        mean loss) and the count without a pose."""
        return self._pose_cells("tracked_faces", "job=? AND iteration=? AND side=?",
                                (job, iteration, side), "loss", cell)

    def face_timeline(self, job: str, side: str, face: str) -> list[dict[str, Any]]:
        """One face across every snapshot: iteration, loss and images, oldest first."""
        crop = "crop" if "crop" in self._columns("tracked_faces") else "NULL AS crop"
        rows = self._db.execute(
            f"SELECT iteration, loss, recon, swap, {crop}, yaw, pitch FROM tracked_faces "
            "WHERE job=? AND side=? AND face=? ORDER BY iteration", (job, side, face)).fetchall()
        return [dict(r) for r in rows]

    def tracked_pairs(self, job: str, first: int, second: int, side: str
                      ) -> list[tuple[str, float, float]]:
        """(face, loss at first, loss at second) of the faces both snapshots tracked with a
        finite loss."""
        rows = self._db.execute(
            "SELECT f.face, f.loss, s.loss FROM tracked_faces f JOIN tracked_faces s "
            "ON s.job=f.job AND s.side=f.side AND s.face=f.face AND s.iteration=? "
            "WHERE f.job=? AND f.iteration=? AND f.side=? AND f.loss IS NOT NULL "
            "AND s.loss IS NOT NULL ORDER BY f.face", (second, job, first, side)).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    # --- focus faces --------------------------------------------------------------------------

    def set_focus(self, job: str, side: str, faces: Iterable[str], focused: bool) -> int:
        """Mark faces as focus (or not); returns how many changed."""
        names = sorted(set(faces))
        with self._tx() as db:
            before = db.total_changes
            if focused:
                db.executemany("INSERT OR IGNORE INTO focus_faces (job, side, face, added_at) "
                               "VALUES (?, ?, ?, ?)",
                               [(job, side, name, time.time()) for name in names])
            else:
                db.executemany("DELETE FROM focus_faces WHERE job=? AND side=? AND face=?",
                               [(job, side, name) for name in names])
            return db.total_changes - before

    def focus_faces(self, job: str) -> dict[str, set[str]]:
        """A job's focus faces per side ("a", "b")."""
        found: dict[str, set[str]] = {"a": set(), "b": set()}
        if "focus_faces" not in self._tables():
            return found
        for side, face in self._db.execute("SELECT side, face FROM focus_faces WHERE job=?",
                                           (job,)):
            found.setdefault(side, set()).add(face)
        return found

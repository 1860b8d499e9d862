"""The face index: every file of every face set, what it is, and whether it is usable."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from swapd.state.base import Tables
from swapd.state.records import FACE_COLUMNS, FaceRecord


class FaceTables(Tables):
    def face_stamps(self, set_name: str) -> dict[str, tuple[int, int, str]]:
        """name -> (size, mtime_ns, status) of every indexed file of a set."""
        rows = self._db.execute("SELECT name, size, mtime_ns, status FROM faces WHERE set_name=?",
                                (set_name,)).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def faces_left_in_place(self, set_name: str) -> set[str]:
        """Files of a set recorded as quarantined but not moved (they live outside the
        workspace, so they stay where they are)."""
        rows = self._db.execute("SELECT name FROM faces WHERE set_name=? AND "
                                "status='quarantined' AND moved_to IS NULL",
                                (set_name,)).fetchall()
        return {r[0] for r in rows}

    def face_stamps_of(self, set_name: str, names: list[str]) -> dict[str, int]:
        """name -> mtime_ns of those of ``names`` the index lists (a version for their
        thumbnails)."""
        found: dict[str, int] = {}
        for start in range(0, len(names), 500):  # SQLite's limit on bound variables
            chunk = names[start:start + 500]
            found.update(self._db.execute(
                f"SELECT name, mtime_ns FROM faces WHERE set_name=? AND name IN "
                f"({', '.join('?' for _ in chunk)})", (set_name, *chunk)).fetchall())
        return found

    def index_faces(self, records: Iterable[FaceRecord], removed: Iterable[str] = (),
                    set_name: str | None = None) -> None:
        """Write a scan's new or changed rows and drop removed files, in one transaction, then
        mark duplicates (same content as an earlier-named ok file of the set). A row keeps the
        first_seen of the file it replaces."""
        records = list(records)
        placeholders = ", ".join("?" for _ in FACE_COLUMNS)
        updates = ", ".join(f"{c}=excluded.{c}" for c in FACE_COLUMNS
                            if c not in ("set_name", "name", "first_seen"))
        with self._tx() as db:
            db.executemany(
                f"INSERT INTO faces ({', '.join(FACE_COLUMNS)}) VALUES ({placeholders}) "
                f"ON CONFLICT(set_name, name) DO UPDATE SET {updates}",
                [tuple(json.dumps(v) if c == "landmarks" and v is not None else v
                       for c, v in zip(FACE_COLUMNS, _record_values(r), strict=True))
                 for r in records])
            if set_name is not None:
                db.executemany("DELETE FROM faces WHERE set_name=? AND name=?",
                               [(set_name, name) for name in removed])
            for changed_set in {r.set_name for r in records} | ({set_name} - {None}):
                _mark_duplicates(db, changed_set)

    def forget_face_set(self, set_name: str) -> None:
        """Drop a face set's index rows (its folder is gone)."""
        with self._tx() as db:
            db.execute("DELETE FROM faces WHERE set_name=?", (set_name,))

    def faces(self, set_name: str | None = None, status: str | None = None,
              limit: int | None = None, offset: int = 0) -> list[FaceRecord]:
        """Indexed faces (one set, or all; of one status, or any), by set and name."""
        where, args = [], []
        if set_name is not None:
            where, args = [*where, "set_name=?"], [*args, set_name]
        if status is not None:
            where, args = [*where, "status=?"], [*args, status]
        sql = "SELECT * FROM faces" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._db.execute(sql + " ORDER BY set_name, name LIMIT ? OFFSET ?",
                                (*args, -1 if limit is None else limit, offset)).fetchall()
        return [_face_record(r) for r in rows]

    def face(self, set_name: str, name: str) -> FaceRecord | None:
        row = self._db.execute("SELECT * FROM faces WHERE set_name=? AND name=?",
                               (set_name, name)).fetchone()
        return _face_record(row) if row is not None else None

    def face_sets(self) -> dict[str, dict[str, int]]:
        """Per set: how many faces are ok, quarantined and duplicates."""
        rows = self._db.execute(
            "SELECT set_name, SUM(status='ok'), SUM(status='quarantined'), "
            "SUM(duplicate_of IS NOT NULL) FROM faces GROUP BY set_name ORDER BY set_name"
        ).fetchall()
        return {r[0]: {"ok": r[1], "quarantined": r[2], "duplicates": r[3]} for r in rows}

    def mask_source_counts(self, set_name: str) -> dict[str | None, int]:
        """How many of a set's usable faces train with each mask ("xseg", "polys",
        "landmarks"; None: the whole face)."""
        rows = self._db.execute(
            "SELECT mask_source, COUNT(*) FROM faces WHERE set_name=? AND status='ok' "
            "GROUP BY mask_source", (set_name,)).fetchall()
        return {source: count for source, count in rows}

    def face_page(self, set_name: str, yaw: tuple[float, float] | None = None,
                  pitch: tuple[float, float] | None = None, offset: int = 0,
                  limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
        """A page of a set's usable faces (by name), filtered by yaw and pitch ranges
        ([low, high) in degrees): (how many match, the page's name, pose, size, mtime_ns,
        kind, duplicate_of, landmarks_from)."""
        where, args = ["set_name=?", "status='ok'"], [set_name]
        for column, bounds in (("yaw", yaw), ("pitch", pitch)):
            if bounds is not None:
                where.append(f"{column}>=? AND {column}<?")
                args += [bounds[0], bounds[1]]
        condition = " AND ".join(where)
        total = self._db.execute(f"SELECT COUNT(*) FROM faces WHERE {condition}",
                                 args).fetchone()[0]
        rows = self._db.execute(
            "SELECT name, yaw, pitch, width, height, channels, mtime_ns, kind, duplicate_of, "
            f"landmarks_from FROM faces WHERE {condition} ORDER BY name LIMIT ? OFFSET ?",
            (*args, limit, offset)).fetchall()
        return int(total), [dict(r) for r in rows]

    def face_pose_cells(self, set_name: str, cell: int = 10
                        ) -> tuple[list[tuple[int, int, int, float | None]], int]:
        """A set's usable faces per yaw x pitch cell: (yaw low, pitch low, faces, None) and
        the count without a pose."""
        return self._pose_cells("faces", "set_name=? AND status='ok'", (set_name,), "NULL",
                                cell)


def _mark_duplicates(db: sqlite3.Connection, set_name: str) -> None:
    """A duplicate names the first ok file (by name) of its set with the same content."""
    first: dict[str, str] = {}
    marks = []
    for name, digest, current in db.execute(
            "SELECT name, hash, duplicate_of FROM faces WHERE set_name=? AND status='ok' "
            "AND hash IS NOT NULL ORDER BY name", (set_name,)):
        original = first.setdefault(digest, name)
        wanted = None if original == name else original
        if wanted != current:
            marks.append((wanted, set_name, name))
    db.executemany("UPDATE faces SET duplicate_of=? WHERE set_name=? AND name=?", marks)


def _face_record(row: sqlite3.Row) -> FaceRecord:
    have = set(row.keys())  # a read-only look at an older database lacks new columns
    return FaceRecord(**{c: (json.loads(row[c]) if c == "landmarks" and row[c] else row[c])
                         for c in FACE_COLUMNS if c in have})


def _record_values(record: FaceRecord) -> tuple[Any, ...]:
    return tuple(getattr(record, c) for c in FACE_COLUMNS)

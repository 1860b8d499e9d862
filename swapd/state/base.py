"""What every group of tables shares: the connection and its short write transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


class Tables:
    """Base of the state store's table groups (jobs, history, faces, tracker, ...)."""

    _db: sqlite3.Connection

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._db:
            yield self._db

    def _tables(self) -> set[str]:
        """The tables this database has (a read-only look at an older one may lack some)."""
        return {r[0] for r in self._db.execute("SELECT name FROM sqlite_master "
                                               "WHERE type='table'")}

    def _columns(self, table: str) -> set[str]:
        return {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}

    def _pose_cells(self, table: str, where: str, args: tuple[object, ...], loss: str,
                    cell: int) -> tuple[list[tuple[int, int, int, float | None]], int]:
        """Faces per yaw x pitch cell of ``cell`` degrees (each cell's low edges, count and
        mean of the ``loss`` expression), and how many have no pose, in one pass."""
        def low(column: str) -> str:  # floor(angle / cell) * cell, for angles above -3600
            return f"(CAST(({column} + 3600) / {cell} AS INTEGER) - {3600 // cell}) * {cell}"

        rows = self._db.execute(
            f"SELECT {low('yaw')}, {low('pitch')}, COUNT(*), AVG({loss}) FROM {table} "
            f"WHERE {where} AND yaw IS NOT NULL AND pitch IS NOT NULL GROUP BY 1, 2",
            args).fetchall()
        unknown = self._db.execute(
            f"SELECT COUNT(*) FROM {table} WHERE {where} AND (yaw IS NULL OR pitch IS NULL)",
            args).fetchone()[0]
        return [(int(r[0]), int(r[1]), int(r[2]), r[3]) for r in rows], int(unknown)

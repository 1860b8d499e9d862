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

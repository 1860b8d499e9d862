"""The state store: one SQLite database (WAL) under <workspace>/.swapd/state.db.

The daemon, the worker processes and the dashboard each open their own `StateStore`. Writers
are short transactions; the dashboard reads, and writes only requests into the control queue.
WAL lets readers run while a worker writes, and the busy timeout absorbs the brief moments two
writers meet.

The tables come in groups, one module each (see schema.py for every column):
    jobs.py      jobs (one row per job file: state, iteration, target, model, last error) and
                 controls (pause, resume, save, snapshot, export, stop, restore, focus: asked by
                 the CLI or the dashboard, taken by a worker or the service; preview: a merge
                 preview, always the service's)
    history.py   losses (per iteration, written in batches), sessions, marks (rollbacks and
                 restores)
    activity.py  artifacts (checkpoints, exports, previews, merged outputs), merges under
                 way, problems (bad input set aside, and why) and events
    faces.py     the face index: every file of every set (hash, size, landmarks, pose,
                 status, duplicates)
    tracker.py   the snapshot tracker (each face at each snapshot) and focus faces

Paths: artifacts hold absolute paths (workers write them as they make the files); problem
sources and `moved_to` are relative to the workspace root, as the user sees them.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from swapd.state.activity import ActivityTables
from swapd.state.faces import FaceTables
from swapd.state.history import HistoryTables
from swapd.state.jobs import JobTables
from swapd.state.schema import create_or_migrate
from swapd.state.tracker import TrackerTables

BUSY_TIMEOUT = 30.0  # seconds a writer waits for another's write lock


class StateStore(JobTables, HistoryTables, ActivityTables, FaceTables, TrackerTables):
    """A connection to the workspace's state database. One per process (or thread)."""

    def __init__(self, db_path: Path, readonly: bool = False) -> None:
        self.path = Path(db_path)
        if readonly:
            uri = f"file:{self.path}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=10.0, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, check_same_thread=False)
            _switch_to_wal(self._db)
            self._db.execute("PRAGMA synchronous=NORMAL")
            create_or_migrate(self._db)
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        self._db.close()


def _switch_to_wal(db: sqlite3.Connection) -> None:
    """WAL mode, waiting as long as the busy timeout. Two processes that open a new database
    together each look at its mode, then each needs the write lock to switch it: SQLite answers
    one "database is locked" at once (waiting would deadlock), not after the busy timeout; that
    one tries again, and once the other has switched, the switch is a no-op."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)

"""The state store: one SQLite database (WAL) under <workspace>/.swapd/state.db.

The daemon, the worker processes and the dashboard each open their own `StateStore`. Writers are
short transactions; the dashboard only reads. WAL lets readers run while a worker writes, and the
busy timeout absorbs the brief moments two writers meet.

Tables
    jobs       one row per job file: state, iteration, target, model, last error
    losses     training history, written in batches (never one transaction per iteration)
    artifacts  checkpoints, exports, previews, merged outputs: what exists and when it appeared
    problems   bad input set aside: the file, the key or part, and what was expected
    events     a short log of what happened, for the dashboard and `swapd status`
    controls   requests from the CLI/dashboard (pause, resume, save, stop) picked up by workers
    faces      the face index: every file of every set, its content hash, size, channels,
               landmarks, pose, source, status (ok / quarantined + why), duplicates

Paths: artifacts hold absolute paths (workers write them as they make the files); problem
sources and `moved_to` are relative to the workspace root, as the user sees them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# 2: the faces table (created in place in older databases); 3: faces.landmarks_from (added);
# 4: the tracked_faces table (created in place); 5: losses.components (added);
# 6: faces.centering (added)
SCHEMA_VERSION = 6

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    name        TEXT PRIMARY KEY,
    path        TEXT NOT NULL,
    kind        TEXT NOT NULL,            -- train | merge
    state       TEXT NOT NULL,            -- queued | training | waiting | done | error | stopped
    model       TEXT,
    iteration   INTEGER NOT NULL DEFAULT 0,
    target      INTEGER NOT NULL DEFAULT 0,
    egs         REAL,                     -- examples per second, both sides, latest
    error       TEXT,
    config      TEXT,                     -- the validated job as JSON
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS losses (
    job        TEXT NOT NULL,
    iteration  INTEGER NOT NULL,
    time       REAL NOT NULL,
    loss_a     REAL NOT NULL,
    loss_b     REAL NOT NULL,
    components TEXT,                     -- JSON {"a": {part: value}, "b": {...}}
    PRIMARY KEY (job, iteration)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS artifacts (
    id         INTEGER PRIMARY KEY,
    job        TEXT NOT NULL,
    kind       TEXT NOT NULL,            -- checkpoint | export | preview | merge
    path       TEXT NOT NULL,
    iteration  INTEGER,
    time       REAL NOT NULL,
    info       TEXT
);
CREATE INDEX IF NOT EXISTS artifacts_job_kind ON artifacts (job, kind, time);
CREATE TABLE IF NOT EXISTS problems (
    id         INTEGER PRIMARY KEY,
    time       REAL NOT NULL,
    source     TEXT NOT NULL,            -- the file the problem is in
    kind       TEXT NOT NULL,            -- job | face | footage | worker
    key        TEXT,                     -- the key or part at fault, when there is one
    message    TEXT NOT NULL,
    moved_to   TEXT,                     -- where the file was set aside, if it was
    active     INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS problems_source ON problems (source, active);
CREATE TABLE IF NOT EXISTS events (
    id         INTEGER PRIMARY KEY,
    time       REAL NOT NULL,
    job        TEXT,
    level      TEXT NOT NULL,
    message    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS faces (
    set_name     TEXT NOT NULL,
    name         TEXT NOT NULL,            -- file name inside faces/<set>/
    status       TEXT NOT NULL,            -- ok | quarantined
    reason       TEXT,                     -- why it was quarantined
    moved_to     TEXT,                     -- where it was set aside (workspace-relative)
    size         INTEGER NOT NULL,         -- bytes; with mtime_ns, what a re-scan compares
    mtime_ns     INTEGER NOT NULL,
    hash         TEXT,                     -- BLAKE2b-128 of the content
    kind         TEXT,                     -- faceswap | deepfacelab | plain
    width        INTEGER,
    height       INTEGER,
    channels     INTEGER,
    landmarks    TEXT,                     -- JSON [[x, y], ...] in the aligned image, if known
    landmarks_from TEXT,                   -- file | mapped:<detector> | detected:<detector>
    centering    TEXT,                     -- the crop it is stored at: legacy | face | head
    yaw          REAL,
    pitch        REAL,
    roll         REAL,
    source       TEXT,                     -- the frame or video the face was extracted from
    duplicate_of TEXT,                     -- an earlier file of the set with the same content
    first_seen   REAL NOT NULL,
    checked_at   REAL NOT NULL,
    PRIMARY KEY (set_name, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS faces_hash ON faces (set_name, hash);
CREATE TABLE IF NOT EXISTS tracked_faces (  -- the snapshot tracker: each face at each snapshot
    job        TEXT NOT NULL,
    side       TEXT NOT NULL,             -- a | b
    face       TEXT NOT NULL,             -- file name in the set
    iteration  INTEGER NOT NULL,          -- the snapshot's
    loss       REAL,                      -- NULL: not finite
    yaw        REAL,
    pitch      REAL,
    recon      TEXT NOT NULL,             -- image, relative to the snapshot's folder
    swap       TEXT,                      -- A faces: the swap to B
    PRIMARY KEY (job, side, face, iteration)  -- one face's timeline is one key range
) WITHOUT ROWID;
-- one snapshot's faces of a side, by loss: an index range, worst or best first
CREATE INDEX IF NOT EXISTS tracked_faces_by_loss ON tracked_faces (job, iteration, side, loss);
CREATE TABLE IF NOT EXISTS tracker_snapshots (  -- written with the rows: no scan to summarise
    job        TEXT NOT NULL,
    iteration  INTEGER NOT NULL,
    side       TEXT NOT NULL,
    faces      INTEGER NOT NULL,          -- with a finite loss
    mean_loss  REAL,
    PRIMARY KEY (job, iteration, side)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS controls (
    id         INTEGER PRIMARY KEY,
    job        TEXT NOT NULL,
    action     TEXT NOT NULL,            -- pause | resume | save | stop
    created_at REAL NOT NULL,
    taken_at   REAL
);
"""


@dataclass(frozen=True)
class JobRow:
    name: str
    path: str
    kind: str
    state: str
    model: str | None
    iteration: int
    target: int
    egs: float | None
    error: str | None
    config: dict[str, Any] | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Problem:
    id: int
    time: float
    source: str
    kind: str
    key: str | None
    message: str
    moved_to: str | None


@dataclass(frozen=True)
class FaceRecord:
    """One row of the face index (see the faces table)."""

    set_name: str
    name: str
    status: str
    size: int
    mtime_ns: int
    reason: str | None = None
    moved_to: str | None = None
    hash: str | None = None
    kind: str | None = None
    width: int | None = None
    height: int | None = None
    channels: int | None = None
    landmarks: list[list[float]] | None = None
    landmarks_from: str | None = None  # "file", "mapped:mtcnn", "detected:mtcnn"; None: unaligned
    centering: str | None = None  # the crop it is stored at; None: unknown (or indexed before 6)
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    source: str | None = None
    duplicate_of: str | None = None
    first_seen: float = 0.0
    checked_at: float = 0.0


_FACE_COLUMNS = tuple(FaceRecord.__dataclass_fields__)


@dataclass(frozen=True)
class Artifact:
    id: int
    job: str
    kind: str
    path: str
    iteration: int | None
    time: float
    info: dict[str, Any] | None


class StateStore:
    """A connection to the workspace's state database. One per process (or thread)."""

    def __init__(self, db_path: Path, readonly: bool = False) -> None:
        self.path = Path(db_path)
        if readonly:
            uri = f"file:{self.path}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=10.0, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._migrate()
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            self._db.commit()
        self._db.row_factory = sqlite3.Row

    def _migrate(self) -> None:
        """Bring tables made by an older swapd up to this schema (columns are only added)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(faces)")}
        if "landmarks_from" not in columns:
            self._db.execute("ALTER TABLE faces ADD COLUMN landmarks_from TEXT")
        if "centering" not in columns:
            self._db.execute("ALTER TABLE faces ADD COLUMN centering TEXT")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(losses)")}
        if "components" not in columns:
            self._db.execute("ALTER TABLE losses ADD COLUMN components TEXT")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._db:
            yield self._db

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

    def remove_job(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE name=?", (name,))

    def job(self, name: str) -> JobRow | None:
        row = self._db.execute("SELECT * FROM jobs WHERE name=?", (name,)).fetchone()
        return _job_row(row) if row else None

    def jobs(self) -> list[JobRow]:
        rows = self._db.execute("SELECT * FROM jobs ORDER BY name").fetchall()
        return [_job_row(r) for r in rows]

    # --- losses -------------------------------------------------------------------------------

    def add_losses(self, job: str, rows: Iterable[tuple[Any, ...]]) -> None:
        """Write a batch of (iteration, time, loss_a, loss_b[, components]) in one
        transaction; ``components``: {"a": {name: value}, "b": {...}} (see FaceLoss.breakdown)
        and, with the true face, {"true_face": {"discriminator": value}}, stored as JSON."""
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO losses (job, iteration, time, loss_a, loss_b, "
                "components) VALUES (?, ?, ?, ?, ?, ?)",
                ((job, *row[:4], json.dumps(row[4]) if len(row) > 4 and row[4] else None)
                 for row in rows),
            )

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
            yield row[0], row[1], row[2], row[3], json.loads(row[4]) if row[4] else None

    def truncate_losses(self, job: str, after_iteration: int) -> None:
        """Forget losses past a checkpoint's iteration (they were never saved)."""
        with self._tx() as db:
            db.execute("DELETE FROM losses WHERE job=? AND iteration>?", (job, after_iteration))

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
        return [Artifact(r["id"], r["job"], r["kind"], r["path"], r["iteration"], r["time"],
                         json.loads(r["info"]) if r["info"] else None) for r in rows]

    def latest_artifact(self, job: str, kind: str) -> Artifact | None:
        found = self.artifacts(job, kind, limit=1)
        return found[0] if found else None

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

    # --- face index ---------------------------------------------------------------------------

    def face_stamps(self, set_name: str) -> dict[str, tuple[int, int, str]]:
        """name -> (size, mtime_ns, status) of every indexed file of a set."""
        rows = self._db.execute("SELECT name, size, mtime_ns, status FROM faces WHERE set_name=?",
                                (set_name,)).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def index_faces(self, records: Iterable[FaceRecord], removed: Iterable[str] = (),
                    set_name: str | None = None) -> None:
        """Write a scan's new or changed rows and drop removed files, in one transaction, then
        mark duplicates (same content as an earlier-named ok file of the set). A row keeps the
        first_seen of the file it replaces."""
        records = list(records)
        placeholders = ", ".join("?" for _ in _FACE_COLUMNS)
        updates = ", ".join(f"{c}=excluded.{c}" for c in _FACE_COLUMNS
                            if c not in ("set_name", "name", "first_seen"))
        with self._tx() as db:
            db.executemany(
                f"INSERT INTO faces ({', '.join(_FACE_COLUMNS)}) VALUES ({placeholders}) "
                f"ON CONFLICT(set_name, name) DO UPDATE SET {updates}",
                [tuple(json.dumps(v) if c == "landmarks" and v is not None else v
                       for c, v in zip(_FACE_COLUMNS, _record_values(r), strict=True))
                 for r in records])
            if set_name is not None:
                db.executemany("DELETE FROM faces WHERE set_name=? AND name=?",
                               [(set_name, name) for name in removed])
            for changed_set in {r.set_name for r in records} | ({set_name} - {None}):
                self._mark_duplicates(db, changed_set)

    @staticmethod
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

    def forget_face_set(self, set_name: str) -> None:
        """Drop a face set's index rows (its folder is gone)."""
        with self._tx() as db:
            db.execute("DELETE FROM faces WHERE set_name=?", (set_name,))

    def faces(self, set_name: str | None = None) -> list[FaceRecord]:
        """Indexed faces (one set, or all), by set and name."""
        sql = "SELECT * FROM faces" + (" WHERE set_name=?" if set_name is not None else "")
        rows = self._db.execute(sql + " ORDER BY set_name, name",
                                () if set_name is None else (set_name,)).fetchall()
        if not rows:
            return []
        have = set(rows[0].keys())  # a read-only look at an older database lacks new columns
        return [FaceRecord(**{c: (json.loads(r[c]) if c == "landmarks" and r[c] else r[c])
                              for c in _FACE_COLUMNS if c in have}) for r in rows]

    def face_sets(self) -> dict[str, dict[str, int]]:
        """Per set: how many faces are ok, quarantined and duplicates."""
        rows = self._db.execute(
            "SELECT set_name, SUM(status='ok'), SUM(status='quarantined'), "
            "SUM(duplicate_of IS NOT NULL) FROM faces GROUP BY set_name ORDER BY set_name"
        ).fetchall()
        return {r[0]: {"ok": r[1], "quarantined": r[2], "duplicates": r[3]} for r in rows}

    # --- snapshot tracker --------------------------------------------------------------------

    def add_tracked_faces(self, job: str, iteration: int, tracked: Iterable[Any]) -> None:
        """A snapshot's tracker data (objects with side, face, loss, yaw, pitch, recon, swap),
        and its per-side summary, in one transaction."""
        tracked = list(tracked)
        rows = [(job, t.side, t.face, iteration, t.loss, t.yaw, t.pitch, t.recon, t.swap)
                for t in tracked]
        summary = []
        for side in sorted({t.side for t in tracked}):
            losses = [t.loss for t in tracked if t.side == side and t.loss is not None]
            mean = sum(losses) / len(losses) if losses else None
            summary.append((job, iteration, side, len(losses), mean))
        with self._tx() as db:
            # A snapshot taken again at this iteration (after a restore) replaces all of it.
            db.execute("DELETE FROM tracked_faces WHERE job=? AND iteration=?", (job, iteration))
            db.executemany("INSERT OR REPLACE INTO tracked_faces (job, side, face, iteration, "
                           "loss, yaw, pitch, recon, swap) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           rows)
            db.executemany("INSERT OR REPLACE INTO tracker_snapshots VALUES (?, ?, ?, ?, ?)",
                           summary)

    def forget_tracked_faces(self, job: str, iterations: Iterable[int]) -> None:
        """Drop the tracker data of snapshots that were pruned."""
        pairs = [(job, i) for i in iterations]
        with self._tx() as db:
            db.executemany("DELETE FROM tracked_faces WHERE job=? AND iteration=?", pairs)
            db.executemany("DELETE FROM tracker_snapshots WHERE job=? AND iteration=?", pairs)

    def tracker_snapshots(self, job: str) -> list[dict[str, Any]]:
        """Per snapshot with tracker data: iteration, side, faces and mean loss."""
        rows = self._db.execute(
            "SELECT iteration, side, faces, mean_loss FROM tracker_snapshots WHERE job=? "
            "ORDER BY iteration, side", (job,)).fetchall()
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

    def face_timeline(self, job: str, side: str, face: str) -> list[dict[str, Any]]:
        """One face across every snapshot: iteration, loss and images, oldest first."""
        rows = self._db.execute(
            "SELECT iteration, loss, recon, swap FROM tracked_faces WHERE job=? AND side=? "
            "AND face=? ORDER BY iteration", (job, side, face)).fetchall()
        return [dict(r) for r in rows]

    # --- events -------------------------------------------------------------------------------

    def log_event(self, message: str, job: str | None = None, level: str = "info") -> None:
        with self._tx() as db:
            db.execute("INSERT INTO events (time, job, level, message) VALUES (?, ?, ?, ?)",
                       (time.time(), job, level, message))

    def events(self, limit: int = 50) -> list[tuple[float, str | None, str, str]]:
        rows = self._db.execute(
            "SELECT time, job, level, message FROM events ORDER BY id DESC LIMIT ?",
            (limit,)).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    # --- controls -----------------------------------------------------------------------------

    def request_control(self, job: str, action: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO controls (job, action, created_at) VALUES (?, ?, ?)",
                       (job, action, time.time()))

    def take_controls(self, job: str) -> list[str]:
        """Pending actions for a job, oldest first, marked as taken."""
        with self._tx() as db:
            rows = db.execute("SELECT id, action FROM controls WHERE job=? AND taken_at IS NULL "
                              "ORDER BY id", (job,)).fetchall()
            if rows:
                db.executemany("UPDATE controls SET taken_at=? WHERE id=?",
                               ((time.time(), r[0]) for r in rows))
        return [r[1] for r in rows]


def _record_values(record: FaceRecord) -> tuple[Any, ...]:
    return tuple(getattr(record, c) for c in _FACE_COLUMNS)


def _job_row(r: sqlite3.Row) -> JobRow:
    return JobRow(
        name=r["name"], path=r["path"], kind=r["kind"], state=r["state"], model=r["model"],
        iteration=r["iteration"], target=r["target"], egs=r["egs"], error=r["error"],
        config=json.loads(r["config"]) if r["config"] else None,
        created_at=r["created_at"], updated_at=r["updated_at"],
    )

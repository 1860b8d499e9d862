"""The state database's tables, and how an older database is brought up to them.

Columns are only ever added (an older swapd's database opens in a newer one, and a read-only
look at an older database still works for what it has).
"""

from __future__ import annotations

import re
import sqlite3

# 2: the faces table; 3: faces.landmarks_from; 4: tracked_faces; 5: losses.components;
# 6: losses.learning_rate/egs, jobs.info, tracker_snapshots.time, controls.args/done_at/result,
#    the sessions, marks, merge_progress and focus_faces tables; 7: faces.centering,
#    tracked_faces.crop and tile, sessions.steps
SCHEMA_VERSION = 7

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    name        TEXT PRIMARY KEY,
    path        TEXT NOT NULL,
    kind        TEXT NOT NULL,            -- train | merge
    state       TEXT NOT NULL,            -- queued | training | paused | waiting | done | error
                                          -- | stopped | interrupted
    model       TEXT,
    iteration   INTEGER NOT NULL DEFAULT 0,
    target      INTEGER NOT NULL DEFAULT 0,
    egs         REAL,                     -- examples per second, both sides, latest
    error       TEXT,
    config      TEXT,                     -- the validated job as JSON
    info        TEXT,                     -- what the worker found out: parameters, options
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
    learning_rate REAL,                  -- the rate this step used
    egs        REAL,                     -- examples per second of this step
    PRIMARY KEY (job, iteration)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (   -- faceswap's Analysis tab: one row per training run
    job             TEXT NOT NULL,
    start           REAL NOT NULL,
    end             REAL NOT NULL,        -- last seen (the session may still be running)
    start_iteration INTEGER NOT NULL,
    end_iteration   INTEGER NOT NULL,
    batch_size      INTEGER NOT NULL,
    examples        INTEGER NOT NULL DEFAULT 0,
    train_seconds   REAL NOT NULL DEFAULT 0,   -- time inside training steps
    steps           INTEGER NOT NULL DEFAULT 0,  -- steps taken (a restore can go back)
    PRIMARY KEY (job, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS marks (      -- moments the loss graph marks: rollbacks, restores
    id         INTEGER PRIMARY KEY,
    job        TEXT NOT NULL,
    time       REAL NOT NULL,
    iteration  INTEGER NOT NULL,          -- where training went back to
    kind       TEXT NOT NULL,             -- rollback | restore
    info       TEXT                       -- JSON: reason, from, learning rate, ...
);
CREATE INDEX IF NOT EXISTS marks_job ON marks (job, time);
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
CREATE TABLE IF NOT EXISTS merge_progress (  -- merges under way
    job        TEXT NOT NULL,
    source     TEXT NOT NULL,             -- workspace-relative footage file
    done       INTEGER NOT NULL,
    total      INTEGER,                   -- frames, when known
    started    REAL NOT NULL,
    updated    REAL NOT NULL,
    PRIMARY KEY (job, source)
) WITHOUT ROWID;
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
    crop       TEXT,                      -- the face as the model saw it
    tile       TEXT,                      -- crop, output (and swap) side by side
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
    time       REAL,                      -- when the snapshot's tracker data was written
    PRIMARY KEY (job, iteration, side)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS focus_faces (  -- faces the trainer draws more often
    job        TEXT NOT NULL,
    side       TEXT NOT NULL,
    face       TEXT NOT NULL,
    added_at   REAL NOT NULL,
    PRIMARY KEY (job, side, face)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS controls (
    id         INTEGER PRIMARY KEY,
    job        TEXT NOT NULL,
    action     TEXT NOT NULL,            -- pause | resume | save | snapshot | export | stop
                                         -- | restore | focus
    created_at REAL NOT NULL,
    taken_at   REAL,                     -- when a worker (or the service) picked it up
    args       TEXT,                     -- JSON, e.g. {"snapshot": 5000} for a restore
    done_at    REAL,
    result     TEXT                      -- what came of it, in words
);
"""

# Columns added since a table was first made: (table, column, declaration).
_ADDED_COLUMNS = (
    ("faces", "landmarks_from", "TEXT"),
    ("faces", "centering", "TEXT"),
    ("faces", "mask_source", "TEXT"),  # xseg | polys | landmarks; NULL: all-face (no landmarks)
    ("tracked_faces", "crop", "TEXT"),
    ("tracked_faces", "tile", "TEXT"),
    ("sessions", "steps", "INTEGER NOT NULL DEFAULT 0"),
    ("losses", "components", "TEXT"),
    ("losses", "learning_rate", "REAL"),
    ("losses", "egs", "REAL"),
    ("jobs", "info", "TEXT"),
    ("tracker_snapshots", "time", "REAL"),
    ("controls", "args", "TEXT"),
    ("controls", "done_at", "REAL"),
    ("controls", "result", "TEXT"),
)


def create_or_migrate(db: sqlite3.Connection) -> None:
    """Make every table, add the columns an older database lacks, record the version.

    Several processes open the database at once (the service, its workers, the CLI, the
    dashboard's controls), so the look at what is missing and the making of it happen under
    one write lock (BEGIN IMMEDIATE): the second opener waits (busy timeout), then finds it
    made, instead of adding a column the first just added ("duplicate column name")."""
    if _up_to_date(db):
        return  # (opening writes nothing then: it must work on a full disk)
    try:
        db.executescript("BEGIN IMMEDIATE;\n" + SCHEMA)
        for table, column, declaration in _ADDED_COLUMNS:
            if column not in columns(db, table):
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                   (str(SCHEMA_VERSION),))
        db.commit()
    except BaseException:
        db.rollback()
        raise


_TABLES_AND_INDEXES = frozenset(re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)",
                                           SCHEMA))


def _up_to_date(db: sqlite3.Connection) -> bool:
    """Whether the database has every table, index and column, and this version recorded (a
    look that takes no write lock)."""
    made = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    if not _TABLES_AND_INDEXES.issubset(made):
        return False
    if any(column not in columns(db, table) for table, column, _ in _ADDED_COLUMNS):
        return False
    recorded = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return recorded is not None and recorded[0] == str(SCHEMA_VERSION)


def columns(db: sqlite3.Connection, table: str) -> set[str]:
    """The columns a table has in this database (a read-only look at an older one may lack
    some)."""
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}

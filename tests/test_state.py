"""The state store: a real SQLite database in WAL mode, shared by several connections."""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from swapd.state import StateStore


def test_jobs_losses_artifacts_problems_controls(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    writer = StateStore(db)
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    writer.upsert_job("j", "jobs/j.toml", "train", "queued", model="lightweight", target=100,
                      config={"x": 1})
    writer.set_job_progress("j", 42, egs=12.5)
    writer.add_losses("j", [(i, float(i), 1.0 / i, 2.0 / i) for i in range(1, 5001)])
    writer.add_artifact("j", "preview", "models/j/previews/latest.png", 42)
    writer.report_problem("faces/b/x.png", "face", "truncated", moved_to="q/x.png")
    writer.report_problem("faces/b/x.png", "face", "truncated")  # repeat: not duplicated
    writer.request_control("j", "pause")

    reader = StateStore(db, readonly=True)
    job = reader.job("j")
    assert job is not None and job.iteration == 42 and job.egs == 12.5 and job.config == {"x": 1}
    thinned = reader.losses("j", max_points=500)
    assert 400 <= len(thinned) <= 501 and thinned[0][0] == 1 and thinned[-1][0] == 5000
    assert reader.latest_artifact("j", "preview").iteration == 42
    assert len(reader.problems()) == 1 and reader.problems()[0].moved_to == "q/x.png"

    # Losses past a checkpoint are forgotten on resume; upsert keeps the iteration.
    writer.truncate_losses("j", 100)
    assert max(it for it, _, _ in reader.losses("j", 100_000)) == 100
    writer.upsert_job("j", "jobs/j.toml", "train", "queued", target=200)
    assert reader.job("j").iteration == 42 and reader.job("j").target == 200

    assert writer.take_controls("j") == ["pause"]
    assert writer.take_controls("j") == []
    writer.clear_problems("faces/b/x.png")
    assert reader.problems() == []
    writer.close()
    reader.close()


def test_losses_export_as_csv(tmp_path: Path) -> None:
    db = tmp_path / "ws" / ".swapd" / "state.db"
    store = StateStore(db)
    store.upsert_job("j", "jobs/j.toml", "train", "training")
    store.add_losses("j", [(i, 1_700_000_000.0 + i, 1.0 / i, 2.0 / i) for i in range(1, 3000)])
    parts = {"a": {"ssim": 0.1, "mae": 0.2, "eyes": 0.3}, "b": {"ssim": 0.4, "mae": 0.5}}
    store.add_losses("j", [(3000, 1_700_003_000.0, 0.6, 0.9, parts)])  # with its components
    store.close()
    out = tmp_path / "losses.csv"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run([sys.executable, "-m", "swapd", "losses", "j", "--workspace",
                             str(tmp_path / "ws"), "--output", str(out)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["iteration", "time", "loss_a", "loss_b", "a_ssim", "a_mae", "a_eyes",
                       "b_ssim", "b_mae"]
    assert len(rows) == 3001  # every iteration, not the dashboard's thinned curve
    assert rows[1] == ["1", "2023-11-14T22:13:21+00:00", "1", "2", "", "", "", "", ""]
    assert rows[-1][4:] == ["0.1", "0.2", "0.3", "0.4", "0.5"]
    missing = subprocess.run([sys.executable, "-m", "swapd", "losses", "nope", "--workspace",
                              str(tmp_path / "ws")], capture_output=True, text=True, timeout=60,
                             env=env)
    assert missing.returncode == 1 and "no job 'nope'" in missing.stderr


def test_a_new_database_another_opener_holds_is_switched_to_wal_once_it_lets_go(
        tmp_path: Path) -> None:
    """Two openers of a new database each switch it to WAL: the one that finds the other
    holding the write lock gets "database is locked" from SQLite at once (not after the busy
    timeout), so the store tries again until the other lets go."""
    db = tmp_path / "state.db"
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # (still the new file's rollback journal: no WAL yet)
    other.execute("CREATE TABLE early (x)")
    letting_go = threading.Timer(0.5, other.execute, ("COMMIT",))
    letting_go.start()
    store = StateStore(db)
    letting_go.join()
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.job("j") is None  # its tables are made
    store.close()
    other.close()


def test_openers_of_an_older_database_bring_it_up_to_date_one_at_a_time(
        tmp_path: Path) -> None:
    """The service and its workers open a database an older swapd made, at once: each sees a
    column missing; one adds it, the others wait, then find it there (not "duplicate column
    name")."""
    from swapd.state.schema import SCHEMA, columns

    db = tmp_path / "state.db"
    older = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    older.execute("PRAGMA journal_mode=WAL")
    older.executescript(SCHEMA)  # the tables as first made: faces.mask_source came later
    assert "mask_source" not in columns(older, "faces")
    older.execute("BEGIN IMMEDIATE")  # a writer at work: the openers meet at its lock
    outcomes: list[str] = []

    def open_store() -> None:
        try:
            StateStore(db).close()
            outcomes.append("opened")
        except sqlite3.Error as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")

    openers = [threading.Thread(target=open_store) for _ in range(3)]
    for opener in openers:
        opener.start()
    time.sleep(1.0)  # (each has looked at the columns and waits for the lock)
    older.execute("COMMIT")
    for opener in openers:
        opener.join(timeout=30)
    assert outcomes == ["opened"] * 3
    assert "mask_source" in columns(older, "faces")
    older.close()

"""The face index: a real workspace, a real SQLite state database, real files dropped, changed,
copied, corrupted and removed; plus `swapd faces list` as a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.daemon.ingest import FaceIngest
from swapd.faces.faceswap_png import read_aligned_png, write_aligned_png
from swapd.state import StateStore
from swapd.workspace import Workspace


def _age(path: Path, seconds: float = 60) -> None:
    """Make a file look settled (written a while ago)."""
    past = time.time() - seconds
    os.utime(path, (past, past))


@pytest.fixture
def indexed(synthetic_sets: dict[str, Path], tmp_path: Path) -> tuple[Workspace, StateStore,
                                                                      FaceIngest]:
    ws = Workspace.open(tmp_path / "ws")
    folder = ws.face_set("alice")
    folder.mkdir(parents=True)
    for png in sorted(synthetic_sets["alice"].glob("*.png"))[:12]:
        shutil.copy2(png, folder / png.name)
        _age(folder / png.name)
    store = StateStore(ws.state_db)
    return ws, store, FaceIngest(ws, store, min_size=64, settle_seconds=1.0)


def test_cold_index_records_every_face(indexed: tuple[Workspace, StateStore, FaceIngest],
                                       synthetic_sets: dict[str, Path]) -> None:
    ws, store, ingest = indexed
    result = ingest.scan()
    assert (result.accepted, result.quarantined, result.unchanged) == (12, 0, 0)
    records = store.faces("alice")
    assert len(records) == 12
    errors = []
    for record in records:
        assert record.status == "ok" and record.kind == "faceswap"
        assert (record.width, record.height, record.channels) == (128, 128, 3)
        assert record.hash is not None and len(record.hash) == 32
        assert record.landmarks is not None and len(record.landmarks) == 68
        assert record.source and record.duplicate_of is None
        _, meta = read_aligned_png(synthetic_sets["alice"] / record.name)
        assert meta is not None and meta.swapd is not None
        errors.append(np.abs(np.array([record.yaw, record.pitch]) - meta.swapd["pose"][:2]))
    print(f"indexed pose MAE vs ground truth (yaw, pitch): {np.mean(errors, axis=0).round(2)}")
    # This identity's narrow face reads as ~25 % more yaw than the mean face (see test_pose).
    assert (np.mean(errors, axis=0) < 10).all()
    assert store.face_sets() == {"alice": {"ok": 12, "quarantined": 0, "duplicates": 0}}


def test_rescan_is_incremental(indexed: tuple[Workspace, StateStore, FaceIngest]) -> None:
    ws, store, ingest = indexed
    ingest.scan()
    folder = ws.face_set("alice")
    victim = sorted(folder.iterdir())[0]
    st = victim.stat()
    # Garbage of the same size with the old mtime: a re-scan that re-read unchanged files
    # would quarantine it; an incremental one does not look.
    victim.write_bytes(b"\0" * st.st_size)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    result = ingest.scan()
    assert (result.accepted, result.quarantined, result.unchanged) == (0, 0, 12)
    assert victim.exists()

    # Touched: now it is read, found corrupt and set aside, with the reason in the index.
    _age(victim, 30)
    result = ingest.scan()
    assert (result.accepted, result.quarantined, result.unchanged) == (0, 1, 11)
    assert not victim.exists()
    moved = ws.quarantine / "alice" / victim.name
    assert moved.exists() and moved.with_name(victim.name + ".reason.txt").exists()
    row = next(r for r in store.faces("alice") if r.name == victim.name)
    assert row.status == "quarantined" and row.moved_to == ws.relative(moved)
    assert "PNG" in (row.reason or "")
    assert any(p.source == f"faces/alice/{victim.name}" for p in store.problems())

    # Moved back as it was (same size and time): it is checked again, not taken as known.
    shutil.move(moved, victim)
    result = ingest.scan()
    assert result.quarantined == 1 and not victim.exists()

    # A removed set folder takes its rows with it.
    shutil.rmtree(folder)
    ingest.scan()
    assert store.faces("alice") == [] and store.face_sets() == {}


def test_duplicates_removals_and_settling(indexed: tuple[Workspace, StateStore,
                                                         FaceIngest]) -> None:
    ws, store, ingest = indexed
    ingest.scan()
    folder = ws.face_set("alice")
    first, second = sorted(folder.iterdir())[:2]
    copy = folder / "zz_copy_of_first.png"
    shutil.copy2(first, copy)
    _age(copy)
    second.unlink()
    fresh = folder / "zz_still_copying.png"
    shutil.copyfile(first, fresh)  # mtime now: may still be being written
    result = ingest.scan()
    assert result.accepted == 1 and result.removed == 1 and result.settling
    rows = {r.name: r for r in store.faces("alice")}
    assert rows[copy.name].duplicate_of == first.name
    assert second.name not in rows and fresh.name not in rows
    assert store.face_sets()["alice"] == {"ok": 12, "quarantined": 0, "duplicates": 1}
    _age(fresh)
    assert ingest.scan().accepted == 1


def test_faces_list_cli(indexed: tuple[Workspace, StateStore, FaceIngest]) -> None:
    ws, store, ingest = indexed
    bad = ws.face_set("alice") / "truncated.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    _age(bad)
    ingest.scan()
    store.close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "swapd", "faces", "list", *args,
                               "--workspace", str(ws.root)], capture_output=True, text=True,
                              timeout=60, env=env)

    text = run("alice")
    assert text.returncode == 0, text.stderr
    assert "alice: 12 ok, 1 quarantined, 0 duplicates" in text.stdout
    assert "alice/truncated.png: QUARANTINED:" in text.stdout and "yaw" in text.stdout
    data = json.loads(run("alice", "--json").stdout)
    assert data["sets"]["alice"]["quarantined"] == 1
    quarantined = [f for f in data["faces"] if f["status"] == "quarantined"]
    assert quarantined[0]["name"] == "truncated.png" and quarantined[0]["reason"]
    assert "landmarks" not in data["faces"][0]
    missing = run("nobody")
    assert missing.returncode == 1 and "indexed sets: alice" in missing.stderr


def test_big_batches_run_in_worker_processes(indexed: tuple[Workspace, StateStore, FaceIngest],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import swapd.daemon.ingest as ingest_module

    ws, store, ingest = indexed
    monkeypatch.setattr(ingest_module, "PROCESS_POOL_FROM", 2)  # this small set counts as big
    monkeypatch.setattr(ingest_module, "ingest_threads", lambda: 2)
    bad = ws.face_set("alice") / "not_square.png"
    cv2.imwrite(str(bad), np.zeros((96, 128, 3), np.uint8))
    _age(bad)
    result = ingest.scan()
    assert (result.accepted, result.quarantined) == (12, 1)
    rows = {r.name: r for r in store.faces("alice")}
    assert rows["not_square.png"].status == "quarantined"
    assert "not square (128x96)" in (rows["not_square.png"].reason or "")
    assert all(r.hash and r.yaw is not None for r in rows.values() if r.status == "ok")


def test_faces_without_landmarks_get_them_from_the_detector(
        indexed: tuple[Workspace, StateStore, FaceIngest]) -> None:
    """Plain images and faceswap's own PNGs are indexed with the detector's landmarks (and a
    pose from them); an image without a face is kept, unaligned."""
    ws, store, ingest = indexed
    folder = ws.face_set("alice")
    first = sorted(folder.glob("*.png"))[0]
    image, meta = read_aligned_png(first)
    assert meta is not None and meta.swapd is not None
    cv2.imwrite(str(folder / "plain.jpg"), image)
    cv2.imwrite(str(folder / "blank.png"), np.full((128, 128, 3), 90, np.uint8))
    meta.swapd = None  # as faceswap writes it: frame landmarks only
    write_aligned_png(folder / "faceswap.png", image, meta)
    for name in ("plain.jpg", "blank.png", "faceswap.png"):
        _age(folder / name)
    ingest.scan()
    rows = {r.name: r for r in store.faces("alice")}
    assert rows[first.name].landmarks_from == "file"
    plain, blank, faceswap = rows["plain.jpg"], rows["blank.png"], rows["faceswap.png"]
    assert plain.status == "ok" and plain.landmarks_from == "detected:mtcnn"
    assert plain.landmarks is not None and len(plain.landmarks) == 5 and plain.yaw is not None
    assert faceswap.landmarks_from == "mapped:mtcnn" and len(faceswap.landmarks or []) == 68
    assert blank.status == "ok" and blank.landmarks is None and blank.landmarks_from is None
    assert abs(plain.yaw - rows[first.name].yaw) < 8, (plain.yaw, rows[first.name].yaw)

    listing = subprocess.run([sys.executable, "-m", "swapd", "faces", "list", "alice",
                              "--workspace", str(ws.root)], capture_output=True, text=True,
                             timeout=60, env={**os.environ,
                                              "PYTHONPATH": str(Path(__file__).parents[1])})
    assert listing.returncode == 0, listing.stderr
    assert "blank.png: plain" in listing.stdout and "unaligned" in listing.stdout
    assert "landmarks detected:mtcnn" in listing.stdout


def test_an_older_database_gains_the_new_column(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "state.db"
    old = sqlite3.connect(db)
    old.execute("CREATE TABLE faces (set_name TEXT NOT NULL, name TEXT NOT NULL, status TEXT "
                "NOT NULL, reason TEXT, moved_to TEXT, size INTEGER NOT NULL, mtime_ns INTEGER "
                "NOT NULL, hash TEXT, kind TEXT, width INTEGER, height INTEGER, channels "
                "INTEGER, landmarks TEXT, yaw REAL, pitch REAL, roll REAL, source TEXT, "
                "duplicate_of TEXT, first_seen REAL NOT NULL, checked_at REAL NOT NULL, "
                "PRIMARY KEY (set_name, name)) WITHOUT ROWID")
    old.execute("INSERT INTO faces (set_name, name, status, size, mtime_ns, first_seen, "
                "checked_at) VALUES ('a', 'x.png', 'ok', 1, 2, 0, 0)")
    old.commit()
    old.close()
    assert StateStore(db, readonly=True).faces("a")[0].landmarks_from is None
    store = StateStore(db)
    assert store.faces("a")[0].name == "x.png"
    columns = {row[1] for row in store._db.execute("PRAGMA table_info(faces)")}
    assert "landmarks_from" in columns

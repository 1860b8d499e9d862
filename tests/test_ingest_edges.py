"""Odd files in face sets: a name that is not UTF-8 is one bad file (set aside with a reason,
the rest of its set scanned, nothing added at rescans), a file outside the workspace is never
moved, and a reason never quotes a file's contents."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swapd.cli import main
from swapd.daemon.ingest import FaceIngest
from swapd.state import StateStore
from swapd.workspace import Workspace
from tests.support import write_faces

ODD = b"caf\xe9.png"  # Latin-1, as an old camera or a Windows copy names it
SHOWN = "caf\\xe9.png"  # how swapd writes that name


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "ws")


def _ingest(ws: Workspace) -> tuple[FaceIngest, StateStore]:
    store = StateStore(ws.state_db)
    return FaceIngest(ws, store, min_size=32, settle_seconds=0, landmark_detector="none"), store


def _quarantine(ws: Workspace, set_name: str) -> list[str]:
    folder = ws.quarantine / set_name
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def test_a_name_that_is_not_utf8_is_one_bad_file(ws: Workspace,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = ws.faces / "alice"
    good = write_faces(folder, "a", 3)
    with open(os.fsencode(folder) + b"/" + ODD, "wb") as fh:
        fh.write(good[0].read_bytes())  # a good face, but its name cannot be stored
    (folder / "notes.png").write_bytes(b"my notes\n")  # another bad file of the same set
    ingest, store = _ingest(ws)
    for _ in range(4):  # the first scan, then rescans that must add nothing
        ingest.scan()
    assert store.face_sets()["alice"]["ok"] == 3
    assert store.face_sets()["alice"]["quarantined"] == 2
    assert _quarantine(ws, "alice") == sorted(
        [SHOWN, f"{SHOWN}.reason.txt", "notes.png", "notes.png.reason.txt"])
    for note in (ws.quarantine / "alice").glob("*.reason.txt"):
        assert note.read_text(encoding="utf-8").strip(), f"{note.name} is empty"
    problems = {p.source: p for p in store.problems()}
    assert set(problems) == {f"faces/alice/{SHOWN}", "faces/alice/notes.png"}
    assert "not valid UTF-8" in problems[f"faces/alice/{SHOWN}"].message
    assert problems[f"faces/alice/{SHOWN}"].moved_to == f".swapd/quarantine/alice/{SHOWN}"
    store.close()
    assert main(["status", "--workspace", str(ws.root)]) == 0
    shown = capsys.readouterr().out
    assert f"faces/alice/{SHOWN}: its name is not valid UTF-8" in shown


def test_a_set_that_cannot_be_scanned_says_so_in_status(ws: Workspace,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    os.mkdir(os.fsencode(ws.faces) + b"/b\xf6b")
    write_faces(ws.faces / "alice", "a", 2)
    ingest, store = _ingest(ws)
    ingest.scan()
    assert store.face_sets()["alice"]["ok"] == 2  # the other sets are scanned
    store.close()
    assert main(["status", "--workspace", str(ws.root)]) == 0
    assert "faces/b\\xf6b: could not be scanned" in capsys.readouterr().out


def test_a_file_outside_the_workspace_is_never_moved(ws: Workspace, tmp_path: Path) -> None:
    mine = tmp_path / "my faces"
    write_faces(mine, "a", 3)
    broken = mine / "broken.png"
    broken.write_bytes(b"half a png")
    (ws.faces / "linked").symlink_to(mine, target_is_directory=True)
    ingest, store = _ingest(ws)
    for _ in range(3):
        ingest.scan()
    assert broken.read_bytes() == b"half a png", "the user's file stays where it is"
    assert _quarantine(ws, "linked") == []
    row = store.face("linked", "broken.png")
    assert row is not None and row.status == "quarantined" and row.moved_to is None
    assert store.face_sets()["linked"]["ok"] == 3
    (problem,) = store.problems()
    assert problem.source == "faces/linked/broken.png" and problem.moved_to is None
    assert "left where it is" in problem.message
    store.close()


def test_a_reason_never_quotes_the_file(ws: Workspace, tmp_path: Path) -> None:
    secret = tmp_path / "passwd"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    write_faces(ws.faces / "alice", "a", 2)
    (ws.faces / "alice" / "face.png").symlink_to(secret)
    ingest, store = _ingest(ws)
    ingest.scan()
    (problem,) = store.problems()
    assert problem.source == "faces/alice/face.png", "the link's path, not its target's"
    assert problem.moved_to == ".swapd/quarantine/alice/face.png"
    note = (ws.quarantine / "alice" / "face.png.reason.txt").read_text()
    for text in (problem.message, note, store.face("alice", "face.png").reason):
        assert "root:x" not in text and "not an image" in text
    assert secret.read_bytes().startswith(b"root:"), "the link was set aside, not its target"
    assert (ws.quarantine / "alice" / "face.png").is_symlink()
    store.close()

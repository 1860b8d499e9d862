"""Footage without a face is merged (marked, unchanged) and says so: how many frames had no face,
in the merge's result, the service's record of the output and event log, and `swapd merge`."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import pytest

from swapd.cli import main
from swapd.daemon.merge_worker import run as merge_worker
from swapd.daemon.workers import EXIT_OK
from swapd.demo.identity import DEMO_A
from swapd.demo.painter import make_background, render_face
from swapd.merger.merge import merge_file
from swapd.merger.video import VideoWriter
from swapd.state import StateStore
from swapd.workspace import Workspace
from tests.test_merger import export_model

SIZE = (320, 240)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(tmp_path_factory.mktemp("model") / "invert.onnx")


@pytest.fixture
def room(tmp_path: Path) -> Path:
    path = tmp_path / "room.png"
    cv2.imwrite(str(path), make_background(SIZE, 8))
    return path


def test_an_image_and_a_clip_without_a_face_are_counted(tmp_path: Path, model: Path,
                                                        room: Path) -> None:
    result = merge_file(room, tmp_path / "out", model)
    assert (result.frames, result.faces_swapped, result.frames_without_face) == (1, 0, 1)
    clip = tmp_path / "empty.mp4"
    with VideoWriter(clip, *SIZE, Fraction(25)) as writer:
        for _ in range(6):
            writer.write(make_background(SIZE, 8))
    result = merge_file(clip, tmp_path / "out", model)
    assert (result.frames, result.frames_without_face) == (6, 6)


def test_the_service_and_the_command_say_it(tmp_path: Path, model: Path, room: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    ws = Workspace.open(tmp_path / "ws")
    source = ws.footage / "job" / "room.png"
    source.parent.mkdir(parents=True)
    source.write_bytes(room.read_bytes())
    assert merge_worker(ws, "job", source, model, ws.output / "job", "all", "cpu") == EXIT_OK
    store = StateStore(ws.state_db)
    merged = store.latest_artifact("job", "merge")
    assert merged is not None and merged.info["frames_without_face"] == 1
    warnings = [m for _, _, level, m in store.events(20, "job") if level == "warning"]
    assert any("room_swapd.png: no face found" in m for m in warnings), warnings
    store.close()
    assert main(["merge", str(room), "--model", str(model), "--output",
                 str(tmp_path / "cli")]) == 0
    assert "no face found" in capsys.readouterr().err


def test_a_frame_with_a_face_is_not_counted(tmp_path: Path, model: Path) -> None:
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), render_face(DEMO_A, face_height_px=150, background=1).image)
    result = merge_file(path, tmp_path / "out", model)
    assert result.faces_swapped == 1 and result.frames_without_face == 0

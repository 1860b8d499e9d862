"""One face reader: ingest and the trainer read a face file alike, and the trainer reads the
face index ingest built instead of the files' headers (file -> index -> cache -> batch)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import swapd.trainer.data as data
from swapd.daemon.ingest import FaceIngest
from swapd.daemon.train_worker import indexed_faces
from swapd.faces.dfl_jpg import DFLMeta, encode_dfl_jpg
from swapd.faces.faceswap_png import read_aligned_png, write_aligned_png
from swapd.faces.validate import BadFaceError, inspect_face_file
from swapd.state import StateStore
from swapd.trainer.data import FaceSet, FoundLandmarks
from swapd.workspace import Workspace


def _settled(folder: Path) -> None:
    past = time.time() - 60
    for path in folder.iterdir():
        os.utime(path, (past, past))


def _mixed_set(synthetic_sets: dict[str, Path], folder: Path) -> None:
    """swapd's own PNGs, faceswap's (head-centred, landmarks in the frame only) and
    DeepFaceLab's JPGs (whole_face, cut from their own landmarks)."""
    folder.mkdir(parents=True)
    pngs = sorted(synthetic_sets["alice"].glob("*.png"))
    for png in pngs[:3]:
        shutil.copy2(png, folder / png.name)
    for png in pngs[3:5]:
        image, meta = read_aligned_png(png)
        assert meta is not None and meta.swapd is not None
        meta.swapd = None  # as faceswap writes it
        write_aligned_png(folder / f"fs_{png.name}", image, meta)
    for png in pngs[5:7]:
        image, meta = read_aligned_png(png)
        assert meta is not None and meta.swapd is not None
        landmarks = np.asarray(meta.swapd["aligned_landmarks"], np.float32)
        (folder / f"dfl_{png.stem}.jpg").write_bytes(encode_dfl_jpg(
            image, DFLMeta(face_type="whole_face", landmarks=landmarks), quality=98))
    _settled(folder)


@pytest.fixture
def indexed_set(synthetic_sets: dict[str, Path], tmp_path: Path
                ) -> tuple[Workspace, StateStore, Path]:
    ws = Workspace.open(tmp_path / "ws")
    folder = ws.face_set("mixed")
    _mixed_set(synthetic_sets, folder)
    store = StateStore(ws.state_db)
    result = FaceIngest(ws, store, min_size=64, settle_seconds=1.0).scan()
    assert (result.accepted, result.quarantined) == (7, 0)
    return ws, store, folder


def test_the_trainer_cuts_from_the_index_the_faces_it_cuts_from_the_files(
        indexed_set: tuple[Workspace, StateStore, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    ws, store, folder = indexed_set
    from_files = FaceSet(folder, 64, 0.875, centering="face", find_landmarks=FoundLandmarks())
    assert from_files.without_landmarks == 0  # faceswap's got theirs from the detector

    def no_header(*args: object, **kwargs: object) -> None:
        raise AssertionError("the trainer read a file's header the index holds")

    monkeypatch.setattr(data, "inspect_face_bytes", no_header)
    held = indexed_faces(store, ws, folder)
    assert sorted(held) == sorted(p.name for p in folder.iterdir())
    assert {held[n][1].centering for n in held if n.startswith("fs_")} == {"head"}
    assert all(held[n][1].realign for n in held if n.startswith("dfl_"))
    from_index = FaceSet(folder, 64, 0.875, centering="face", index=lambda _: held,
                         find_landmarks=lambda *_: pytest.fail("a second landmark search"))
    assert from_index.paths == from_files.paths and from_index.without_landmarks == 0
    np.testing.assert_array_equal(from_index.poses(), from_files.poses())  # one pose estimate
    # The index keeps landmarks to 0.01 px: the crops and masks cut from them barely move.
    diff = np.abs(from_index.faces.astype(int) - from_files.faces.astype(int)).mean()
    inside_index, inside_files = from_index.masks[..., 0] > 127, from_files.masks[..., 0] > 127
    iou = (inside_index & inside_files).sum() / (inside_index | inside_files).sum()
    print(f"index vs files: crops differ by {diff:.3f} levels, face masks IoU {iou:.4f}")
    assert diff < 0.5 and iou > 0.99
    store.close()


def test_a_file_the_index_does_not_hold_as_it_is_now_is_read(
        indexed_set: tuple[Workspace, StateStore, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    ws, store, folder = indexed_set
    changed = sorted(folder.glob("*.png"))[0]
    os.utime(changed)  # changed since ingest read it: its row no longer covers it
    read = []
    reader = data.inspect_face_bytes

    def counted(path: Path, *args: object, **kwargs: object) -> object:
        read.append(path.name)
        return reader(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(data, "inspect_face_bytes", counted)
    face_set = FaceSet(folder, 64, index=lambda f: indexed_faces(store, ws, f))
    assert read == [changed.name] and len(face_set) == 7
    # A folder outside the workspace's faces/ has no index: every file is read.
    outside = ws.root / "elsewhere"
    shutil.copytree(folder, outside)
    read.clear()
    FaceSet(outside, 64, index=lambda f: indexed_faces(store, ws, f))
    assert len(read) == 7
    store.close()


def test_the_trainer_skips_what_ingest_sets_aside_for_the_same_reason(
        synthetic_sets: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    png = sorted(synthetic_sets["alice"].glob("*.png"))[0]
    image, meta = read_aligned_png(png)
    assert meta is not None
    header = meta.to_dict()
    header["source"]["source_is_video"] = "perhaps"  # not what faceswap's header allows
    write_aligned_png(folder / "odd.png", image, header)
    cv2.imwrite(str(folder / "plain.png"), image)
    with pytest.raises(BadFaceError) as refused:
        inspect_face_file(folder / "odd.png")
    face_set = FaceSet(folder, 64)
    assert [p.name for p in face_set.paths] == ["plain.png"]
    assert face_set.skipped == {folder / "odd.png": refused.value.reason}


def test_the_training_worker_trains_from_the_index(synthetic_sets: dict[str, Path],
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from swapd.config import load_job_file
    from swapd.daemon.train_worker import TrainingRun
    from tests.support import TINY_JOB

    ws = Workspace.open(tmp_path / "ws")
    for name in ("alice", "bob"):
        shutil.copytree(synthetic_sets[name], ws.face_set(name))
        _settled(ws.face_set(name))
    store = StateStore(ws.state_db)
    assert FaceIngest(ws, store, min_size=64, settle_seconds=1.0).scan().accepted == 96
    job_path = ws.jobs / "tiny.toml"
    job_path.write_text(TINY_JOB.format(iterations=10, save_every=5))
    monkeypatch.setattr(data, "inspect_face_bytes",
                        lambda *_, **__: pytest.fail("the worker's trainer read a header"))
    run = TrainingRun(ws, "tiny", load_job_file(job_path), store)
    try:
        assert (len(run.trainer.set_a), len(run.trainer.set_b)) == (48, 48)
        assert run.trainer.set_a.without_landmarks == 0
        run.driver.step()
    finally:
        run.close()
        store.close()

"""DeepFaceLab both ways: swapd writes aligned JPGs DeepFaceLab reads (its DFLJPG.load and
get_transform_mat, re-derived in tests/dfl_reference.py), and trains with the masks its users
made (xseg_mask, else seg_ie_polys) in place of the landmark hull."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.extract.extract import extract
from swapd.faces import dfl_align
from swapd.faces.dfl_jpg import DFLMeta, encode_dfl_jpg
from swapd.faces.landmarks import MEAN_FACE_2D_68
from swapd.faces.masks import FACE
from swapd.faces.validate import BadFaceError, inspect_face_file
from swapd.trainer.data import FaceSet
from swapd.trainer.preview import MASK_TINT, MASK_TINTS, overlay_mask
from tests import dfl_reference as dfl
from tests.support import write_clip_frames

# iperov/DeepFaceLab 46fc2397c582b9fc375a023418257924112e292b, facelib/LandmarksProcessor.py
UPSTREAM_MEAN_FACE_DIGEST = "5acc9af56975693d"  # landmarks_2D_new (float32)


@pytest.fixture(scope="module")
def frames(synthetic_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dfl_frames")
    write_clip_frames(synthetic_clip, folder,
                      lambda i: f"frame_{i:02d}.png" if i % 12 == 0 else None, 50)
    return folder


def test_deepfacelabs_constants() -> None:
    data = np.ascontiguousarray(dfl_align.MEAN_FACE_33, np.float32).tobytes()
    assert hashlib.sha256(data).hexdigest()[:16] == UPSTREAM_MEAN_FACE_DIGEST
    assert dfl_align.PADDING == dfl.PADDING


@pytest.mark.parametrize("face_type", ["whole_face", "full_face", "head"])
def test_deepfacelab_reads_what_swapd_extracts(frames: Path, tmp_path: Path,
                                               face_type: str) -> None:
    out = tmp_path / face_type
    report = extract(frames, out, size=192, face_format="dfl", face_type=face_type)
    jpgs = sorted(out.glob("*.jpg"))
    assert report.faces == len(jpgs) == 5 and not list(out.glob("*.png"))
    assert len(report.alignments) == 1  # swapd's record only: the .fsa is faceswap's
    for jpg in jpgs:
        meta, shape = dfl.dfljpg_load(jpg.read_bytes())
        assert shape == (192, 192, 3)
        assert meta["face_type"] == face_type and face_type in dfl.FACE_TYPES
        assert meta["source_filename"] == jpg.name.rsplit("_", 1)[0] + ".png"
        source = np.asarray(meta["source_landmarks"], np.float64)
        assert source.shape == (68, 2) and len(meta["source_rect"]) == 4
        expected = dfl.transform_mat(source, 192, face_type)
        assert np.abs(np.asarray(meta["image_to_face_mat"]) - expected).max() < 1e-2
        moved = cv2.transform(source[:, None, :], expected)[:, 0]
        assert np.abs(np.asarray(meta["landmarks"]) - moved).max() < 0.05
        info = inspect_face_file(jpg)
        assert info.kind == "deepfacelab" and info.dfl is not None
        assert info.dfl.face_type == face_type and info.recut_from_landmarks
    face_set = FaceSet(out, 64, coverage=0.875, centering="face")
    assert len(face_set) == 5 and face_set.without_landmarks == 0


def _face(folder: Path, name: str, fields: dict) -> Path:
    """A DeepFaceLab whole_face JPG of a plain grey square with a face's landmarks."""
    rng = np.random.default_rng(1)
    image = rng.integers(90, 110, (128, 128, 3), np.uint8)
    points = (MEAN_FACE_2D_68 * 70 + 29).astype(np.float32)
    path = folder / name
    path.write_bytes(encode_dfl_jpg(image, {"face_type": "whole_face", "landmarks": points,
                                            **fields}))
    return path


def _xseg(side: int = 256) -> np.ndarray:
    """A left-half XSeg mask, PNG-encoded as DFLJPG.set_xseg_mask stores it."""
    mask = np.zeros((side, side), np.uint8)
    mask[:, : side // 2] = 255
    return cv2.imencode(".png", mask)[1]


POLYS = {"polys": [{"type": 1, "pts": np.float32([[10, 10], [118, 10], [118, 118], [10, 118]])},
                   {"type": 0, "pts": np.float32([[50, 50], [78, 50], [78, 78], [50, 78]])}]}


def test_a_deepfacelab_users_mask_is_the_training_mask(tmp_path: Path) -> None:
    folder = tmp_path / "dst"
    folder.mkdir()
    _face(folder, "hull.jpg", {})
    _face(folder, "xseg.jpg", {"xseg_mask": _xseg()})
    _face(folder, "polys.jpg", {"seg_ie_polys": POLYS})
    _face(folder, "both.jpg", {"xseg_mask": _xseg(), "seg_ie_polys": POLYS})
    _face(folder, "old_polys.jpg", {"seg_ie_polys": [(1, [[10, 10], [118, 10], [118, 118]])]})
    assert inspect_face_file(folder / "xseg.jpg").mask_source == "xseg"
    assert inspect_face_file(folder / "hull.jpg").mask_source == "landmarks"
    # the face index leaves a face with its own mask to the trainer, which reads the file
    assert inspect_face_file(folder / "xseg.jpg").centering is None
    assert inspect_face_file(folder / "hull.jpg").centering == "face"
    face_set = FaceSet(folder, 64, coverage=1.0, centering="face")
    sources = dict(zip((p.name for p in face_set.paths), face_set.mask_sources(), strict=True))
    assert sources == {"both.jpg": "xseg", "hull.jpg": "landmarks", "old_polys.jpg": "polys",
                       "polys.jpg": "polys", "xseg.jpg": "xseg"}
    masks = {p.name: face_set.masks[i, ..., FACE] > 127 for i, p in enumerate(face_set.paths)}
    # the XSeg mask keeps (about) the left half of the face; the hull is symmetric
    xseg = masks["xseg.jpg"]
    assert xseg[:, :24].mean() > 0.9 and xseg[:, 40:].mean() < 0.1
    assert np.array_equal(masks["both.jpg"], xseg)
    hull = masks["hull.jpg"]
    assert abs(hull[:, :32].mean() - hull[:, 32:].mean()) < 0.05
    # the polygons: a square with a hole in the middle
    polys = masks["polys.jpg"]
    assert polys[32, 32] == 0 and polys[15, 15] and not np.array_equal(polys, hull)


def test_a_broken_mask_is_the_files_fault(tmp_path: Path) -> None:
    folder = tmp_path / "dst"
    folder.mkdir()
    bad = _face(folder, "bad.jpg", {"xseg_mask": np.frombuffer(b"\x89PNG\r\n\x1a\n" + b"\0" * 8
                                                                + b"\0\1\0\0\0\1\0\0", np.uint8)})
    odd = _face(folder, "odd.jpg", {"seg_ie_polys": {"polys": [{"type": 7, "pts": [[1, 2]]}]}})
    with pytest.raises(BadFaceError, match="xseg_mask claims 65536x65536") as refused:
        inspect_face_file(bad)
    assert str(bad) in str(refused.value)
    with pytest.raises(BadFaceError, match="type 7"):
        inspect_face_file(odd)
    face_set = FaceSet(folder, 64, coverage=1.0)
    assert len(face_set) == 0 and face_set.skipped[bad] == refused.value.reason


def test_the_preview_and_the_index_show_the_mask(tmp_path: Path) -> None:
    from swapd.daemon.ingest import index_record

    faces = np.full((2, 8, 8, 3), 200, np.uint8)
    masks = np.zeros((2, 8, 8), np.uint8)
    shown = overlay_mask(faces, masks, ["xseg", "landmarks"])
    assert shown[0, 0, 0, 0] > shown[0, 0, 0, 2]  # blue outside an XSeg mask
    assert shown[1, 0, 0, 2] > shown[1, 0, 0, 0]  # red outside the hull, as before
    assert MASK_TINTS["xseg"] != MASK_TINT
    folder = tmp_path / "set"
    folder.mkdir()
    path = _face(folder, "x.jpg", {"xseg_mask": _xseg()})
    record = index_record("set", (path, path.stat().st_size, path.stat().st_mtime_ns), 0.0, 64)
    assert not isinstance(record, Exception) and record.mask_source == "xseg"


def test_dfl_metadata_stays_plain_data(tmp_path: Path) -> None:
    """What swapd pickles into a DFL JPG is plain data and arrays: DeepFaceLab's own
    pickle.loads and swapd's restricted reader both take it."""
    meta = DFLMeta(face_type="head", landmarks=np.zeros((68, 2), np.float32),
                   source_filename="00001.png", source_rect=(1, 2, 3, 4))
    data = encode_dfl_jpg(np.zeros((64, 64, 3), np.uint8), meta)
    loaded, _ = dfl.dfljpg_load(data)
    assert pickle.loads(pickle.dumps(loaded))["face_type"] == "head"

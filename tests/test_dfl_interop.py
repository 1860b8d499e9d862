"""swapd writes aligned JPGs DeepFaceLab reads (its DFLJPG.load and get_transform_mat,
re-derived in tests/dfl_reference.py)."""

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
from swapd.faces.validate import inspect_face_file
from swapd.trainer.data import FaceSet
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


def test_dfl_metadata_stays_plain_data(tmp_path: Path) -> None:
    """What swapd pickles into a DFL JPG is plain data and arrays: DeepFaceLab's own
    pickle.loads and swapd's restricted reader both take it."""
    meta = DFLMeta(face_type="head", landmarks=np.zeros((68, 2), np.float32),
                   source_filename="00001.png", source_rect=(1, 2, 3, 4))
    data = encode_dfl_jpg(np.zeros((64, 64, 3), np.uint8), meta)
    loaded, _ = dfl.dfljpg_load(data)
    assert pickle.loads(pickle.dumps(loaded))["face_type"] == "head"

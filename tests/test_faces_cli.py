"""Pose against the generator's ground truth; `swapd faces inspect` and `swapd faces import`
run as real processes on faceswap PNGs, DeepFaceLab JPGs, plain and grayscale faces."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.demo.face_sets import random_view
from swapd.demo.identity import DEMO_A, DEMO_B, make_identity
from swapd.demo.painter import render_face
from swapd.faces.dfl_jpg import DFLMeta, encode_dfl_jpg
from swapd.faces.faceswap_png import read_aligned_png, write_aligned_png
from swapd.faces.landmarks import five_points
from swapd.faces.pose import estimate_pose


def swapd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swapd", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})


def test_pose_matches_the_generator() -> None:
    rng = np.random.default_rng(4)
    errors_68, errors_5 = [], []
    for i in range(45):
        identity = (DEMO_A, DEMO_B, make_identity(500 + i, "other"))[i % 3]
        face = render_face(identity, frame_size=(640, 480),
                           face_height_px=float(rng.uniform(120, 300)), **random_view(rng))
        truth = np.array(face.pose)
        errors_68.append(np.abs(np.array(estimate_pose(face.landmarks).as_tuple()) - truth))
        errors_5.append(np.abs(np.array(estimate_pose(five_points(face.landmarks)).as_tuple())
                               - truth))
    mae_68, mae_5 = np.mean(errors_68, axis=0), np.mean(errors_5, axis=0)
    print(f"pose MAE (yaw, pitch, roll) over 45 faces, yaw ±35°, pitch ±18°, roll ±15°: "
          f"68 points {np.round(mae_68, 2)} deg, 5 points {np.round(mae_5, 2)} deg")
    assert (mae_68 < [5, 5, 1.5]).all()
    assert (mae_5 < [6, 7, 2]).all()


def _dfl_copy(png: Path, out: Path, grayscale: bool = False) -> Path:
    image, meta = read_aligned_png(png)
    assert meta is not None and meta.swapd is not None
    if grayscale:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    dfl = DFLMeta(face_type="whole_face",
                  landmarks=np.asarray(meta.swapd["aligned_landmarks"], np.float32),
                  source_filename=meta.source_filename, source_landmarks=meta.landmarks_xy)
    out.write_bytes(encode_dfl_jpg(image, dfl))
    return out


def test_inspect_faceswap_dfl_plain_and_grayscale(synthetic_sets: dict[str, Path],
                                                   tmp_path: Path) -> None:
    png = sorted(synthetic_sets["alice"].glob("*.png"))[0]
    _, meta = read_aligned_png(png)
    assert meta is not None and meta.swapd is not None
    truth = np.array(meta.swapd["pose"])

    result = swapd("faces", "inspect", str(png), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["format"] == "faceswap_png" and info["status"] == "aligned"
    assert (info["width"], info["height"], info["channels"]) == (128, 128, 3)
    assert len(info["landmarks"]) == 68 and len(info["landmarks"][0]) == 2
    assert info["source_filename"] == meta.source_filename
    pose = np.array([info["pose"][k] for k in ("yaw", "pitch")])
    assert np.abs(pose - truth[:2]).max() < 10

    jpg = _dfl_copy(png, tmp_path / "dfl_face.jpg")
    info = json.loads(swapd("faces", "inspect", str(jpg), "--json").stdout)
    assert info["format"] == "dfl_jpg" and info["face_type"] == "whole_face"
    assert len(info["landmarks"]) == 68 and info["pose"] is not None

    gray = _dfl_copy(png, tmp_path / "dfl_gray.jpg", grayscale=True)
    info = json.loads(swapd("faces", "inspect", str(gray), "--json").stdout)
    assert info["channels"] == 1 and info["grayscale"] is True

    # A plain image: MTCNN finds its five landmarks, unless told not to look.
    plain = tmp_path / "plain.png"
    cv2.imwrite(str(plain), cv2.imread(str(png)))
    info = json.loads(swapd("faces", "inspect", str(plain), "--json").stdout)
    assert info["format"] == "png" and info["status"] == "aligned"
    assert info["landmarks_from"] == "detected:mtcnn" and len(info["landmarks"]) == 5
    truth5 = five_points(np.array(meta.swapd["aligned_landmarks"]))
    eyes = np.linalg.norm(truth5[0] - truth5[1])
    assert np.linalg.norm(np.array(info["landmarks"]) - truth5, axis=1).mean() / eyes < 0.15
    info = json.loads(swapd("faces", "inspect", str(plain), "--json", "--detector", "none").stdout)
    assert info["status"] == "unaligned"
    assert info["landmarks"] is None and info["pose"] is None
    # No face in it at all: accepted, unaligned.
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((128, 128, 3), 90, np.uint8))
    info = json.loads(swapd("faces", "inspect", str(blank), "--json").stdout)
    assert info["status"] == "unaligned" and info["landmarks_from"] is None

    text = swapd("faces", "inspect", str(png))
    assert text.returncode == 0 and "68 points" in text.stdout and "yaw" in text.stdout


def test_faceswap_faces_get_their_68_landmarks_mapped_into_the_image(
        synthetic_sets: dict[str, Path], tmp_path: Path) -> None:
    """faceswap's own PNGs carry frame landmarks only: the detector's five points place all 68
    in the aligned image (ground truth: the generator's)."""
    errors = []
    for k, png in enumerate(sorted(synthetic_sets["alice"].glob("*.png"))[:6]):
        image, meta = read_aligned_png(png)
        assert meta is not None and meta.swapd is not None
        truth = np.array(meta.swapd["aligned_landmarks"])
        meta.swapd = None  # as faceswap writes it
        face = write_aligned_png(tmp_path / f"faceswap_{k}.png", image, meta)
        info = json.loads(swapd("faces", "inspect", str(face), "--json").stdout)
        assert info["format"] == "faceswap_png" and info["landmarks_from"] == "mapped:mtcnn"
        found = np.array(info["landmarks"])
        assert found.shape == (68, 2)
        eyes = np.linalg.norm(truth[36:42].mean(axis=0) - truth[42:48].mean(axis=0))
        errors.append(np.linalg.norm(found - truth, axis=1).mean() / eyes)
    print(f"faceswap faces, 68 landmarks mapped by MTCNN's five: NME {np.mean(errors):.3f}")
    assert np.mean(errors) < 0.08


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_inspect_refuses_hostile_and_corrupt_files(synthetic_sets: dict[str, Path],
                                                   tmp_path: Path) -> None:
    png = sorted(synthetic_sets["alice"].glob("*.png"))[0]
    image, _ = read_aligned_png(png)
    marker = tmp_path / "PWNED"
    hostile = tmp_path / "hostile.jpg"
    hostile.write_bytes(encode_dfl_jpg(image, {"face_type": "whole_face",
                                               "landmarks": np.zeros((68, 2), np.float32),
                                               "seg_ie_polys": _Hostile(marker)}))
    assert pickle.dumps(_Hostile(marker))  # the payload really is a working pickle
    result = swapd("faces", "inspect", str(hostile), "--json")
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert str(hostile) in result.stderr and "refused global" in result.stderr
    assert not marker.exists()

    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(png.read_bytes()[:500])
    result = swapd("faces", "inspect", str(corrupt))
    assert result.returncode == 2 and str(corrupt) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_import_copies_usable_faces_and_reports_the_rest(synthetic_sets: dict[str, Path],
                                                         tmp_path: Path) -> None:
    source = tmp_path / "from_dfl"
    source.mkdir()
    pngs = sorted(synthetic_sets["bob"].glob("*.png"))[:3]
    for png in pngs:
        (source / png.name).write_bytes(png.read_bytes())
    for png in pngs[:2]:
        _dfl_copy(png, source / f"{png.stem}.jpg")
    (source / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (source / "notes.txt").write_text("not an image")
    workspace = tmp_path / "ws"

    result = swapd("faces", "import", str(source), "--set", "bob", "--workspace", str(workspace))
    assert result.returncode == 1, result.stderr  # some files were skipped
    assert "2 deepfacelab, 3 faceswap" in result.stdout and "1 skipped" in result.stdout
    assert "broken.jpg" in result.stderr
    imported = sorted(p.name for p in (workspace / "faces" / "bob").iterdir())
    assert imported == sorted([p.name for p in pngs] + [f"{p.stem}.jpg" for p in pngs[:2]])
    assert (source / "broken.jpg").exists()  # the user's originals stay untouched

    (source / "broken.jpg").unlink()
    again = swapd("faces", "import", str(source), "--set", "bob", "--workspace", str(workspace))
    assert again.returncode == 0 and "5 already there" in again.stdout

    missing = swapd("faces", "import", str(tmp_path / "nope"), "--set", "x",
                    "--workspace", str(workspace))
    assert missing.returncode == 2 and "not a folder" in missing.stderr
    climbing = swapd("faces", "import", str(source), "--set", "../models",
                     "--workspace", str(workspace))
    assert climbing.returncode == 2 and "plain folder name" in climbing.stderr

    # A different face under a name the set already has is never overwritten.
    other = sorted(synthetic_sets["alice"].glob("*.png"))[0]
    (source / pngs[0].name).write_bytes(other.read_bytes())
    clash = swapd("faces", "import", str(source), "--set", "bob", "--workspace", str(workspace))
    assert clash.returncode == 1 and "already in" in clash.stderr
    assert (workspace / "faces" / "bob" / pngs[0].name).read_bytes() == pngs[0].read_bytes()


@pytest.mark.parametrize("kind", ["dfl", "faceswap"])
def test_trainer_masks_come_from_either_format(synthetic_sets: dict[str, Path], tmp_path: Path,
                                               kind: str) -> None:
    from swapd.trainer.data import FaceSet

    folder = tmp_path / kind
    folder.mkdir()
    for png in sorted(synthetic_sets["alice"].glob("*.png"))[:4]:
        if kind == "dfl":
            _dfl_copy(png, folder / f"{png.stem}.jpg")
        else:
            (folder / png.name).write_bytes(png.read_bytes())
    faces = FaceSet(folder, 64, coverage=0.7)
    assert len(faces) == 4 and faces.without_landmarks == 0
    assert faces.masks[..., 1].max() == 255  # eyes were drawn

"""faceswap accepts what swapd extracts: its header schema, its names, its head-centred crop,
its training loader's cut (all checked by tests/faceswap_reference.py, faceswap's logic
re-derived); and swapd still reads what it wrote before."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.demo.clip import ClipTruth, truth_path
from swapd.extract.alignments import read_alignments
from swapd.extract.extract import ExtractReport, extract
from swapd.faces import faceswap_align
from swapd.faces.faceswap_png import (
    FaceswapMeta,
    encode_aligned_png,
    read_aligned_png,
    read_faceswap_meta,
)
from swapd.faces.validate import inspect_face_file
from swapd.media import probe_video, read_frames
from swapd.trainer.data import FaceSet
from tests import faceswap_reference as faceswap

SIZE = 256
# sha256 (first 16 hex digits) of faceswap's arrays as it stores them (dtype in brackets), at
# deepfakes/faceswap acdcfa8796c26d47e3610efeae102c9d87b2ad89 (docs/interop.md)
UPSTREAM_DIGESTS = {
    "MEAN_FACE[LM_2D_51] (float64)": "f55ee74fd0a3d87e",
    "MEAN_FACE[LM_3D_26] (float64)": "af27e672787e4e20",
    "pose._CORE_LMS (int32)": "fb39144514dc0f40",
    "pose._CENTER_OFFSETS[legacy] (float32)": "15ec7bf0b50732b4",
    "pose._CENTER_OFFSETS[head] (float32)": "c5c9e4bbf69e6c04",
    "pose._CENTER_OFFSETS[face] (float32)": "2685820b1d2e4049",
}


def _digest(array: np.ndarray, dtype: type) -> str:
    data = np.ascontiguousarray(np.asarray(array, dtype)).tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


@pytest.fixture(scope="module")
def extracted(synthetic_clip: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, ExtractReport, list[np.ndarray]]:
    out = tmp_path_factory.mktemp("fs_interop") / "faces"
    report = extract(synthetic_clip, out, size=SIZE)
    frames = list(read_frames(probe_video(synthetic_clip)))
    return out, report, frames


def test_faceswaps_constants() -> None:
    ours = {
        "MEAN_FACE[LM_2D_51] (float64)": _digest(faceswap_align.MEAN_FACE_51, np.float64),
        "MEAN_FACE[LM_3D_26] (float64)": _digest(faceswap_align.MEAN_HEAD_26, np.float64),
        "pose._CORE_LMS (int32)": _digest(faceswap_align.CORE_LANDMARKS, np.int32),
        **{f"pose._CENTER_OFFSETS[{k}] (float32)": _digest(v, np.float32)
           for k, v in faceswap_align.CENTER_OFFSETS.items()},
    }
    assert ours == UPSTREAM_DIGESTS
    assert faceswap_align.EXTRACT_RATIOS == {"legacy": 0.375, "face": 0.5, "head": 0.625}


def test_faceswap_reads_every_face_swapd_extracts(
        extracted: tuple[Path, ExtractReport, list[np.ndarray]], synthetic_clip: Path) -> None:
    out, report, _ = extracted
    pngs = sorted(out.glob("*.png"))
    assert report.faces == len(pngs) == 50
    for i, png in enumerate(pngs):
        data = png.read_bytes()
        header = faceswap.png_read_meta(data)  # faceswap's PNGHeader.from_dict accepts it
        align, source = header["alignments"], header["source"]
        assert faceswap.landmark_type(np.asarray(align["landmarks_xy"]).shape) == "LM_2D_68"
        assert align["mask"] == {} and align["identity"] == {}
        frame = f"{synthetic_clip.stem}_{i + 1:06d}{synthetic_clip.suffix}"  # from 1, with .mp4
        assert source == {"alignments_version": 2.4, "original_filename": png.name,
                          "face_index": 0, "source_filename": frame, "source_is_video": True,
                          "source_frame_dims": (360, 640)}
        assert png.name == f"{Path(frame).stem}_0.png"
        # swapd's extras are a chunk of their own, after the image data
        assert data.index(b"faceswap\0") < data.index(b"IDAT") < data.index(b"swapd\0")
        meta = read_faceswap_meta(data)
        assert meta is not None and meta.swapd is not None
        assert meta.swapd["geometry"] == "faceswap" and meta.swapd["landmark_points"] == 68
        # the default landmark plugin's 68 points, found, not fitted to MTCNN's five
        assert meta.swapd["landmarker"] == "face_mesh" and not meta.swapd["landmarks_fitted"]


def test_the_crop_is_faceswaps_head_centred_face(
        extracted: tuple[Path, ExtractReport, list[np.ndarray]], synthetic_clip: Path) -> None:
    out, report, frames = extracted
    record = read_alignments(report.alignments[0])
    worst_px = worst_levels = 0.0
    for i, frame in enumerate(frames):
        face = record[f"{synthetic_clip.stem}_{i + 1:06d}.mp4"][0]
        image, meta = read_aligned_png(out / face["file"])
        assert meta is not None
        theirs = faceswap.aligned_matrix(meta.landmarks_xy, SIZE, "head")
        ours = np.asarray(face["matrix"])
        points = np.vstack([meta.landmarks_xy, [[0, 0], [640, 360]]]).astype(np.float64)
        moved = (points @ theirs[:, :2].T + theirs[:, 2]) - (points @ ours[:, :2].T + ours[:, 2])
        worst_px = max(worst_px, float(np.abs(moved).max()))
        # faceswap's extract (scripts/extract.py, batch_align): bilinear up, bicubic down
        flags = cv2.INTER_LINEAR if np.hypot(*theirs[:, 0]) > 1 else cv2.INTER_CUBIC
        cut = cv2.warpAffine(frame, theirs, (SIZE, SIZE), flags=flags)
        worst_levels = max(worst_levels, float(np.abs(cut.astype(float) - image).mean()))
    print(f"swapd vs faceswap's AlignedFace (head, {SIZE} px): {worst_px:.4f} px, "
          f"mean pixel difference {worst_levels:.2f} levels at worst")
    assert worst_px < 1.0 and worst_levels < 2.0


def test_68_landmarks_give_faceswaps_crop_at_every_centering(synthetic_clip: Path) -> None:
    truth = ClipTruth.load(truth_path(synthetic_clip))
    worst = 0.0
    for landmarks in truth.landmarks[::5]:
        for centering in ("legacy", "face", "head"):
            ours = faceswap_align.faceswap_matrix(landmarks, SIZE, centering)
            theirs = faceswap.aligned_matrix(landmarks, SIZE, centering)
            moved = landmarks @ (ours - theirs)[:, :2].T + (ours - theirs)[:, 2]
            worst = max(worst, float(np.abs(moved).max()))
    assert worst < 0.01


def test_faceswaps_training_loader_takes_the_folder(
        extracted: tuple[Path, ExtractReport, list[np.ndarray]], synthetic_clip: Path) -> None:
    """faceswap's TrainSet reads each face with its header and cuts its training crop (face
    centering, coverage 87.5 %) out of the head-centred image: the face is where cutting it
    from the frame puts it."""
    out, report, frames = extracted
    record = read_alignments(report.alignments[0])
    worst_shift = worst_levels = 0.0
    for i, frame in enumerate(frames):
        png = out / record[f"{synthetic_clip.stem}_{i + 1:06d}.mp4"][0]["file"]
        header = faceswap.png_read_meta(png.read_bytes())
        landmarks = np.asarray(header["alignments"]["landmarks_xy"], np.float32)
        image = cv2.imread(str(png))
        crop = faceswap.training_crop(image, landmarks, 64, "face", 0.875)
        direct = cv2.warpAffine(frame, faceswap.aligned_matrix(landmarks, 64, "face", 0.875),
                                (64, 64), flags=cv2.INTER_AREA)
        grey = [cv2.cvtColor(x, cv2.COLOR_BGR2GRAY).astype(np.float32) for x in (crop, direct)]
        (dx, dy), _ = cv2.phaseCorrelate(*grey)
        worst_shift = max(worst_shift, float(np.hypot(dx, dy)))
        blurred = [cv2.GaussianBlur(x.astype(np.float32), (0, 0), 1.5) for x in (crop, direct)]
        worst_levels = max(worst_levels, float(np.abs(blurred[0] - blurred[1]).mean()))
    # the two cuts resample differently (faceswap resizes a sub-crop of the 256 px face; the
    # direct cut warps the frame): the face sits in the same place, the pixels differ a little
    print(f"faceswap's training crop vs the same crop from the frame: shifted {worst_shift:.2f}"
          f" px, {worst_levels:.2f} levels apart (blurred) at worst")
    assert worst_shift < 1.5 and worst_levels < 8.0


def test_swapd_trains_from_its_new_faces_as_before(
        extracted: tuple[Path, ExtractReport, list[np.ndarray]], synthetic_clip: Path) -> None:
    """The trainer re-cuts faceswap's crop from the face's own landmarks: the same model crop
    the merger cuts from the frame."""
    from swapd.faces.alignment import model_crop_matrix

    out, report, frames = extracted
    face_set = FaceSet(out, 64, coverage=0.875, centering="face")
    assert len(face_set) == 50 and face_set.without_landmarks == 0
    record = read_alignments(report.alignments[0])
    shifts, diffs = [], []
    for i, frame in enumerate(frames):
        face = record[f"{synthetic_clip.stem}_{i + 1:06d}.mp4"][0]
        row = face_set.paths.index(out / face["file"])
        matrix = model_crop_matrix(np.asarray(face["landmarks"]), 64, 0.875, "face")
        direct = cv2.warpAffine(frame, matrix, (64, 64), flags=cv2.INTER_AREA)
        pair = (face_set.faces[row], direct)
        grey = [cv2.cvtColor(x, cv2.COLOR_BGR2GRAY).astype(np.float32) for x in pair]
        shifts.append(float(np.hypot(*cv2.phaseCorrelate(*grey)[0])))
        blurred = [cv2.GaussianBlur(x.astype(np.float32), (0, 0), 1.5) for x in pair]
        diffs.append(float(np.abs(blurred[0] - blurred[1]).mean()))
    print(f"trainer crop vs merger crop: shifted {max(shifts):.2f} px, {max(diffs):.2f} levels "
          "apart (blurred) at worst")
    assert max(shifts) < 1.0 and max(diffs) < 6.0
    assert inspect_face_file(out / record[f"{synthetic_clip.stem}_000001.mp4"][0]["file"]
                             ).centering is None  # not one of swapd's: cut from landmarks


def test_faces_written_before_still_load(tmp_path: Path) -> None:
    """A face from swapd before the swapd chunk: its extras under a top-level key."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (128, 128, 3), np.uint8)
    landmarks = rng.uniform(20, 100, (68, 2)).astype(np.float32)
    meta = FaceswapMeta(x=1, y=2, w=60, h=70, landmarks_xy=landmarks,
                        original_filename="old_000000_0.png", face_index=0,
                        source_filename="old_000000", source_is_video=True,
                        source_frame_dims=(200, 300), alignments_version=2.3)
    header = meta.to_dict()
    header["swapd"] = {"centering": "face", "size": 128,
                       "aligned_landmarks": landmarks.round(2).tolist()}
    path = tmp_path / "old_000000_0.png"
    path.write_bytes(encode_aligned_png(image, header))
    assert path.read_bytes().count(b"iTXt") == 1
    back = read_faceswap_meta(path)
    assert back is not None and back.swapd is not None and back.swapd["centering"] == "face"
    info = inspect_face_file(path)
    assert info.centering == "face" and info.landmarks is not None
    with pytest.raises(ValueError, match="Dictionary keys"):  # what faceswap said of them
        faceswap.png_read_meta(path.read_bytes())


def test_swapd_never_writes_a_header_faceswap_refuses(tmp_path: Path) -> None:
    meta = FaceswapMeta(x=0, y=0, w=5, h=5, landmarks_xy=np.zeros((5, 2), np.float32),
                        original_filename="a_0.png", face_index=0, source_filename="a.png")
    with pytest.raises(ValueError, match="fit 68 points first"):
        encode_aligned_png(np.zeros((64, 64, 3), np.uint8), meta)
    fitted, was_fitted = faceswap_align.landmarks_68(np.array(
        [[30, 30], [50, 30], [40, 40], [32, 50], [48, 50]], np.float32))
    assert was_fitted and fitted.shape == (68, 2)
    meta.landmarks_xy = fitted
    data = encode_aligned_png(np.zeros((64, 64, 3), np.uint8), meta)
    faceswap.png_read_meta(data)
    length = struct.unpack(">I", data[data.index(b"iTXt") - 4:data.index(b"iTXt")])[0]
    assert length < 8000

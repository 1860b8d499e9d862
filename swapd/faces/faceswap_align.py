"""faceswap's aligned-face geometry, so that the faces swapd writes are faceswap's own crops.

faceswap (deepfakes/faceswap, ``lib/align/``) aligns a face in two steps. A similarity (umeyama)
takes the 51 core landmarks (68-point layout, points 17-67) onto its mean face in a unit box:
the "legacy" matrix. A head pose is then solved from 26 of the landmarks against a 3-D mean head
(``cv2.solvePnP``, a camera of focal length 4 centred on the unit box), and the projection of a
centre point of the skull ("head") or of the face ("face") shifts the matrix so that point lands
in the middle. An aligned face of ``size`` pixels at a centering is that unit box scaled to
``size - 2 * padding`` with ``padding = round(size * EXTRACT_RATIOS[centering] / 2)`` on each
side. Extraction writes the head-centred crop; training cuts the other centerings out of it.

The constants below are faceswap's (``lib/align/constants.py``: ``MEAN_FACE[LM_2D_51]``,
``EXTRACT_RATIOS``; ``lib/align/pose.py``: ``MEAN_FACE[LM_3D_26]``, ``_CORE_LMS``,
``_CENTER_OFFSETS``, the camera), at the commit docs/interop.md names; the tests check them
byte for byte against the digests recorded there. swapd's own centerings
(:mod:`swapd.faces.alignment`) are unchanged: the trainer re-cuts faces stored in faceswap's
geometry from their own landmarks.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from swapd.faces.alignment import transform_points, umeyama
from swapd.faces.landmarks import MEAN_FACE_2D_5, MEAN_FACE_2D_68

FaceswapCentering = Literal["legacy", "face", "head"]
EXTRACT_RATIOS: dict[str, float] = {"legacy": 0.375, "face": 0.5, "head": 0.625}

MEAN_FACE_51 = np.array([
    [0.010086, 0.106454], [0.085135, 0.038915], [0.191003, 0.018748], [0.300643, 0.034489],
    [0.403270, 0.077391], [0.596729, 0.077391], [0.699356, 0.034489], [0.808997, 0.018748],
    [0.914864, 0.038915], [0.989913, 0.106454], [0.500000, 0.203352], [0.500000, 0.307009],
    [0.500000, 0.409805], [0.500000, 0.515625], [0.376753, 0.587326], [0.435909, 0.609345],
    [0.500000, 0.628106], [0.564090, 0.609345], [0.623246, 0.587326], [0.131610, 0.216423],
    [0.196995, 0.178758], [0.275698, 0.179852], [0.344479, 0.231733], [0.270791, 0.245099],
    [0.192616, 0.244077], [0.655520, 0.231733], [0.724301, 0.179852], [0.803005, 0.178758],
    [0.868389, 0.216423], [0.807383, 0.244077], [0.729208, 0.245099], [0.264022, 0.780233],
    [0.350858, 0.745405], [0.438731, 0.727388], [0.500000, 0.742578], [0.561268, 0.727388],
    [0.649141, 0.745405], [0.735977, 0.780233], [0.652032, 0.864805], [0.566594, 0.902192],
    [0.500000, 0.909281], [0.433405, 0.902192], [0.347967, 0.864805], [0.300252, 0.784792],
    [0.437969, 0.778746], [0.500000, 0.785343], [0.562030, 0.778746], [0.699747, 0.784792],
    [0.563237, 0.824182], [0.500000, 0.831803], [0.436763, 0.824182]])

MEAN_HEAD_26 = np.array([
    [4.056931, -11.432347, 1.636229], [1.833492, -12.542305, 4.061275],
    [0.0, -12.901019, 4.070434], [-1.833492, -12.542305, 4.061275],
    [-4.056931, -11.432347, 1.636229], [6.825897, 1.275284, 4.402142],
    [1.330353, 1.636816, 6.903745], [-1.330353, 1.636816, 6.903745],
    [-6.825897, 1.275284, 4.402142], [1.930245, -5.060977, 5.914376],
    [0.746313, -5.136947, 6.263227], [0.0, -5.485328, 6.76343],
    [-0.746313, -5.136947, 6.263227], [-1.930245, -5.060977, 5.914376],
    [5.311432, 0.0, 3.987654], [1.78993, -0.091703, 4.413414],
    [-1.78993, -0.091703, 4.413414], [-5.311432, 0.0, 3.987654],
    [2.774015, -7.566103, 5.048531], [0.509714, -7.056507, 6.566167],
    [0.0, -7.131772, 6.704956], [-0.509714, -7.056507, 6.566167],
    [-2.774015, -7.566103, 5.048531], [-0.589441, -8.443925, 6.109526],
    [0.0, -8.601736, 6.097667], [0.589441, -8.443925, 6.109526]])

# The 68-point indices solved against MEAN_HEAD_26, in its order.
CORE_LANDMARKS = np.array([6, 7, 8, 9, 10, 17, 21, 22, 26, 31, 32, 33, 34,
                           35, 36, 39, 42, 45, 48, 50, 51, 52, 54, 56, 57, 58], dtype=np.int32)
CENTER_OFFSETS: dict[str, np.ndarray] = {
    "legacy": np.array([0.0, 0.0, 0.0], dtype=np.float32),
    "head": np.array([0.0, 0.0, -2.3], dtype=np.float32),
    "face": np.array([0.0, -1.5, 4.2], dtype=np.float32),
}
CAMERA = np.array([[4.0, 0.0, 0.5], [0.0, 4.0, 0.5], [0.0, 0.0, 1.0]])
_NO_DISTORTION = np.zeros((4, 1), dtype=np.float32)


def _landmarks68(landmarks: np.ndarray) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float32)
    if points.shape != (68, 2):
        raise ValueError(f"faceswap's alignment needs 68x2 landmarks, got shape {points.shape}")
    return points


def legacy_matrix(landmarks: np.ndarray) -> np.ndarray:
    """2x3 from frame pixels to faceswap's unit box ("legacy" centering, no padding)."""
    points = _landmarks68(landmarks).astype(np.float64)
    return umeyama(points[17:], MEAN_FACE_51)[:2]


def centering_offset(landmarks: np.ndarray, centering: FaceswapCentering,
                     legacy: np.ndarray | None = None) -> np.ndarray:
    """Where the centre of ``centering`` lies from the unit box's centre (unit box units), by
    the head pose solved from the landmarks, as faceswap's ``PoseEstimate.offset``."""
    if centering == "legacy":
        return np.zeros(2, np.float32)
    points = _landmarks68(landmarks)
    legacy = legacy_matrix(points) if legacy is None else legacy
    normalised = np.nan_to_num(cv2.transform(points[:, None, :], legacy)[:, 0])
    _, rotation, translation = cv2.solvePnP(MEAN_HEAD_26, normalised[CORE_LANDMARKS], CAMERA,
                                            _NO_DISTORTION, flags=cv2.SOLVEPNP_ITERATIVE)
    centre = cv2.projectPoints(CENTER_OFFSETS[centering][None], rotation, translation, CAMERA,
                               _NO_DISTORTION)[0].reshape(2).astype(np.float32)
    return centre - np.float32(0.5)


def padding(size: int, centering: FaceswapCentering) -> int:
    """Pixels of padding on each side of an aligned face of ``size`` (coverage 1)."""
    return round(size * EXTRACT_RATIOS[centering] / 2)


def faceswap_matrix(landmarks: np.ndarray, size: int,
                    centering: FaceswapCentering = "head") -> np.ndarray:
    """2x3 from frame pixels to faceswap's aligned face of ``size`` pixels at ``centering``
    (``AlignedFace(landmarks, centering=..., size=...).adjusted_matrix``)."""
    legacy = legacy_matrix(landmarks)
    matrix = legacy.copy()
    matrix[:, 2] -= centering_offset(landmarks, centering, legacy)
    pad = padding(size, centering)
    matrix = matrix * (size - 2 * pad)
    matrix[:, 2] += pad
    return matrix


def faceswap_crop(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Cut an aligned face as faceswap's extraction does: bilinear when enlarging, bicubic
    when shrinking, black outside the frame."""
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    flags = cv2.INTER_LINEAR if scale > 1.0 else cv2.INTER_CUBIC
    return cv2.warpAffine(frame, np.asarray(matrix, np.float64), (size, size), flags=flags)


def fit_68_to_5(points5: np.ndarray) -> np.ndarray:
    """68 landmarks for a face only 5 points are known of: swapd's mean face, placed on the 5
    by a similarity (see docs/interop.md: what swapd writes for 5-point faces)."""
    points = np.asarray(points5, dtype=np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"expected 5x2 points, got shape {points.shape}")
    return transform_points(MEAN_FACE_2D_68, umeyama(MEAN_FACE_2D_5, points)).astype(np.float32)


def landmarks_68(points: np.ndarray) -> tuple[np.ndarray, bool]:
    """The 68 frame landmarks a faceswap header (or a DeepFaceLab face) gets for a detection's
    points, and whether they were fitted from 5. This is the one place a 68-point landmark
    plugin changes: give it 68 points and they are written as found."""
    points = np.asarray(points, dtype=np.float32)
    if points.shape == (68, 2):
        return points, False
    return fit_68_to_5(points), True

"""Alignment maths: similarity transforms from detected landmarks to swapd's mean face.

An aligned face of `size` pixels is the image region around the mean face's unit box, padded by
the centering's ratio (the share of the output that lies outside the unit box):

    legacy 0.375 (tight, faceswap's oldest crop), face 0.5 (swapd's default), head 0.625

The trainer then centre-crops `coverage` of an aligned face for the model, and the merger makes
the same crop from a frame, so training and merging see identical geometry.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from swapd.faces.landmarks import ALIGN_POINTS, MEAN_FACE_2D_5, MEAN_FACE_2D_51

Centering = Literal["legacy", "face", "head"]
CENTERING_PADDING: dict[str, float] = {"legacy": 0.375, "face": 0.5, "head": 0.625}
# Head crops sit higher: the skull above the brows matters more than the neck below the chin.
CENTERING_SHIFT_Y: dict[str, float] = {"legacy": 0.0, "face": 0.0, "head": -0.12}


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) src -> dst.

    Umeyama, "Least-squares estimation of transformation parameters between two point patterns",
    IEEE TPAMI 1991. Returns a 3x3 homogeneous matrix.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n, dim = src.shape
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n
    d = np.ones(dim)
    if np.linalg.det(cov) < 0:
        d[-1] = -1
    u, s, vt = np.linalg.svd(cov)
    rotation = u @ np.diag(d) @ vt
    src_var = (src_c**2).sum() / n
    scale = (s * d).sum() / src_var if src_var > 0 else 1.0
    matrix = np.eye(dim + 1)
    matrix[:dim, :dim] = scale * rotation
    matrix[:dim, dim] = dst_mean - scale * rotation @ src_mean
    return matrix


def _mean_face_for(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pick the landmark subset and the matching mean face for 68- or 5-point input."""
    if landmarks.shape == (68, 2):
        return landmarks[ALIGN_POINTS], MEAN_FACE_2D_51
    if landmarks.shape == (5, 2):
        return landmarks, MEAN_FACE_2D_5
    raise ValueError(f"landmarks must be 68x2 or 5x2, got shape {landmarks.shape}")


def unit_matrix(landmarks: np.ndarray) -> np.ndarray:
    """3x3 transform from frame pixels to mean-face unit coordinates."""
    points, mean_face = _mean_face_for(np.asarray(landmarks, dtype=np.float64))
    return umeyama(points, mean_face)


def _unit_to_pixels(size: float, centering: str) -> np.ndarray:
    """3x3 from mean-face unit coordinates to an aligned face of `size` pixels at `centering`."""
    span = 1.0 - CENTERING_PADDING[centering]  # share of the output the unit box covers
    scale = size * span
    return np.array([
        [scale, 0.0, size / 2.0 - 0.5 * scale],
        [0.0, scale, size / 2.0 - 0.5 * scale - CENTERING_SHIFT_Y[centering] * size],
        [0.0, 0.0, 1.0],
    ])


def aligned_matrix(landmarks: np.ndarray, size: int, centering: Centering = "face") -> np.ndarray:
    """2x3 affine from frame pixels to an aligned face of `size` pixels at `centering`."""
    return (_unit_to_pixels(size, centering) @ unit_matrix(landmarks))[:2]


def recentre_matrix(size: int, stored: str, wanted: str) -> np.ndarray:
    """2x3 affine from an aligned face of `size` pixels at centering `stored` to the same-size
    face at centering `wanted` (e.g. a head-centred face to its face-centred crop).

    Both are the same landmarks' alignment at different paddings, so the map needs no
    landmarks: it is exact for faces swapd aligned, and as close as the two tools' mean faces
    agree for faces from faceswap or DeepFaceLab.
    """
    full = _unit_to_pixels(size, wanted) @ np.linalg.inv(_unit_to_pixels(size, stored))
    return full[:2]


def recentre(face: np.ndarray, stored: str, wanted: str) -> np.ndarray:
    """An aligned face re-cut at another centering, same size (a no-op when they match)."""
    if stored == wanted:
        return face
    size = face.shape[0]
    out = cv2.warpAffine(face, recentre_matrix(size, stored, wanted), (size, size),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(face.shape)


def warp_face(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Cut the aligned face out of a frame with a 2x3 matrix from aligned_matrix."""
    # warpAffine has no area filter: bilinear, as the merger's crops use too.
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 or 3x3 affine matrix to Nx2 points."""
    pts = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)[:2]
    return pts @ m[:, :2].T + m[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix, as a 2x3 matrix."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def model_crop_matrix(landmarks: np.ndarray, input_size: int, coverage: float,
                      centering: Centering = "face") -> np.ndarray:
    """2x3 affine from frame pixels straight to a model's input crop.

    Same geometry as the trainer's crop of an aligned face (centre `coverage` of the aligned face,
    resized to `input_size`), in one warp so the merger loses no sharpness to resampling twice.
    """
    aligned_size = input_size / coverage
    margin = (aligned_size - input_size) / 2.0
    matrix = aligned_matrix(landmarks, 1, centering)  # unit-size aligned face
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    to_crop = np.array([[aligned_size, 0.0, -margin],
                        [0.0, aligned_size, -margin],
                        [0.0, 0.0, 1.0]])
    return (to_crop @ full)[:2]

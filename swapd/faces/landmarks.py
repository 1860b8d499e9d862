"""The 68-point landmark layout and swapd's mean face.

The layout is the common 68-point one (iBUG 300-W, used by dlib, faceswap and DeepFaceLab), in
image convention: x to the right of the image, y down. Indices:

    0-16 jaw (image left to right, chin at 8)   17-21 / 22-26 brows (image left / right)
    27-30 nose bridge (top to tip)               31-35 nostrils
    36-41 eye on the image left (36 outer)       42-47 eye on the image right (45 outer)
    48-59 outer lip (48 left corner)             60-67 inner lip

`MEAN_FACE_3D` is swapd's own average head in centimetres (x right, y down, z toward the camera,
origin between the eyes). The synthetic face generator projects it, alignment uses its frontal
projection, and pose estimation fits it with solvePnP, so all three agree by construction.
"""

from __future__ import annotations

import numpy as np


def _build_mean_face_3d() -> np.ndarray:
    points: list[tuple[float, float, float]] = []
    # Jaw: a U from ear level (image left) through the chin to ear level (image right).
    for i in range(17):
        a = np.pi * i / 16.0
        x = -6.8 * np.cos(a)
        y = 0.6 + 9.4 * np.sin(a) ** 1.2
        z = -4.2 + 5.0 * np.sin(a) ** 2
        points.append((x, y, z))
    # Brows: arched, slightly in front of the eyes.
    for side in (-1.0, 1.0):
        xs = np.linspace(5.3, 1.0, 5) if side < 0 else np.linspace(1.0, 5.3, 5)
        for x in xs:
            t = (x - 1.0) / 4.3
            y = -1.55 - 0.55 * np.sin(np.pi * (0.25 + 0.75 * (1 - t)))
            z = 0.9 - 0.9 * t
            points.append((side * x, y, z))
    # Nose bridge and tip.
    for k in range(4):
        points.append((0.0, 0.2 + 1.1 * k, 0.8 + 0.8 * k))
    # Nostrils.
    for x, y, z in ((-1.5, 4.0, 1.7), (-0.75, 4.2, 2.2), (0.0, 4.35, 2.45),
                    (0.75, 4.2, 2.2), (1.5, 4.0, 1.7)):
        points.append((x, y, z))
    # Eyes: outer corner, two upper lid points, inner corner, two lower lid points.
    right_eye = ((-4.5, 0.1, -0.6), (-3.7, -0.45, -0.1), (-2.7, -0.45, 0.0),
                 (-1.9, 0.1, -0.2), (-2.7, 0.4, 0.0), (-3.7, 0.4, -0.1))
    points.extend(right_eye)
    left_eye = ((1.9, 0.1, -0.2), (2.7, -0.45, 0.0), (3.7, -0.45, -0.1),
                (4.5, 0.1, -0.6), (3.7, 0.4, -0.1), (2.7, 0.4, 0.0))
    points.extend(left_eye)
    # Outer lip, clockwise from the image-left corner.
    points.extend(((-2.5, 6.3, 0.8), (-1.6, 5.8, 1.4), (-0.6, 5.55, 1.75), (0.0, 5.65, 1.8),
                   (0.6, 5.55, 1.75), (1.6, 5.8, 1.4), (2.5, 6.3, 0.8), (1.6, 6.9, 1.3),
                   (0.7, 7.15, 1.6), (0.0, 7.2, 1.65), (-0.7, 7.15, 1.6), (-1.6, 6.9, 1.3)))
    # Inner lip.
    points.extend(((-2.1, 6.3, 0.9), (-0.7, 6.15, 1.5), (0.0, 6.2, 1.6), (0.7, 6.15, 1.5),
                   (2.1, 6.3, 0.9), (0.7, 6.45, 1.5), (0.0, 6.5, 1.6), (-0.7, 6.45, 1.5)))
    face = np.asarray(points, dtype=np.float64)
    assert face.shape == (68, 3)
    return face


MEAN_FACE_3D: np.ndarray = _build_mean_face_3d()

# Index groups of the 68-point layout.
JAW = slice(0, 17)
RIGHT_BROW = slice(17, 22)
LEFT_BROW = slice(22, 27)
NOSE = slice(27, 36)
RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)
MOUTH_OUTER = slice(48, 60)
MOUTH_INNER = slice(60, 68)
# Alignment ignores the jaw: its outline moves with yaw and expression far more than the core does.
ALIGN_POINTS = slice(17, 68)


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """The 5-point layout detectors such as MTCNN return, derived from 68 points.

    Order (MTCNN's): eye on the image left, eye on the image right, nose tip, mouth corner on the
    image left, mouth corner on the image right.
    """
    lm = np.asarray(landmarks68, dtype=np.float64)
    return np.stack([
        lm[RIGHT_EYE].mean(axis=0),
        lm[LEFT_EYE].mean(axis=0),
        lm[30],
        lm[48],
        lm[54],
    ])


# The frontal mean face in unit coordinates: 51 core points and its 5-point equivalent, normalised
# with the same scale and offset so 68- and 5-point alignment land on the same crop.
_FRONTAL = MEAN_FACE_3D[:, :2]
_core = _FRONTAL[ALIGN_POINTS]
_lo, _hi = _core.min(axis=0), _core.max(axis=0)
_SCALE = 1.0 / float((_hi - _lo).max())
_CENTRE = (_lo + _hi) / 2.0
MEAN_FACE_2D_68: np.ndarray = (_FRONTAL - _CENTRE) * _SCALE + 0.5
MEAN_FACE_2D_51: np.ndarray = MEAN_FACE_2D_68[ALIGN_POINTS]
MEAN_FACE_2D_5: np.ndarray = five_points(MEAN_FACE_2D_68)


def landmark_array(value: object, what: str = "landmarks") -> np.ndarray:
    """``value`` as 68x2 or 5x2 finite float64 landmarks; ValueError saying what is wrong
    (``what`` names them in the message)."""
    try:
        points = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not numeric ({exc})") from exc
    if points.shape not in ((68, 2), (5, 2)) or not np.isfinite(points).all():
        raise ValueError(f"{what} must be 68x2 or 5x2 finite numbers, got shape {points.shape}")
    return points

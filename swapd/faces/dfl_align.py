"""DeepFaceLab's aligned-face crops (facelib/LandmarksProcessor.py ``get_transform_mat``).

DeepFaceLab aligns by a similarity (umeyama) of 33 landmarks (68-point indices 17-48 and 54)
onto its mean face in a unit box (``landmarks_2D_new``), and then grows a square around the
box's centre by the face type's padding (``FaceType_to_padding_remove_align``): ``full_face``
0.2109375, ``whole_face`` 0.40 with the centre moved 7 % of the box towards the forehead,
``head`` 0.70 with the centre moved half a box up (towards the crown) and sideways by the
yaw it estimates from the jaw (``estimate_averaged_yaw``). Three corners of that square give
the affine to the output size (``cv2.getAffineTransform``). The constants are DeepFaceLab's,
at the commit docs/interop.md names (digests checked by the tests).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from swapd.faces.alignment import umeyama

DFL_WRITE_TYPES = ("whole_face", "full_face", "head")
FACE_TYPE_ALIASES = {"wf": "whole_face", "f": "full_face", "full": "full_face",
                     "head": "head", "whole_face": "whole_face", "full_face": "full_face"}
PADDING = {"full_face": 0.2109375, "whole_face": 0.40, "head": 0.70}

MEAN_FACE_33 = np.array([
    [0.000213256, 0.106454], [0.0752622, 0.038915], [0.18113, 0.0187482],
    [0.29077, 0.0344891], [0.393397, 0.0773906], [0.586856, 0.0773906],
    [0.689483, 0.0344891], [0.799124, 0.0187482], [0.904991, 0.038915],
    [0.98004, 0.106454], [0.490127, 0.203352], [0.490127, 0.307009],
    [0.490127, 0.409805], [0.490127, 0.515625], [0.36688, 0.587326],
    [0.426036, 0.609345], [0.490127, 0.628106], [0.554217, 0.609345],
    [0.613373, 0.587326], [0.121737, 0.216423], [0.187122, 0.178758],
    [0.265825, 0.179852], [0.334606, 0.231733], [0.260918, 0.245099],
    [0.182743, 0.244077], [0.645647, 0.231733], [0.714428, 0.179852],
    [0.793132, 0.178758], [0.858516, 0.216423], [0.79751, 0.244077],
    [0.719335, 0.245099], [0.254149, 0.780233], [0.726104, 0.780233]], dtype=np.float32)


def _transform(points: np.ndarray, matrix: np.ndarray, invert: bool = False) -> np.ndarray:
    if invert:
        matrix = cv2.invertAffineTransform(matrix)
    return cv2.transform(np.asarray(points, np.float64)[:, None, :], matrix)[:, 0]


def averaged_yaw(landmarks: np.ndarray) -> float:
    """DeepFaceLab's yaw estimate from the jaw and nose bridge (unit-box landmarks)."""
    lm = landmarks
    left = ((lm[27][0] - lm[0][0]) + (lm[28][0] - lm[1][0]) + (lm[29][0] - lm[2][0])) / 3.0
    right = ((lm[16][0] - lm[27][0]) + (lm[15][0] - lm[28][0]) + (lm[14][0] - lm[29][0])) / 3.0
    return float(right - left)


def dfl_matrix(landmarks: np.ndarray, size: int, face_type: str) -> np.ndarray:
    """2x3 from frame pixels to DeepFaceLab's aligned face of ``size`` pixels, ``face_type``
    one of :data:`DFL_WRITE_TYPES` (``LandmarksProcessor.get_transform_mat``, scale 1)."""
    if face_type not in PADDING:
        raise ValueError(f"face type {face_type!r}: swapd writes {', '.join(DFL_WRITE_TYPES)}")
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"DeepFaceLab's alignment needs 68x2 landmarks, got {points.shape}")
    unit = umeyama(np.concatenate([points[17:49], points[54:55]]),
                   MEAN_FACE_33.astype(np.float64))[:2]
    corners = _transform(np.float32([(0, 0), (1, 0), (1, 1), (0, 1), (0.5, 0.5)]), unit,
                         invert=True).astype(np.float32)
    centre = corners[4].copy()
    tb_diag = corners[2] - corners[0]
    tb_diag /= np.linalg.norm(tb_diag)
    bt_diag = corners[1] - corners[3]
    bt_diag /= np.linalg.norm(bt_diag)
    reach = np.linalg.norm(corners[0] - corners[2]) * (PADDING[face_type] * math.sqrt(2.0) + 0.5)
    if face_type == "whole_face":
        up = corners[0] - corners[3]  # the box's left side, bottom to top
        centre += up * 0.07
    elif face_type == "head":
        yaw = averaged_yaw(_transform(points, unit))
        across = corners[0] - corners[1]
        across_len = float(np.linalg.norm(across))
        yaw *= abs(math.tanh(yaw * 2))  # damped near zero
        centre -= (across / across_len) * (yaw * across_len / 2.0)
        centre += (corners[0] - corners[3]) * 0.50
    square = np.array([centre - tb_diag * reach, centre + bt_diag * reach,
                       centre + tb_diag * reach], dtype=np.float32)
    target = np.float32([(0, 0), (size, 0), (size, size)])
    return cv2.getAffineTransform(square, target)


def dfl_crop(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The aligned face as DeepFaceLab's extractor cuts it (bilinear, black outside)."""
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR)

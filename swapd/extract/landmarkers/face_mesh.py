"""The default landmark plugin: MediaPipe's face mesh on onnxruntime, mapped to 68 points.

The model (468 points, Apache-2.0) comes from the mediapipe wheel, converted to ONNX once at
setup (:mod:`.mesh_model`). Each face is cut as MediaPipe's own pipeline cuts it: a square
around the detector's box, 1.5 times its longer side, turned so the eyes are level, at the
model's 192 x 192 (RGB in [0, 1]); the 468 points come back in the crop's pixels and are moved
to the frame's. A second pass re-cuts the square from the first pass's points (MediaPipe's
tracking crop: the points' box, 1.5 times its longer side), so the result depends little on how
tight or loose the detector's box was (MTCNN's is tighter than BlazeFace's, which the model was
trained behind). The 68 points are the fixed table of :mod:`.mesh_68`.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from swapd.extract.detectors.base import Detection
from swapd.extract.landmarkers.mesh_68 import mesh_to_68
from swapd.extract.landmarkers.mesh_model import find_model
from swapd.faces.landmarks import five_points
from swapd.runtime import create_session

INPUT_SIDE = 192
# MediaPipe's RectTransformationCalculator scale for both the detection and the tracking crop.
CROP_SCALE = 1.5
# The model's face-presence output is a logit; below this probability the crop holds no face.
MIN_PRESENCE = 0.5
# Mesh points whose angle sets the second crop's rotation (MediaPipe's: the eyes' outer corners).
_EYE_OUTER = (33, 263)


def _crop_matrix(centre: np.ndarray, side: float, angle: float) -> np.ndarray:
    """2x3 matrix from the frame to the model's input: the square of ``side`` around
    ``centre``, turned by ``angle`` (radians, the eyes' tilt), onto 192 x 192."""
    scale = INPUT_SIDE / side
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    rotate = np.array([[cos, sin], [-sin, cos]])
    shift = INPUT_SIDE / 2 - rotate @ centre
    return np.column_stack([rotate, shift])


def _rotated_box(points: np.ndarray, angle: float) -> tuple[np.ndarray, float]:
    """Centre and longer side of the box of ``points`` in the frame turned by ``angle``."""
    cos, sin = math.cos(angle), math.sin(angle)
    turn = np.array([[cos, sin], [-sin, cos]])
    level = points @ turn.T
    lo, hi = level.min(axis=0), level.max(axis=0)
    return turn.T @ ((lo + hi) / 2), float((hi - lo).max())


class FaceMeshLandmarker:
    """68 landmarks from MediaPipe's face mesh (``passes`` crops per face: 1 or 2)."""

    name = "face_mesh"

    def __init__(self, model: str | Path | None = None, device: str = "cpu",
                 threads: int | None = 1, passes: int = 2) -> None:
        if passes not in (1, 2):
            raise ValueError(f"passes must be 1 or 2, got {passes}")
        self.passes = passes
        path = find_model(None if model is None else Path(model))
        self._session = create_session(path, device, threads)
        self._input = self._session.get_inputs()[0].name

    def mesh(self, frame_bgr: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, float]:
        """The 468 points (frame pixels, x y z) and the face-presence probability of the crop
        ``matrix`` cuts from the frame."""
        crop = cv2.warpAffine(frame_bgr, matrix, (INPUT_SIDE, INPUT_SIDE),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        tensor = (cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0)[None]
        points, logit = self._session.run(None, {self._input: tensor})
        mesh = points.reshape(468, 3).astype(np.float64)
        back = cv2.invertAffineTransform(matrix)
        mesh[:, :2] = mesh[:, :2] @ back[:, :2].T + back[:, 2]
        presence = 1.0 / (1.0 + math.exp(-float(np.clip(logit.ravel()[0], -50, 50))))
        return mesh, presence

    def locate(self, frame_bgr: np.ndarray, detection: Detection) -> Detection | None:
        """``detection`` with the mesh's 68 points, or None when the crop holds no face."""
        x0, y0, x1, y1 = np.asarray(detection.box, dtype=np.float64)
        eyes = np.asarray(detection.landmarks5, dtype=np.float64)[:2]
        angle = math.atan2(eyes[1, 1] - eyes[0, 1], eyes[1, 0] - eyes[0, 0])
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        side = CROP_SCALE * max(x1 - x0, y1 - y0)
        mesh, presence = self.mesh(frame_bgr, _crop_matrix(centre, side, angle))
        for _ in range(self.passes - 1):
            if presence < MIN_PRESENCE:
                break
            outer = mesh[list(_EYE_OUTER), :2]
            angle = math.atan2(outer[1, 1] - outer[0, 1], outer[1, 0] - outer[0, 0])
            centre, extent = _rotated_box(mesh[:, :2], angle)
            mesh, presence = self.mesh(frame_bgr, _crop_matrix(centre, CROP_SCALE * extent,
                                                               angle))
        if presence < MIN_PRESENCE:
            return None
        points = mesh_to_68(mesh)
        return Detection(detection.box, detection.score, five_points(points), landmarks=points)

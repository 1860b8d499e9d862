"""The optional dlib plugin: dlib's HOG face detector and its 68-point shape predictor.

Install with ``pip install "swapd[dlib]"`` (``dlib-bin`` and ``face_recognition_models``,
which ships ``shape_predictor_68_face_landmarks.dat``). That model was trained on the iBUG
300-W dataset, whose licence forbids commercial use: the plugin is never installed or chosen
by default. It gives the full 68-point layout (faceswap's and DeepFaceLab's), so faces it
extracts get masks from real landmarks instead of ones derived from MTCNN's five.

HOG finds frontal and moderately turned faces only (up to about 40 degrees of yaw); MTCNN,
the default, also finds profiles.
"""

from __future__ import annotations

import math
from importlib.util import find_spec
from pathlib import Path

import cv2
import numpy as np

from swapd.extract.detectors.base import Detection, DetectorError
from swapd.faces.landmarks import five_points

MODEL_FILE = "shape_predictor_68_face_landmarks.dat"


def shape_predictor_path() -> Path:
    """The 68-point model inside the installed ``face_recognition_models`` package.

    Found without importing the package (its ``__init__`` needs ``pkg_resources``, which
    recent setuptools no longer has).
    """
    spec = find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorError("the dlib plugin's 68-point model comes from the "
                            "'face_recognition_models' package, which is not installed "
                            '(pip install "swapd[dlib]")')
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILE
    if not path.is_file():
        raise DetectorError(f"{path}: dlib's 68-point model is missing")
    return path


class DlibDetector:
    """dlib's HOG detector plus 68 landmarks per face.

    ``upsample`` doubles the image that many times before searching (HOG's smallest face is
    about 80 pixels; once is 40). ``score_threshold`` applies to the score, a logistic of
    HOG's SVM margin (0.5: margin 0, dlib's own default).
    """

    name = "dlib"
    landmark_points = 68

    def __init__(self, min_face_size: int = 40, score_threshold: float = 0.5, upsample: int = 1,
                 device: str = "cpu") -> None:
        try:
            import dlib
        except ImportError as exc:
            raise DetectorError('the dlib plugin needs dlib (pip install "swapd[dlib]")'
                                ) from exc
        del device  # dlib's HOG and shape predictor run on the CPU
        if not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        self.min_face_size = int(min_face_size)
        self.upsample = int(upsample)
        self._margin = math.log(score_threshold / (1.0 - score_threshold))
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(shape_predictor_path()))

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        """Faces in a BGR uint8 frame, highest score first."""
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) BGR frame, got shape {frame_bgr.shape}")
        rgb = np.ascontiguousarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
        rects, margins, _ = self._detector.run(rgb, self.upsample, self._margin)
        found = []
        for rect, margin in sorted(zip(rects, margins, strict=True), key=lambda r: -r[1]):
            box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1],
                           dtype=np.float64)
            if max(box[2] - box[0], box[3] - box[1]) < self.min_face_size:
                continue
            shape = self._predictor(rgb, rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            score = 1.0 / (1.0 + math.exp(-margin))
            found.append(Detection(box, score, five_points(points), landmarks=points))
        return found

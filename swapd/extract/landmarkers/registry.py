"""The landmark plugins by name: ``face_mesh`` (the default), ``dlib`` (optional), ``detector``.

``detector`` is no plugin: it keeps the points the detector found (MTCNN's five, from which the
writers fit 68 as before; dlib's own 68). ``default_landmarker`` picks ``face_mesh`` for a
detector with fewer than 68 points and ``detector`` for one that has them (``--detector dlib``).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from swapd.extract.detectors.base import Detection, Detector, DetectorError
from swapd.extract.landmarkers.base import Landmarker
from swapd.faces.landmarks import five_points

KEEP_DETECTOR = "detector"


class DlibLandmarker:
    """dlib's 68-point shape predictor on the detector's box (optional: its model's licence
    forbids commercial use; ``pip install "swapd[dlib]"``). The predictor was trained behind
    dlib's own HOG boxes; the detector's box is given as it is."""

    name = "dlib"

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise DetectorError('the dlib landmark plugin needs dlib (pip install '
                                '"swapd[dlib]")') from exc
        from swapd.extract.detectors.dlib_68 import shape_predictor_path

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(shape_predictor_path()))

    def locate(self, frame_bgr: np.ndarray, detection: Detection) -> Detection | None:
        rgb = np.ascontiguousarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
        x0, y0, x1, y1 = (int(round(v)) for v in detection.box)
        shape = self._predictor(rgb, self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return Detection(detection.box, detection.score, five_points(points), landmarks=points)


def _face_mesh(**options: object) -> Landmarker:
    from swapd.extract.landmarkers.face_mesh import FaceMeshLandmarker

    return FaceMeshLandmarker(**options)  # type: ignore[arg-type]


LANDMARKERS: dict[str, Callable[..., Landmarker]] = {"face_mesh": _face_mesh,
                                                     "dlib": DlibLandmarker}
NAMES = (*LANDMARKERS, KEEP_DETECTOR)


def default_landmarker(detector: Detector) -> str:
    """``face_mesh`` unless the detector already gives 68 points."""
    return KEEP_DETECTOR if getattr(detector, "landmark_points", 5) >= 68 else "face_mesh"


def create_landmarker(name: str, **options: object) -> Landmarker | None:
    """The plugin named ``name`` (None for ``detector``: keep the detector's points)."""
    if name == KEEP_DETECTOR:
        return None
    try:
        factory = LANDMARKERS[name]
    except KeyError:
        raise DetectorError(f"unknown landmark plugin {name!r} (have: {', '.join(NAMES)})"
                            ) from None
    return factory(**{k: v for k, v in options.items() if v is not None})


def place_landmarks(marker: Landmarker | None, image: np.ndarray, faces: list[Detection],
                    detector: str) -> tuple[list[Detection], list[str]]:
    """The faces with the plugin's 68 points, and per face who placed its points: the plugin,
    or ``detector`` for a face the plugin does not see (it keeps the detector's points) and
    for one that has 68 already (a 68-point detector, a replayed alignments record). A
    tracker keeps following the detector's own faces: only what is cut gets these points."""
    if marker is None:
        return faces, [detector] * len(faces)
    placed = [None if face.points.shape == (68, 2) else marker.locate(image, face)
              for face in faces]
    return ([face if p is None else p for face, p in zip(faces, placed, strict=True)],
            [detector if p is None else marker.name for p in placed])

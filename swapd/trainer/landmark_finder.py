"""The trainer's landmark finder, for faces whose files carry no landmarks in their image."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from swapd.extract.detectors.base import Detector
from swapd.extract.detectors.registry import create_detector
from swapd.extract.face_landmarks import find_face_landmarks

# Landmarks for a face whose file has none in its image's pixels:
# (image as decoded, the file's frame landmarks or None) -> N x 2 points or None.
LandmarkFinder = Callable[[np.ndarray, np.ndarray | None], np.ndarray | None]


class FoundLandmarks:
    """The trainer's landmark finder: a detector plugin (made on first use; see
    :mod:`swapd.extract.face_landmarks`), for faces no index holds."""

    def __init__(self, detector: str = "mtcnn") -> None:
        self.detector_name = detector
        self._detector: Detector | None = None
        self._lock = threading.Lock()

    def __call__(self, image: np.ndarray, frame_landmarks: np.ndarray | None
                 ) -> np.ndarray | None:
        with self._lock:
            if self._detector is None:
                self._detector = create_detector(self.detector_name)
        found = find_face_landmarks(image, self._detector, frame_landmarks)
        return None if found is None else found.points

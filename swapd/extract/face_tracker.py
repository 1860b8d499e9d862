"""Following faces through a video: a detector's full search every few frames, refining between."""

from __future__ import annotations

import numpy as np

from swapd.extract.detectors.base import Detection, Detector


class FaceTracker:
    """A detector for video: full detection every ``redetect_every`` frames, ``refine`` between.

    When refining loses a face (it left its box, the shot changed) the same frame gets a full
    detection at once, and frames without faces are always fully searched, so a new face waits
    at most ``redetect_every - 1`` frames only while other faces are being tracked.  Detectors
    without ``refine``, or ``redetect_every=1``, detect on every frame.
    """

    def __init__(self, detector: Detector, redetect_every: int = 5) -> None:
        if redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1, got {redetect_every}")
        self.detector = detector
        self.redetect_every = redetect_every
        self._previous: list[Detection] = []
        self._since_full = 0

    @property
    def name(self) -> str:
        return self.detector.name

    @property
    def landmark_points(self) -> int:
        return self.detector.landmark_points

    def seed(self, faces: list[Detection]) -> None:
        """Faces known for the current frame from elsewhere (an alignments record): the next
        frame is tracked from them."""
        self._previous = list(faces)
        self._since_full = 1

    def skip(self) -> None:
        """A frame passed over (outside a merge's frame ranges): the next frame is searched
        afresh, since faces may have moved any distance meanwhile."""
        self._previous = []
        self._since_full = 0

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        """Faces in this frame (call once per frame, in order)."""
        if (self._previous and self._since_full < self.redetect_every
                and callable(getattr(self.detector, "refine", None))):
            found = self.detector.refine(frame_bgr, self._previous)
            if len(found) == len(self._previous):
                self._previous = found
                self._since_full += 1
                return found
        self._previous = self.detector.detect(frame_bgr)
        self._since_full = 1
        return self._previous

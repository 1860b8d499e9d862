"""What every face detector plugin gives and takes: the record of one face, the interface.

A plugin is one module in this package (``mtcnn``, ``dlib_68``) with a class that has a
``name``, a ``landmark_points`` count and ``detect``; :mod:`swapd.extract.detectors.registry`
makes it available by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One face: box (x0, y0, x1, y1) in frame pixels, score in [0, 1], 5 landmarks (5x2).

    Landmark order (MTCNN's): eye on the image left, eye on the image right, nose tip, mouth
    corner on the image left, mouth corner on the image right — as ``landmarks.five_points``.
    A plugin that finds more points (dlib: 68) gives them all in ``landmarks``.
    """

    box: np.ndarray
    score: float
    landmarks5: np.ndarray
    landmarks: np.ndarray | None = None  # every point the plugin found, when more than five

    @property
    def points(self) -> np.ndarray:
        """The most landmarks known: ``landmarks`` when the plugin gave more than five."""
        return self.landmarks5 if self.landmarks is None else self.landmarks

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return float(max(0.0, x1 - x0) * max(0.0, y1 - y0))


@runtime_checkable
class Detector(Protocol):
    """A face detector plugin: finds faces and their landmarks in a BGR uint8 frame.

    Each plugin declares what it returns: ``name`` (its registry name) and
    ``landmark_points`` (5 for MTCNN; the extractor aligns by them, and masks for 5-point faces
    are derived from them, see :mod:`swapd.faces.masks`).
    """

    name: str
    landmark_points: int

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]: ...


@runtime_checkable
class RefiningDetector(Detector, Protocol):
    """A detector that can also cheaply re-locate faces known from the previous frame."""

    def refine(self, frame_bgr: np.ndarray, previous: list[Detection]) -> list[Detection]: ...


class DetectorError(RuntimeError):
    """A detector cannot be created (unknown name, missing weights)."""

"""What a landmark plugin gives and takes.

A detector (:mod:`swapd.extract.detectors`) finds faces and a few points (MTCNN: five); a
landmark plugin then places the 68 points of faceswap's layout on each face it is given, as
faceswap's extract runs a detector, then an aligner. A plugin has a ``name`` and ``locate``,
which returns the detection with its 68 points (``landmarks``, and ``landmarks5`` derived from
them), or None when it finds no face where the detector put one (the caller keeps the
detector's points then).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from swapd.extract.detectors.base import Detection


@runtime_checkable
class Landmarker(Protocol):
    name: str

    def locate(self, frame_bgr: np.ndarray, detection: Detection) -> Detection | None: ...

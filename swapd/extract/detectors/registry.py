"""The detector plugins by name: ``create_detector("mtcnn")``, ``create_detector("dlib")``.

As faceswap's ``plugins/extract/detect``: one module per detector, found here by name. MTCNN
is the default; dlib is an optional extra, imported only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable

from swapd.extract.detectors.base import Detector, DetectorError
from swapd.extract.detectors.mtcnn import MtcnnDetector


def _dlib_detector(**options: object) -> Detector:
    # Imported on demand: dlib is an optional extra (pip install "swapd[dlib]").
    from swapd.extract.detectors.dlib_68 import DlibDetector

    return DlibDetector(**options)  # type: ignore[arg-type]


DETECTORS: dict[str, Callable[..., Detector]] = {"mtcnn": MtcnnDetector, "dlib": _dlib_detector}


def register_detector(name: str, factory: Callable[..., Detector]) -> None:
    """Make a detector plugin available to ``create_detector`` (and merge options) by name."""
    DETECTORS[name] = factory


def create_detector(name: str = "mtcnn", **options: object) -> Detector:
    """Instantiate a registered detector plugin with its options (None: the plugin's default)."""
    options = {k: v for k, v in options.items() if v is not None}
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise DetectorError(f"unknown detector {name!r} (have: {', '.join(sorted(DETECTORS))})"
                            ) from None
    return factory(**options)

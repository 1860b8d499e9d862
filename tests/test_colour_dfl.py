"""swapd's colour transfers against DeepFaceLab's own functions (core/imagelib/color_transfer.py)
on the same inputs, called as DeepFaceLab's merger (merger/MergeMasked.py) calls them.

Set SWAPD_DFL_SRC to a DeepFaceLab checkout; without it these tests are skipped (nothing is
ever fetched). DFL's module is loaded from its file alone (its package pulls in the rest of
DFL). It imports numexpr for its rct only; where numexpr is not installed, a stand-in
evaluates the same expressions with numpy. The always-on tests of the same behaviour are in
tests/test_merge_options.py.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from swapd.demo.clip import ClipTruth, truth_path
from swapd.media import probe_video, read_frames
from swapd.merger import colour
from tests.merge_support import face_crops

DFL = os.environ.get("SWAPD_DFL_SRC")
pytestmark = pytest.mark.skipif(not DFL, reason="SWAPD_DFL_SRC not set")


def _numexpr_stand_in() -> types.ModuleType:
    module = types.ModuleType("numexpr")

    def evaluate(expression: str) -> Any:
        return eval(expression, {}, dict(sys._getframe(1).f_locals))  # noqa: S307 (DFL's own)

    module.evaluate = evaluate  # type: ignore[attr-defined]
    return module


@pytest.fixture(scope="module")
def dfl() -> types.ModuleType:
    assert DFL is not None
    path = Path(DFL) / "core" / "imagelib" / "color_transfer.py"
    try:
        import numexpr  # noqa: F401
    except ImportError:
        sys.modules.setdefault("numexpr", _numexpr_stand_in())
    spec = importlib.util.spec_from_file_location("dfl_color_transfer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def crops(synthetic_clip: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The crops tests/test_merge_options.py tests on: frame 20's face, cast, and its mask."""
    frame = next(f for k, f in enumerate(read_frames(probe_video(synthetic_clip))) if k == 20)
    return face_crops(frame, ClipTruth.load(truth_path(synthetic_clip)).landmarks[20])


def _inputs(crops: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """The swapped face (a cast copy), the original, the mask, and MergeMasked's
    ``wrk_face_mask_area_a`` (1 where the mask is above 0), (H, W, 1)."""
    original, cast_face, mask = crops
    return cast_face, original, mask, (mask > 0).astype(np.float32)[..., None]


@pytest.mark.parametrize(("method", "seed", "tolerance"), [
    # lct and mkl: DFL's arithmetic is float32 in places (its means), swapd's float64
    ("lct", None, 1e-4), ("mkl", None, 1e-4), ("mkl-m", None, 1e-4), ("idt", 16, 1e-6),
    ("idt-m", 16, 1e-6), ("sot", 7, 1e-6), ("sot-m", 7, 1e-6)])
def test_swapds_transfers_are_deepfacelabs(dfl: types.ModuleType, crops, method: str,
                                           seed: int | None, tolerance: float) -> None:
    """The same pixels as DFL's function, on its masked variants' zero-filled crops; the random
    rotations and directions are the same ones (DFL's global seed set to swapd's)."""
    swapped, original, mask, area = _inputs(crops)
    if method.endswith("-m"):  # MergeMasked.py: prd_face_bgr*wrk_face_mask_area_a, ...
        a, b = swapped * area, original * area
    else:
        a, b = swapped, original
    if seed is not None:
        np.random.seed(seed)
    base = method.removesuffix("-m")
    if base == "lct":
        theirs = dfl.linear_color_transfer(a, b)
    elif base == "mkl":
        theirs = dfl.color_transfer_mkl(a, b)
    elif base == "idt":
        theirs = dfl.color_transfer_idt(a, b)
    else:  # sot-m: steps=10, batch_size=30 in MergeMasked.py; sot: DFL's defaults
        theirs = np.clip(dfl.color_transfer_sot(a, b, steps=10, batch_size=30)
                         if method == "sot-m" else dfl.color_transfer_sot(a, b), 0.0, 1.0)
    ours = colour.transfer(method, swapped, original, mask)
    inside = area[..., 0] > 0
    worst = np.abs(ours - theirs)
    print(f"{method}: worst {worst.max():.2e}, inside {worst[inside].max():.2e}")
    assert worst.max() < tolerance


def test_deepfacelabs_hist_match_mode_is_swapds(dfl: types.ModuleType, crops) -> None:
    """MergeMasked.py's hist-match mode (masked): both faces white outside the mask, then
    color_hist_match with the threshold; swapd's color_hist_match on the same faces."""
    swapped, original, _, area = _inputs(crops)
    white = 1.0 - area
    hist_1 = np.minimum(swapped * area + white, 1.0)
    hist_2 = original * area + white
    for threshold in (255, 200):
        theirs = dfl.color_hist_match(hist_1, hist_2, threshold).astype(np.float32)
        ours = colour.color_hist_match(hist_1, hist_2, threshold)
        assert np.abs(ours - theirs).max() < 1e-6


def test_deepfacelabs_rct_misses_the_faces_colour_where_swapds_does_not(
        dfl: types.ModuleType, crops) -> None:
    """Why swapd's rct keeps masked statistics: DFL's rct (the only one it has, masked: the
    L*a*b* face zeroed outside the mask, statistics over the whole crop) leaves the face's a*
    and b* means several units from the original's inside the mask."""
    swapped, original, mask, area = _inputs(crops)
    inside = mask > 0.99

    def lab_mean(image: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(np.ascontiguousarray(image, np.float32), cv2.COLOR_BGR2LAB
                            )[inside].mean(0)

    target = lab_mean(original)
    theirs = dfl.reinhard_color_transfer(swapped, original, target_mask=area, source_mask=area)
    ours = colour.transfer("rct", swapped, original, mask)
    miss_theirs = np.abs(lab_mean(theirs) - target)
    miss_ours = np.abs(lab_mean(ours) - target)
    print(f"L*a*b* mean miss inside the mask: DFL {miss_theirs.round(2)}, swapd "
          f"{miss_ours.round(2)}")
    assert miss_ours.max() < 1.5 < 5.0 < miss_theirs.max()

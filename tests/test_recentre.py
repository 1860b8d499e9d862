"""Re-cutting stored faces at the trainer's centering: a head-centred 512 px face must give the
face-centred 128 px crop (coverage 87.5 %) a face-centred original gives, checked against the
synthetic generator's ground-truth landmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from swapd.demo.face_sets import write_face_set
from swapd.demo.identity import DEMO_B
from swapd.faces.alignment import recentre_matrix, transform_points
from swapd.faces.faceswap_png import read_aligned_png
from swapd.faces.masks import FACE
from swapd.trainer.data import FaceSet, crop_landmarks


@pytest.fixture(scope="module")
def stored_both_ways(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("centering")
    # The same seed renders the same views, stored two ways.
    write_face_set(root / "head", DEMO_B, 6, seed=21, size=512, centering="head")
    write_face_set(root / "face", DEMO_B, 6, seed=21, size=512, centering="face")
    return root / "head", root / "face"


def test_landmarks_recut_exactly(stored_both_ways: tuple[Path, Path]) -> None:
    head_dir, face_dir = stored_both_ways
    worst = 0.0
    for head_png, face_png in zip(sorted(head_dir.glob("*.png")), sorted(face_dir.glob("*.png")),
                                  strict=True):
        _, head_meta = read_aligned_png(head_png)
        _, face_meta = read_aligned_png(face_png)
        assert head_meta and face_meta and head_meta.swapd and face_meta.swapd
        assert head_meta.swapd["centering"] == "head"
        head_points = np.asarray(head_meta.swapd["aligned_landmarks"])
        face_points = np.asarray(face_meta.swapd["aligned_landmarks"])
        recut = transform_points(head_points, recentre_matrix(512, "head", "face"))
        ours = crop_landmarks(recut, 512, 128, 0.875)
        expected = crop_landmarks(face_points, 512, 128, 0.875)
        worst = max(worst, float(np.abs(ours - expected).max()))
    print(f"largest landmark difference after re-cutting head 512 -> face 128: {worst:.3f} px")
    assert worst < 0.05  # the stored landmarks are rounded to 0.01 px


def test_face_set_recuts_images_and_masks(stored_both_ways: tuple[Path, Path]) -> None:
    head_dir, face_dir = stored_both_ways
    from_head = FaceSet(head_dir, 128, coverage=0.875, centering="face")
    from_face = FaceSet(face_dir, 128, coverage=0.875, centering="face")
    diff = np.abs(from_head.faces.astype(np.float32) - from_face.faces.astype(np.float32))
    print(f"mean pixel difference head-recut vs face-stored: {diff.mean():.2f} levels")
    assert diff.mean() < 3.0  # resampling differences only
    masks_a = from_head.masks[..., FACE] > 127
    masks_b = from_face.masks[..., FACE] > 127
    iou = (masks_a & masks_b).sum() / (masks_a | masks_b).sum()
    assert iou > 0.98
    # Without re-cutting the head-centred face would be a smaller face in a wider crop.
    as_stored = FaceSet(head_dir, 128, coverage=0.875, centering="head")
    assert (as_stored.masks[..., FACE] > 127).mean() < 0.8 * masks_b.mean()

"""Landmark masks and the losses that use them: drawn from the synthetic generator's known
landmarks, carried through the face cache and augmentation, weighed by the penalized loss."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from swapd.faces.faceswap_png import read_aligned_png
from swapd.faces.landmarks import LEFT_EYE, MOUTH_OUTER, RIGHT_EYE, five_points
from swapd.faces.masks import EYES, FACE, MOUTH, extended_landmarks, landmark_masks
from swapd.trainer.augment import Augmenter, AugmentSettings
from swapd.trainer.data import FaceSet
from swapd.trainer.losses import FaceLoss, mae


def _face_with_landmarks(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    image, meta = read_aligned_png(sorted(folder.glob("*.png"))[0])
    assert meta is not None and meta.swapd is not None
    return image, np.asarray(meta.swapd["aligned_landmarks"], dtype=np.float64)


def _at(mask: np.ndarray, point: np.ndarray) -> int:
    x, y = np.round(point).astype(int)
    return int(mask[y, x])


@pytest.mark.parametrize("points", [68, 5])
def test_masks_cover_their_regions(synthetic_sets: dict[str, Path], points: int) -> None:
    image, landmarks = _face_with_landmarks(synthetic_sets["alice"])
    size = image.shape[0]
    lm = landmarks if points == 68 else five_points(landmarks)
    masks = landmark_masks(lm, size)
    assert masks.shape == (size, size, 3) and masks.dtype == np.uint8
    face, eyes, mouth = masks[..., FACE], masks[..., EYES], masks[..., MOUTH]
    for eye in (RIGHT_EYE, LEFT_EYE):
        centre = landmarks[eye].mean(axis=0)
        assert _at(eyes, centre) == 255 and _at(face, centre) == 255
    mouth_centre = landmarks[MOUTH_OUTER].mean(axis=0)
    assert _at(mouth, mouth_centre) == 255 and _at(face, mouth_centre) == 255
    assert _at(face, landmarks[30]) == 255  # nose tip
    # Regions are their own: no eye on the mouth, corners of the crop are background.
    assert _at(eyes, mouth_centre) == 0 and _at(mouth, landmarks[RIGHT_EYE].mean(axis=0)) == 0
    for corner in ((0, 0), (0, size - 1), (size - 1, 0), (size - 1, size - 1)):
        assert masks[corner].max() == 0
    face_area, eye_area, mouth_area = ((m > 127).mean() for m in (face, eyes, mouth))
    print(f"{points} points: face {face_area:.1%}, eyes {eye_area:.1%}, mouth {mouth_area:.1%}")
    assert 0.15 < face_area < 0.7 and 0.005 < eye_area < 0.08 and 0.003 < mouth_area < 0.06


def test_extended_mask_reaches_above_the_brows(synthetic_sets: dict[str, Path]) -> None:
    _, landmarks = _face_with_landmarks(synthetic_sets["alice"])
    raised = extended_landmarks(landmarks)
    assert (raised[17:27, 1] < landmarks[17:27, 1]).all()  # brows moved up (smaller y)
    assert np.array_equal(raised[:17], landmarks[:17]) and np.array_equal(raised[27:],
                                                                           landmarks[27:])
    size = 256
    extended = landmark_masks(landmarks, size, "extended")[..., FACE]
    components = landmark_masks(landmarks, size, "components")[..., FACE]
    assert (extended > 127).sum() > (components > 127).sum()
    assert (components[extended == 0] == 0).all()  # components lies within extended


def test_grown_face_mask_covers_a_band_outside_the_hull(
        synthetic_sets: dict[str, Path]) -> None:
    from swapd.faces.masks import grow_face

    _, landmarks = _face_with_landmarks(synthetic_sets["alice"])
    masks = landmark_masks(landmarks, 128)
    grown = grow_face(masks, 0.06)
    assert np.array_equal(grown[..., EYES:], masks[..., EYES:])
    inside = masks[..., FACE] > 127
    assert (grown[..., FACE][inside] > 127).mean() > 0.98  # the face itself still counts
    assert (grown[..., FACE] > 127).sum() > 1.15 * inside.sum()
    assert grow_face(masks, 0.0) is masks


def test_bad_landmarks_are_refused() -> None:
    with pytest.raises(ValueError, match="68x2 or 5x2"):
        landmark_masks(np.zeros((12, 2)), 64)


def test_face_set_draws_masks_from_headers(synthetic_sets: dict[str, Path],
                                           tmp_path: Path) -> None:
    with_headers = FaceSet(synthetic_sets["alice"], 64, coverage=0.7)
    assert with_headers.without_landmarks == 0
    assert with_headers.masks.shape == (len(with_headers), 64, 64, 3)
    face_share = (with_headers.masks[..., FACE] > 127).mean()
    assert 0.3 < face_share < 0.95  # the tight crop is mostly face, the corners are not
    # The masks land on the crop: the eye mask's brightest spots sit in the upper half.
    rows = np.nonzero(with_headers.masks[..., EYES].max(axis=(0, 2)))[0]
    assert rows.max() < 40

    plain = tmp_path / "plain"
    plain.mkdir()
    for path in sorted(synthetic_sets["alice"].glob("*.png"))[:3]:
        image, _ = read_aligned_png(path)
        cv2.imwrite(str(plain / path.name), image)  # pixels only: no faceswap header
    bare = FaceSet(plain, 64)
    assert len(bare) == 3 and bare.without_landmarks == 3
    assert (bare.masks[..., FACE] == 255).all() and (bare.masks[..., EYES:] == 0).all()


def test_landmarks_outside_the_image_are_not_used(synthetic_sets: dict[str, Path],
                                                  tmp_path: Path) -> None:
    from swapd.faces.faceswap_png import write_aligned_png

    path = sorted(synthetic_sets["alice"].glob("*.png"))[0]
    image, meta = read_aligned_png(path)
    assert meta is not None and meta.swapd is not None
    meta.swapd["aligned_landmarks"] = (np.asarray(meta.swapd["aligned_landmarks"]) * 1e6).tolist()
    folder = tmp_path / "far"
    write_aligned_png(folder / path.name, image, meta)
    far = FaceSet(folder, 64)
    assert len(far) == 1 and far.without_landmarks == 1  # trained whole, nothing drawn


def test_masks_follow_the_targets_through_augmentation() -> None:
    rng = np.random.default_rng(5)
    faces = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    # Masks equal to the faces themselves: after augmentation they must still be equal,
    # so every flip and transform was applied to both alike.
    inputs, targets, masks = Augmenter(32, AugmentSettings())(faces, rng, faces.copy())
    assert np.array_equal(targets, masks)
    assert not np.array_equal(targets, faces)  # something did move
    assert not np.array_equal(inputs, targets)  # the input was warped on its own


def test_penalized_loss_ignores_background_and_weighs_eyes() -> None:
    size = 32
    target = torch.full((1, 3, size, size), 0.5)
    masks = torch.zeros(1, 3, size, size)
    masks[:, FACE, 8:24, 8:24] = 1
    masks[:, EYES, 10:13, 10:13] = 1
    plain = FaceLoss(mae, penalized_mask=True, eye_multiplier=1, mouth_multiplier=1)

    def with_error(rows: slice, cols: slice) -> torch.Tensor:
        pred = target.clone()
        pred[..., rows, cols] += 0.3
        return pred

    background = with_error(slice(0, 3), slice(0, 3))
    in_face = with_error(slice(16, 19), slice(16, 19))  # as many pixels, inside the face
    in_eye = with_error(slice(10, 13), slice(10, 13))
    assert plain(background, target, masks).item() == pytest.approx(0.0)
    assert plain(in_face, target, masks).item() > 0
    some_background = FaceLoss(mae, background_weight=0.5, eye_multiplier=1, mouth_multiplier=1)
    assert some_background(background, target, masks).item() == pytest.approx(
        0.5 * plain(in_face, target, masks).item())
    eyes_x3 = FaceLoss(mae, eye_multiplier=3, mouth_multiplier=1)
    assert eyes_x3(in_face, target, masks).item() == pytest.approx(
        plain(in_face, target, masks).item())
    assert eyes_x3(in_eye, target, masks).item() == pytest.approx(
        4 * plain(in_eye, target, masks).item())  # the face term plus three times the eyes
    unmasked = FaceLoss(mae, penalized_mask=False, eye_multiplier=1, mouth_multiplier=1)
    assert unmasked(background, target, masks).item() > 0

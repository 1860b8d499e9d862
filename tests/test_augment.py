"""The loader's augmenter (numpy + OpenCV): its batched draws and warps against the one-face
OpenCV calls they replace (cv2.getRotationMatrix2D, a flip then cv2.warpAffine, cv2.resize of
the control grid then cv2.remap), on real images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from swapd.trainer.augment import Augmenter, AugmentSettings

SIZE = 64


def _faces(n: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth random images (blurred noise): every pixel differs from its neighbours a bit,
    so a misplaced sample shows."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (n * SIZE, SIZE, channels), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 1.5).reshape(n, SIZE, SIZE, channels)


def test_transforms_are_opencv_rotation_matrices_from_the_same_draws() -> None:
    augmenter = Augmenter(SIZE)
    s = augmenter.settings
    batched = augmenter.random_transforms(np.random.default_rng(7), 12)
    one_by_one = np.random.default_rng(7)
    for matrix in batched:
        angle = one_by_one.uniform(-s.rotation_deg, s.rotation_deg)
        scale = one_by_one.uniform(1 - s.zoom, 1 + s.zoom)
        shift = one_by_one.uniform(-s.shift, s.shift, 2) * SIZE
        expected = cv2.getRotationMatrix2D(((SIZE - 1) / 2, (SIZE - 1) / 2), angle, scale)
        expected[:, 2] += shift
        np.testing.assert_allclose(matrix, expected, rtol=0, atol=1e-12)
    # One face's draw is the batch's first
    single = augmenter.random_transform(np.random.default_rng(7))
    np.testing.assert_array_equal(single, batched[0])


@pytest.mark.parametrize("channels", [3, 1])
def test_flip_and_transform_in_one_warp_match_flipping_first(channels: int) -> None:
    """Targets and masks: the flip folded into each face's matrix gives what flipping the
    image, then warping it, gives (the sampling points are the same up to rounding in
    OpenCV's fixed-point coordinates: at most 1 level on a few pixels)."""
    settings = AugmentSettings(warp=False, colour=False, clahe=0)
    augmenter = Augmenter(SIZE, settings)
    faces, masks = _faces(16, channels), _faces(16, 3, seed=1)
    _, targets, warped_masks = augmenter(faces, np.random.default_rng(3), masks)
    replay = np.random.default_rng(3)
    flips = replay.random(16) < 0.5
    assert flips.any() and not flips.all()
    matrices = augmenter.random_transforms(replay, 16)
    differing = 0
    for i in range(16):
        for image, got in ((faces[i], targets[i]), (masks[i], warped_masks[i])):
            source = image[:, ::-1] if flips[i] else image
            expected = cv2.warpAffine(np.ascontiguousarray(source), matrices[i], (SIZE, SIZE),
                                      flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE).reshape(got.shape)
            difference = np.abs(expected.astype(int) - got.astype(int))
            assert difference.max() <= 1, (i, flips[i])
            differing += int(np.count_nonzero(difference))
    assert differing <= 0.002 * faces.size * 2


def test_grid_warps_match_a_resized_control_grid() -> None:
    """The batched dense maps (two matrix products per face) are cv2.resize's bilinear maps
    of the jittered 5x5 grid, its outer 10 % cut off; the warped faces match remapping with
    those maps."""
    augmenter = Augmenter(SIZE)
    faces = _faces(8)
    noise = augmenter.grid_noise(np.random.default_rng(5), 8)
    warped = augmenter._grid_warps(faces, noise)
    pad = int(round(SIZE * 1.25))
    cut = slice(pad // 10, pad // 10 + SIZE)
    points = np.linspace(-0.5, SIZE - 0.5, 5, dtype=np.float32)
    grid_x = np.broadcast_to(points, (5, 5))
    for face, jitter, got in zip(faces, noise, warped, strict=True):
        maps = [cv2.resize((grid + j).astype(np.float32), (pad, pad))[cut, cut]
                for grid, j in ((grid_x, jitter[0]), (grid_x.T, jitter[1]))]
        expected = cv2.remap(face, maps[0], maps[1], cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        difference = np.abs(expected.astype(int) - got.astype(int))
        assert difference.max() <= 1
        assert np.count_nonzero(difference) <= 0.001 * face.size
    # The noise of n faces is n draws of one face's, in order
    one_by_one = np.random.default_rng(5)
    for jitter in noise:
        np.testing.assert_array_equal(jitter, augmenter.grid_noise(one_by_one)[0])


def test_no_warp_no_colour_leaves_the_input_the_target() -> None:
    augmenter = Augmenter(SIZE, AugmentSettings(warp=False, colour=False, clahe=0))
    inputs, targets, masks = augmenter(_faces(4), np.random.default_rng(0))
    np.testing.assert_array_equal(inputs, targets)
    assert masks.shape == (4, SIZE, SIZE, 0)


def test_clahe_and_colour_jitter_share_one_lab_round_trip() -> None:
    """CLAHE on L* of about half the faces, then the colour jitter, in one 8-bit L*a*b*
    conversion each way (faceswap's color_adjust): what OpenCV gives face by face from the
    same draws (flip, transform, CLAHE's faces and grids, lightness, chroma, in that order)."""
    settings = AugmentSettings(warp=False, flip=False, rotation_deg=0, zoom=0, shift=0)
    augmenter = Augmenter(SIZE, settings)
    faces = _faces(24)
    inputs, targets, _ = augmenter(faces, np.random.default_rng(5))
    assert np.array_equal(targets, faces)  # no geometry: the input's changes are colour's
    replay = np.random.default_rng(5)
    augmenter.random_transforms(replay, 24)
    tiles = dict(augmenter.clahe_choices(24, replay))
    assert 4 <= len(tiles) <= 20  # about half the faces
    light = 1 + replay.uniform(-settings.lightness, settings.lightness, 24)
    shift = replay.uniform(-settings.chroma, settings.chroma, (24, 2)) * 255
    levels = np.arange(256, dtype=np.float64)
    for i, face in enumerate(faces):
        lab = cv2.cvtColor(face, cv2.COLOR_BGR2LAB)
        plain = lab.copy()
        if i in tiles:
            lab[..., 0] = cv2.createCLAHE(2.0, (tiles[i], tiles[i])).apply(
                np.ascontiguousarray(lab[..., 0]))
            assert not np.array_equal(lab, plain)  # CLAHE changed this face
        table = np.stack([levels * light[i], levels + shift[i, 0], levels + shift[i, 1]],
                         axis=-1).astype(np.float32)
        table = np.clip(np.rint(table), 0, 255).astype(np.uint8).reshape(256, 1, 3)
        expected = cv2.cvtColor(cv2.LUT(lab, table), cv2.COLOR_LAB2BGR)
        assert np.array_equal(inputs[i], expected), i

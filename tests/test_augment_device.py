"""Augmentation on the training device (swapd.trainer.augment_device) against the OpenCV path
(swapd.trainer.augment): the same choices for one seed, the same distributions of warp
displacement, colour shift and flips, the same batches from one seed, and the trainer's option."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from swapd.trainer.augment import Augmenter, AugmentSettings
from swapd.trainer.augment_device import DeviceAugmenter, draw_augment
from swapd.trainer.batches import BatchLoader
from swapd.trainer.clahe_device import clahe
from swapd.trainer.data import FaceSet
from swapd.trainer.options import OptionsError
from tests.support import draw_face, make_trainer

CPU = torch.device("cpu")
SIZE = 64


def opencv_path(faces: np.ndarray, settings: AugmentSettings, seed: int,
                masks: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """(inputs, targets, masks) of the loader's OpenCV path, float NHWC in 0..255."""
    out = Augmenter(SIZE, settings)(faces, np.random.default_rng(seed), masks)
    return tuple(x.astype(np.float64) for x in out)


def device_path(faces: np.ndarray, settings: AugmentSettings, seed: int,
                masks: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """The same through the device path (on the CPU here), float NHWC in 0..255."""
    choices = draw_augment(Augmenter(SIZE, settings), len(faces), faces.shape[-1],
                           np.random.default_rng(seed))
    masks = faces[..., :0] if masks is None else masks
    out = DeviceAugmenter(SIZE, settings, CPU)(torch.from_numpy(faces), torch.from_numpy(masks),
                                               choices)
    return tuple(x.permute(0, 2, 3, 1).double().numpy() * 255 for x in out)


def cartoon_faces(n: int, seed: int, size: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([draw_face("ab"[i % 2], rng, size) for i in range(n)])


def coordinate_faces(n: int) -> np.ndarray:
    """Faces whose pixels say where they are: blue = 4 x column, red = 4 x row (green 128).
    Bilinear sampling of a ramp is the ramp, so a warped face's pixels say where they came
    from, to a quarter pixel."""
    ramp = np.arange(SIZE) * 4
    face = np.zeros((SIZE, SIZE, 3), np.uint8)
    face[..., 0] = ramp[None, :]
    face[..., 1] = 128
    face[..., 2] = ramp[:, None]
    return np.repeat(face[None], n, axis=0)


def where_from(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 2) source (x, y) of each pixel of warped :func:`coordinate_faces`."""
    return np.stack([images[..., 0], images[..., 2]], axis=-1) / 4


def warp_statistics(inputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """The input warp's displacement against its target (both from coordinate faces): the
    mean and spread of its magnitude in pixels, the outer 8 pixels left out (the border
    clamps there). And the flip rate: targets whose column ramp runs right to left."""
    inner = slice(8, SIZE - 8)
    moved = (where_from(inputs) - where_from(targets))[:, inner, inner]
    magnitude = np.linalg.norm(moved, axis=-1)
    columns = where_from(targets)[:, SIZE // 2, :, 0]
    flipped = columns[:, -8] < columns[:, 8]
    return {"mean": float(magnitude.mean()), "std": float(magnitude.std()),
            "flip_rate": float(flipped.mean())}


def test_lab_conversion_matches_opencv() -> None:
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    augmenter = DeviceAugmenter(32, AugmentSettings(clahe=0), CPU)
    lab = augmenter.bgr_to_lab(torch.from_numpy(colours).permute(0, 3, 1, 2).float() / 255)
    lab8 = torch.cat([lab[:, :1] * 255 / 100, lab[:, 1:] + 128], dim=1).permute(0, 2, 3, 1)
    expected = cv2.cvtColor(colours.reshape(-1, 32, 3), cv2.COLOR_BGR2LAB).reshape(colours.shape)
    # OpenCV's 8-bit conversion rounds each channel (a quarter level on average) and its
    # tables are coarse in the darks (up to about 2 levels of a* there).
    difference = np.abs(lab8.numpy() - expected)
    assert difference.mean() < 0.35 and np.percentile(difference, 99.9) < 1.3
    assert difference.max() < 2.5
    back = augmenter.lab_to_bgr(lab).permute(0, 2, 3, 1).numpy() * 255
    assert np.abs(back - colours).max() < 0.01


def test_one_seed_gives_the_same_augmentation_on_both_paths() -> None:
    faces = cartoon_faces(16, seed=1)
    settings = AugmentSettings()  # every augmentation on, faceswap's defaults
    inputs, targets, masks = opencv_path(faces, settings, 5, faces.copy())
    d_inputs, d_targets, d_masks = device_path(faces, settings, 5, faces.copy())
    # Targets: OpenCV rounds to uint8 (a quarter level on average); same flips and transforms.
    assert np.abs(d_targets - targets).mean() < 0.5
    assert np.abs(d_masks - masks).mean() < 0.5
    assert np.array_equal(d_masks, d_targets)  # masks follow their targets exactly
    # Inputs: the same warp and colour jitter (OpenCV's 8-bit Lab round trip rounds twice).
    assert np.abs(d_inputs - inputs).mean() < 2.0
    assert np.abs(d_inputs - d_targets).mean() > 3  # ...and they are augmented
    # Switched off, the device path is the identity.
    still = AugmentSettings(warp=True, flip=False, rotation_deg=0, zoom=0, shift=0,
                            warp_noise=0, colour=False, clahe=0)
    d_inputs, d_targets, _ = device_path(faces, still, 0)
    assert np.abs(d_inputs - faces).max() < 1e-3 and np.abs(d_targets - faces).max() < 1e-3


def test_warp_and_flip_statistics_match_the_opencv_path() -> None:
    """Independent draws (different seeds) of 600 faces per path: the displacement of the
    input's warp (mean and spread of its magnitude, about 1.6 and 0.9 px at 64 px) within 4 %,
    the flip rate within 0.06 (binomial sd at 600: 0.02). Rotation, zoom and shift are on, so
    the warp is measured after them, as the model sees it."""
    faces = coordinate_faces(600)
    settings = AugmentSettings(colour=False, clahe=0)
    cv_stats = warp_statistics(*opencv_path(faces, settings, 11)[:2])
    device_stats = warp_statistics(*device_path(faces, settings, 12)[:2])
    assert 1.0 < cv_stats["mean"] < 3.0, cv_stats  # a warp of faceswap's strength
    for key in ("mean", "std"):
        assert device_stats[key] == pytest.approx(cv_stats[key], rel=0.04), (key, cv_stats,
                                                                           device_stats)
    assert abs(cv_stats["flip_rate"] - 0.5) < 0.06
    assert abs(device_stats["flip_rate"] - cv_stats["flip_rate"]) < 0.06


def test_target_transform_statistics_match_the_opencv_path() -> None:
    """Rotation/zoom/shift of the targets: the displacement against the unaugmented face (flip
    off), mean and spread within 4 % over 600 faces each."""
    faces = coordinate_faces(600)
    settings = AugmentSettings(warp=False, flip=False, colour=False, clahe=0)
    stats = []
    for path, seed in ((opencv_path, 21), (device_path, 22)):
        targets = path(faces, settings, seed)[1]
        moved = (where_from(targets) - where_from(faces.astype(np.float64)))[:, 8:-8, 8:-8]
        magnitude = np.linalg.norm(moved, axis=-1)
        stats.append((magnitude.mean(), magnitude.std()))
    assert stats[0][0] > 1.5, stats  # the transform moves pixels
    assert stats[1] == pytest.approx(stats[0], rel=0.04), stats


def colour_shifts(path: Callable[..., tuple[np.ndarray, ...]], faces: np.ndarray,
                  seed: int) -> np.ndarray:
    """Per face, the mean L*a*b* shift of the input against its target (OpenCV's 8-bit Lab,
    one instrument for both paths), colour jitter only: (N, 3)."""
    settings = AugmentSettings(warp=False, flip=False, rotation_deg=0, zoom=0, shift=0,
                               clahe=0)
    inputs, targets, _ = path(faces, settings, seed)
    lab = [cv2.cvtColor(np.clip(np.round(x), 0, 255).astype(np.uint8).reshape(-1, SIZE, 3),
                        cv2.COLOR_BGR2LAB).reshape(x.shape).astype(np.float64)
           for x in (inputs, targets)]
    return (lab[0] - lab[1]).mean(axis=(1, 2))


def test_colour_shift_statistics_match_the_opencv_path() -> None:
    """Independent draws of 400 faces per path: each channel's mean shift within 4 standard
    errors of the difference (about 2 levels; the jitter's spread is about 16 on L* and 11 on
    a*, b*, in 8-bit Lab units), its spread within 8 %. And one seed on both paths: the same
    shift per face, no bias (under 0.25 levels on average)."""
    faces = cartoon_faces(400, seed=3)
    cv_shift, device_shift = colour_shifts(opencv_path, faces, 31), colour_shifts(
        device_path, faces, 32)
    assert cv_shift.std(axis=0).min() > 5, cv_shift.std(axis=0)  # the jitter is on
    standard_error = np.sqrt((cv_shift.var(axis=0) + device_shift.var(axis=0)) / len(faces))
    gap = np.abs(device_shift.mean(axis=0) - cv_shift.mean(axis=0))
    assert (gap < 4 * standard_error).all(), (gap, standard_error)
    spread = device_shift.std(axis=0) / cv_shift.std(axis=0)
    assert (np.abs(spread - 1) < 0.08).all(), spread
    same = colour_shifts(device_path, faces[:100], 31) - colour_shifts(opencv_path,
                                                                     faces[:100], 31)
    assert np.abs(same.mean(axis=0)).max() < 0.25, same.mean(axis=0)
    assert np.abs(same).mean() < 1.0


def test_clahe_on_the_device_is_opencvs() -> None:
    """The tables and their interpolation as cv2.createCLAHE(2.0, (g, g)).apply computes
    them, including grids that do not divide the side (padded by reflection); then the
    device path's CLAHE share and grids drawn as the OpenCV path draws them."""
    rng = np.random.default_rng(6)
    for size in (64, 96):
        grey = np.stack([cv2.cvtColor(draw_face("a", rng, size), cv2.COLOR_BGR2GRAY)
                         for _ in range(3)]) // 3 + 60
        grey = np.clip(grey + rng.integers(-10, 10, grey.shape), 0, 255).astype(np.uint8)
        for grid in (1, 2, 3, 4, 5):
            ours = clahe(torch.from_numpy(grey), grid).numpy()
            theirs = np.stack([cv2.createCLAHE(2.0, (grid, grid)).apply(g) for g in grey])
            assert np.abs(ours - theirs).max() <= 1 and (ours != theirs).mean() < 0.005
    faces = (cartoon_faces(40, seed=7) // 4 + 96).astype(np.uint8)  # low contrast
    still = AugmentSettings(warp=False, flip=False, rotation_deg=0, zoom=0, shift=0,
                            colour=False, clahe=0.5)
    inputs, targets, _ = opencv_path(faces, still, 8)
    d_inputs, d_targets, _ = device_path(faces, still, 8)
    changed = (np.abs(d_inputs - d_targets) > 0.5).reshape(40, -1).any(axis=1)
    assert 10 <= changed.sum() <= 30  # about half, the same faces as OpenCV's
    assert np.array_equal(changed, (inputs != targets).reshape(40, -1).any(axis=1))
    assert np.abs(d_inputs - inputs).mean() < 0.5  # (one Lab round trip in float, not 8-bit)
    grey_faces = faces[..., 1:2].copy()
    d_inputs, _, _ = device_path(grey_faces, still, 8)
    assert np.abs(d_inputs - opencv_path(grey_faces, still, 8)[0]).max() <= 1


def test_device_loader_batches_repeat_from_the_seed(faces: tuple[Path, Path]) -> None:
    set_a, set_b = FaceSet(faces[0], 32), FaceSet(faces[1], 32)
    settings = AugmentSettings()
    loaders = [BatchLoader(set_a, set_b, 4, settings, seed=[1, 0], device=CPU, workers=w)
               for w in (1, 1, 2)]
    other = BatchLoader(set_a, set_b, 4, settings, seed=[2, 0], device=CPU)
    opencv = BatchLoader(set_a, set_b, 4, settings, seed=[1, 0])
    try:
        for _ in range(3):
            one, again, other_batch = loaders[0].get(), loaders[1].get(), other.get()
            assert isinstance(one.input_a, torch.Tensor) and one.input_a.shape == (4, 3, 32, 32)
            for name in ("input_a", "target_a", "mask_a", "input_b", "target_b", "mask_b"):
                assert torch.equal(getattr(one, name), getattr(again, name)), name
            assert not torch.equal(one.input_a, other_batch.input_a)
            # One seed, either path: the same faces drawn, the same flips and transforms.
            plain = opencv.get()
            assert np.abs(one.target_a.numpy() - plain.target_a).mean() < 0.5 / 255
        # Two workers: their own streams, in a fixed order (reproducible, like the loader's).
        twice = BatchLoader(set_a, set_b, 4, settings, seed=[1, 0], device=CPU, workers=2)
        try:
            for _ in range(4):
                assert torch.equal(loaders[2].get().input_b, twice.get().input_b)
        finally:
            twice.close()
    finally:
        for loader in (*loaders, other, opencv):
            loader.close()


def test_grayscale_faces_augment_on_the_device() -> None:
    faces = cartoon_faces(8, seed=4)[..., 1:2].copy()
    settings = AugmentSettings()
    inputs, targets, _ = device_path(faces, settings, 3)
    cv_inputs, cv_targets, _ = opencv_path(faces, settings, 3)
    assert inputs.shape == faces.shape
    assert np.abs(targets - cv_targets).mean() < 0.5
    assert np.abs(inputs - cv_inputs).mean() < 1.0
    # no bias between the paths: the OpenCV path's lightness jitter truncated one-channel
    # faces (-0.47 levels on average) where colour faces and the device are rounded
    assert abs((inputs - cv_inputs).mean()) < 0.2


def test_trainer_augment_device_option(faces: tuple[Path, Path], tmp_path: Path) -> None:
    trainer = make_trainer(faces, tmp_path / "device", augment_device="device")  # CLAHE on
    try:
        assert trainer.loader.device_augmenter is not None
        assert trainer.loader.device_augmenter.device == trainer.device
        stats = trainer.step()
        assert np.isfinite(stats.loss_a) and np.isfinite(stats.loss_b)
    finally:
        trainer.close()
    # auto on the CPU: the loader's threads (measured faster here: docs/benchmarks.md).
    trainer = make_trainer(faces, tmp_path / "auto")
    try:
        assert trainer.loader.device_augmenter is None
    finally:
        trainer.close()
    # What only the loader can do is refused on the device, naming the option and the cause.
    with pytest.raises(OptionsError, match="augment_device.*warp_to_landmarks"):
        make_trainer(faces, tmp_path / "refused", augment_device="device",
                     warp_to_landmarks=True)


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("colour", [True, False])
@pytest.mark.parametrize("share", [0.5, 0.0])
def test_the_device_draw_takes_what_the_loader_takes(channels: int, colour: bool,
                                                      share: float) -> None:
    """Both paths leave the generator in the same state for every colour, CLAHE and channel
    combination: their draws stay in step batch after batch (a reordered or extra draw in
    either would shift every later batch)."""
    rng = np.random.default_rng(11)
    faces = rng.integers(0, 256, (12, 32, 32, channels), dtype=np.uint8)
    masks = rng.integers(0, 256, (12, 32, 32, 1), dtype=np.uint8)
    augmenter = Augmenter(32, AugmentSettings(colour=colour, clahe=share))
    loader, device = np.random.default_rng(5), np.random.default_rng(5)
    augmenter(faces, loader, masks)
    draw = draw_augment(augmenter, 12, channels, device)
    assert loader.bit_generator.state == device.bit_generator.state
    assert (draw.clahe_tiles > 0).any() == (share > 0)

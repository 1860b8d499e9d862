"""Warp to landmarks (faceswap's warp_to_landmarks): the map, the closest-match table, the
augmenter and the batch loader with the option on."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from swapd.demo.face_sets import write_face_set
from swapd.demo.identity import DEMO_A, DEMO_B
from swapd.trainer.augment import Augmenter, AugmentSettings
from swapd.trainer.batches import BatchLoader
from swapd.trainer.data import FaceSet
from swapd.trainer.warp_landmarks import (
    ClosestMatches,
    closest_matches,
    edge_anchors,
    follow,
    kept_points,
    landmark_maps,
    warp_to_landmarks,
)
from tests.support import TINY, make_trainer

SIZE = 128  # the model crop of these tests: room for well separated dots


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two folders of 8 synthetic faces each, with 68 landmarks in their PNG headers."""
    root = tmp_path_factory.mktemp("wtl")
    write_face_set(root / "a", DEMO_A, 8, seed=21, size=160)
    write_face_set(root / "b", DEMO_B, 8, seed=22, size=160)
    return {"a": root / "a", "b": root / "b"}


@pytest.fixture(scope="module")
def pair(sets: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """A face of A's landmarks and those of the face of B they differ from most."""
    src = FaceSet(sets["a"], SIZE).landmarks[0].astype(np.float64)
    others = FaceSet(sets["b"], SIZE).landmarks.astype(np.float64)
    far = np.linalg.norm(others - src, axis=2).mean(axis=1).argmax()
    return src, others[far]


def dots(points: np.ndarray, size: int = SIZE) -> np.ndarray:
    """uint8 HxWx1 image of small Gaussian dots centred on ``points`` (sub-pixel)."""
    ys, xs = np.mgrid[0:size, 0:size]
    img = np.zeros((size, size), np.float64)
    for x, y in points:
        img += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 2.0)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)[..., None]


def centroid(img: np.ndarray, near: np.ndarray, radius: int = 4) -> np.ndarray:
    """Brightness-weighted centre of the dot around ``near`` (x, y)."""
    x0, y0 = (int(round(v)) for v in near)
    window = img[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1, 0].astype(np.float64)
    ys, xs = np.mgrid[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1]
    total = window.sum()
    assert total > 0, f"no dot near {near}"
    return np.array([(xs * window).sum() / total, (ys * window).sum() / total])


def inside(points: np.ndarray, margin: int = 7) -> np.ndarray:
    """Which points lie in the image with room for a whole dot around them."""
    return ((points >= margin) & (points < SIZE - margin)).all(axis=1)


def separated_groups(src: np.ndarray, dst: np.ndarray, gap: float = 7.0) -> list[np.ndarray]:
    """The kept landmarks inside the image (in both faces), in groups whose points are at
    least ``gap`` px apart in both faces: one group's dots neither merge nor overlap."""
    candidates = [i for i in kept_points(src, dst) if inside(src[[i]])[0] and inside(dst[[i]])[0]]
    groups: list[list[int]] = []
    for i in candidates:
        for group in groups:
            if all(np.linalg.norm(pts[group] - pts[i], axis=1).min() >= gap for pts in (src, dst)):
                group.append(i)
                break
        else:
            groups.append([i])
    return [np.array(group) for group in groups]


def test_same_landmarks_without_noise_is_the_identity(pair: tuple[np.ndarray, np.ndarray]
                                                      ) -> None:
    src, _ = pair
    map_x, map_y = landmark_maps(src, src, SIZE)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    assert np.abs(map_x - xs).max() < 1e-3 and np.abs(map_y - ys).max() < 1e-3
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    out = warp_to_landmarks(image, src, src)
    assert out is not None and out.shape == image.shape
    assert np.abs(out.astype(int) - image).max() <= 1


def test_landmark_pixels_move_to_the_destination(pair: tuple[np.ndarray, np.ndarray]) -> None:
    src, dst = pair
    groups = separated_groups(src, dst)
    checked = np.concatenate(groups)
    assert len(checked) >= 50  # nearly every landmark, a few groups of dots at a time
    moves = np.linalg.norm(dst[checked] - src[checked], axis=1)
    assert np.median(moves) > 3  # the faces differ: a dot left in place is not found
    errors = {}
    for group in groups:
        out = warp_to_landmarks(dots(src[group]), src, dst)
        assert out is not None
        for i in group:
            errors[int(i)] = float(np.linalg.norm(centroid(out, dst[i], 2) - dst[i]))
    assert max(errors.values()) < 1.5, errors


def test_edge_anchors_stay_fixed(pair: tuple[np.ndarray, np.ndarray]) -> None:
    src, dst = pair
    dst = dst + np.random.default_rng(1).normal(scale=6, size=dst.shape)  # a rough warp
    map_x, map_y = landmark_maps(src, dst, SIZE)
    for x, y in edge_anchors(SIZE).astype(int):
        assert abs(map_x[y, x] - x) < 1e-3 and abs(map_y[y, x] - y) < 1e-3
    image = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    out = warp_to_landmarks(image, src, dst)
    assert out is not None
    anchors = edge_anchors(SIZE).astype(int)
    assert np.array_equal(out[anchors[:, 1], anchors[:, 0]], image[anchors[:, 1], anchors[:, 0]])
    assert np.abs(out.astype(int) - image).mean() > 5  # while the inside moved


def test_closest_matches_are_the_k_nearest() -> None:
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 64, (700, 68, 2)).astype(np.float32)  # more than one block
    dst = rng.uniform(0, 64, (90, 68, 2)).astype(np.float32)
    src[[5, 600]] = np.nan
    dst[[0, 17, 89]] = np.nan
    table = closest_matches(src, dst, 10)
    assert table.shape == (700, 10)
    assert (table[[5, 600]] == -1).all()
    valid = np.flatnonzero(np.isfinite(dst).all(axis=(1, 2)))
    for i in np.flatnonzero(np.isfinite(src).all(axis=(1, 2))):
        dist = ((src[i].astype(np.float64) - dst[valid]) ** 2).sum(axis=(1, 2))
        assert np.array_equal(table[i], valid[np.argsort(dist)[:10]]), i
    few = closest_matches(src[:3], dst[:4], 10)  # k shrinks to the faces with landmarks
    assert few.shape == (3, 3) and set(few[0]) == {1, 2, 3}
    assert closest_matches(src[:3], dst[[0]], 10).shape == (3, 0)


def test_closest_matches_follow_a_refresh(sets: dict[str, Path], tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    shutil.copytree(sets["a"], a_dir)
    b_dir.mkdir()
    for path in sorted(sets["b"].iterdir())[:4]:
        shutil.copy(path, b_dir / path.name)
    set_a, set_b = FaceSet(a_dir, 64), FaceSet(b_dir, 64)
    matches = ClosestMatches()
    table = matches.table(0, set_a.landmarks, set_b.landmarks)
    assert table.shape == (8, 4)  # only 4 faces to match with
    assert set_b.refresh() == (0, 0)  # an unchanged rescan keeps the table
    assert matches.table(0, set_a.landmarks, set_b.landmarks) is table

    copied = [set_a.paths[2], set_a.paths[5]]  # A's own faces join B: their exact matches
    for path in copied:
        shutil.copy(path, b_dir / f"zz_{path.name}")
    assert set_b.refresh() == (2, 0)
    table = matches.table(0, set_a.landmarks, set_b.landmarks)
    assert table.shape == (8, 6)
    for row, path in zip((2, 5), copied, strict=True):
        assert set_b.paths[table[row, 0]] == b_dir / f"zz_{path.name}"


def test_augmenter_carries_landmarks_through_flip_and_transform(
        pair: tuple[np.ndarray, np.ndarray]) -> None:
    src, dst = pair
    chosen = separated_groups(src, dst, gap=10)[0]
    assert len(chosen) >= 8
    settings = AugmentSettings(warp_to_landmarks=True, landmark_noise=0, rotation_deg=6,
                               zoom=0.04, shift=0.03, colour=False, clahe=0)
    augmenter = Augmenter(SIZE, settings)
    faces = np.repeat(dots(src[chosen])[None], 8, axis=0)
    landmarks = (np.repeat(src[None], 8, axis=0), np.repeat(dst[None, None], 8, axis=0))
    inputs, targets, _ = augmenter(faces, np.random.default_rng(4), landmarks=landmarks)
    # The same draws again: each face's flip, then its rotation/zoom/shift.
    replay = np.random.default_rng(4)
    flips = replay.random(8) < 0.5
    assert flips.any() and not flips.all()
    for i, (target, warped) in enumerate(zip(targets, inputs, strict=True)):
        matrix = augmenter.random_transform(replay)
        on_target = follow(src[chosen], bool(flips[i]), matrix, SIZE)
        expected = follow(dst[chosen], bool(flips[i]), matrix, SIZE)
        keep = inside(on_target) & inside(expected)
        assert keep.sum() >= 6
        # The target's dots are where the flip and transform put the landmarks...
        seen = np.array([centroid(target, p, 2) for p in on_target[keep]])
        assert np.linalg.norm(seen - on_target[keep], axis=1).max() < 1.0
        # ...and the input's are at the destination's, moved alike.
        found = np.array([centroid(warped, p, 2) for p in expected[keep]])
        assert np.linalg.norm(found - expected[keep], axis=1).max() < 1.5


def test_option_off_ignores_landmarks_bit_for_bit(pair: tuple[np.ndarray, np.ndarray]) -> None:
    src, dst = pair
    faces = np.random.default_rng(5).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    landmarks = (np.repeat(src[None], 4, axis=0), np.repeat(dst[None, None], 4, axis=0))
    plain = Augmenter(SIZE)(faces, np.random.default_rng(6))
    given = Augmenter(SIZE)(faces, np.random.default_rng(6), landmarks=landmarks)
    assert all(np.array_equal(p, g) for p, g in zip(plain, given, strict=True))


def test_faces_without_landmarks_get_the_grid_warp_of_the_option_off(
        pair: tuple[np.ndarray, np.ndarray]) -> None:
    """The grid noise is drawn for every face with the option on too: a face without
    landmarks gets, bit for bit, the input it gets with the option off."""
    src, dst = pair
    faces = np.random.default_rng(8).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    sources = np.repeat(src[None], 6, axis=0)
    sources[[1, 4]] = np.nan
    landmarks = (sources, np.repeat(dst[None, None], 6, axis=0))
    off = Augmenter(SIZE, AugmentSettings(colour=False, clahe=0))(
        faces, np.random.default_rng(3))
    on = Augmenter(SIZE, AugmentSettings(colour=False, clahe=0, warp_to_landmarks=True))(
        faces, np.random.default_rng(3), landmarks=landmarks)
    assert np.array_equal(on[1], off[1])  # the targets
    for i in range(6):
        assert np.array_equal(on[0][i], off[0][i]) == (i in (1, 4))


def test_the_batch_draws_and_warps_as_the_face_by_face_loop_did(
        pair: tuple[np.ndarray, np.ndarray]) -> None:
    """The landmark warp made for the batch at once is, bit for bit, what the face-by-face
    loop before it made (that loop, inline: each face's grid noise, its candidate and its
    landmark noise from the spawned generator, its landmarks followed and warped alone)."""
    src, dst = pair
    n = 6
    draw = np.random.default_rng(12)
    faces = draw.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    sources = np.repeat(src[None], n, axis=0)
    sources[2] = np.nan  # no landmarks: the grid warp
    candidates = np.repeat(np.stack([dst + draw.normal(scale=2, size=dst.shape)
                                     for _ in range(3)])[None], n, axis=0)
    candidates[4, 1] = np.nan  # a candidate without landmarks: the grid warp if drawn
    flip = np.array([False, True, False, True, True, False])
    augmenter = Augmenter(SIZE, AugmentSettings(warp_to_landmarks=True))
    matrices = augmenter.random_transforms(np.random.default_rng(13), n)
    got = augmenter._warp_to_landmarks(faces, (sources, candidates), flip, matrices,
                                       np.random.default_rng(14))
    rng = np.random.default_rng(14)
    own = rng.spawn(1)[0]
    expected, by_landmarks = [], []
    for i in range(n):
        noise = augmenter.grid_noise(rng)[0]
        warped = None
        target = (candidates[i, own.integers(candidates.shape[1])]
                  if np.isfinite(sources[i]).all() else None)
        if target is not None and np.isfinite(target).all():
            moved_src = follow(sources[i], bool(flip[i]), matrices[i], SIZE)
            moved_dst = follow(target, bool(flip[i]), matrices[i], SIZE)
            moved_dst += own.normal(scale=augmenter.settings.landmark_noise * SIZE,
                                    size=moved_dst.shape)
            warped = warp_to_landmarks(faces[i], moved_src, moved_dst)
        expected.append(augmenter._grid_warp(faces[i], noise) if warped is None else warped)
        by_landmarks.append(warped is not None)
    assert np.array_equal(got, np.stack(expected))
    assert sum(by_landmarks) >= 4 and not by_landmarks[2]


def test_batch_loader_warps_to_landmarks_and_leaves_targets(sets: dict[str, Path]) -> None:
    set_a, set_b = FaceSet(sets["a"], 64), FaceSet(sets["b"], 64)
    loaders = {on: BatchLoader(set_a, set_b, 4, AugmentSettings(warp_to_landmarks=on),
                               seed=[7, 0]) for on in (False, True)}
    try:
        for _ in range(2):
            off, on = loaders[False].get(), loaders[True].get()
            for side in ("a", "b"):
                target = getattr(on, f"target_{side}")
                assert np.array_equal(target, getattr(off, f"target_{side}"))
                assert np.array_equal(getattr(on, f"mask_{side}"), getattr(off, f"mask_{side}"))
                assert np.abs(getattr(on, f"input_{side}") - target).mean() > 0.01
                assert not np.array_equal(getattr(on, f"input_{side}"),
                                          getattr(off, f"input_{side}"))
    finally:
        for loader in loaders.values():
            loader.close()


def test_trainer_trains_with_warp_to_landmarks(sets: dict[str, Path], tmp_path: Path) -> None:
    assert TINY["input_size"] == 32
    with make_trainer((sets["a"], sets["b"]), tmp_path / "m", warp_to_landmarks=True) as trainer:
        assert trainer.loader._augmenter.settings.warp_to_landmarks
        assert np.isfinite(trainer.set_a.landmarks).all()
        stats = [trainer.step() for _ in range(2)]
        assert all(np.isfinite(s.loss_a) and np.isfinite(s.loss_b) for s in stats)

"""The rasterised piecewise-linear map (numba) against scipy's ``griddata`` on the same points:
the map warp_to_landmarks used before, pixel for pixel."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy.interpolate import griddata
from scipy.spatial import Delaunay

from swapd.trainer import landmark_kernels
from swapd.trainer.piecewise_linear import delaunay, piecewise_linear_maps
from swapd.trainer.triangulation import delaunay as compiled_delaunay
from swapd.trainer.warp_landmarks import (
    CANDIDATES,
    CORE,
    edge_anchors,
    kept_points,
    landmark_maps,
    warp_faces_to_landmarks,
    warp_to_landmarks,
)


def griddata_maps(src: np.ndarray, dst: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """What ``landmark_maps`` computed with scipy: griddata over every pixel, NaN -> itself."""
    ys, xs = np.mgrid[0:size, 0:size]
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    values = griddata(dst, src, grid, method="linear")
    values = np.where(np.isnan(values), grid, values).reshape(size, size, 2).astype(np.float32)
    return values[..., 0], values[..., 1]


def face_like(rng: np.random.Generator, size: int) -> np.ndarray:
    """68 points scattered over a face's middle, as a landmark set is (not a real layout)."""
    centre = np.array([size / 2, size / 2])
    return centre + rng.normal(scale=size / 7, size=(68, 2))


@pytest.mark.parametrize("size", [64, 128, 256])
def test_landmark_maps_equal_griddata(size: int) -> None:
    rng = np.random.default_rng(size)
    worst = 0.0
    for _ in range(40):
        src = face_like(rng, size)
        dst = src + rng.normal(scale=size / 40, size=src.shape)
        if rng.random() < 0.3:  # points pushed past the image, as a zoom and shift can
            dst = (dst - size / 2) * 1.6 + size / 2
        keep = kept_points(src, dst)
        src_points = np.concatenate([src[keep], edge_anchors(size)])
        dst_points = np.concatenate([dst[keep], edge_anchors(size)])
        expected = griddata_maps(src_points, dst_points, size)
        got = landmark_maps(src, dst, size)
        assert got[0].dtype == np.float32 and got[0].shape == (size, size)
        worst = max(worst, *(float(np.abs(g - e).max())
                             for g, e in zip(got, expected, strict=True)))
    assert worst < 1e-3  # float32 rounding of maps up to 256 px


def test_pixels_outside_every_triangle_read_themselves() -> None:
    size = 32
    src = np.array([[4.0, 4.0], [20.0, 6.0], [8.0, 22.0]])
    dst = np.array([[5.0, 5.0], [25.0, 5.0], [5.0, 25.0]])
    map_x, map_y = piecewise_linear_maps(src, dst, np.array([[0, 1, 2]]), size)
    expected = griddata_maps(src, dst, size)
    assert np.allclose(map_x, expected[0], atol=1e-4) and np.allclose(map_y, expected[1], atol=1e-4)
    assert (map_x[30, 30], map_y[30, 30]) == (30, 30)  # outside: itself
    assert abs(map_x[5, 25] - 20) < 1e-4 and abs(map_y[5, 25] - 6) < 1e-4  # a vertex


def test_a_triangle_without_area_changes_nothing() -> None:
    size = 16
    dst = np.array([[0.0, 0.0], [15.0, 0.0], [0.0, 15.0], [7.0, 7.0], [3.0, 3.0]])
    src = dst + 1.0
    flat = piecewise_linear_maps(src, dst, np.array([[0, 3, 4]]), size)  # collinear points
    ys, xs = np.mgrid[0:size, 0:size]
    assert np.array_equal(flat[0], xs) and np.array_equal(flat[1], ys)
    triangles = Delaunay(dst).simplices
    with_flat = piecewise_linear_maps(src, dst, np.concatenate([triangles, [[0, 3, 4]]]), size)
    alone = piecewise_linear_maps(src, dst, triangles, size)
    assert all(np.array_equal(a, b) for a, b in zip(with_flat, alone, strict=True))


def test_loader_threads_share_the_kernel() -> None:
    """Four threads at once (the loader's pool), started together, get what one thread gets."""
    rng = np.random.default_rng(3)
    pairs = [(src, src + rng.normal(scale=2, size=src.shape))
             for src in (face_like(rng, 128) for _ in range(48))]
    expected = [landmark_maps(s, d, 128) for s, d in pairs]
    start = threading.Barrier(4)
    results: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}

    def work(n: int) -> None:
        start.wait()
        results[n] = [landmark_maps(s, d, 128) for s, d in pairs]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for got in results.values():
        assert all(np.array_equal(g[0], e[0]) and np.array_equal(g[1], e[1])
                   for g, e in zip(got, expected, strict=True))


def test_bad_points_are_a_value_error_and_the_warp_falls_back() -> None:
    """Points that are not finite: ValueError, and warp_to_landmarks gives None (the caller's
    grid warp); points bunched within 1e-5 px of each other still triangulate."""
    rng = np.random.default_rng(5)
    src = face_like(rng, 64)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for bad in (np.inf, np.nan, 1e300):
        dst = src.copy()
        dst[30] = bad
        if not np.isfinite(bad):
            with pytest.raises(ValueError):
                delaunay(np.concatenate([dst, edge_anchors(64)]))
        assert warp_to_landmarks(image, src, dst) is None  # 1e300: no pixel position
    with pytest.raises(ValueError):
        piecewise_linear_maps(src, src, np.array([[0, 1, 68]]), 64)  # no point 68
    bunched = src.copy()
    bunched[20:60] = bunched[20] + rng.normal(scale=1e-5, size=(40, 2))
    points = np.concatenate([bunched, edge_anchors(64)])
    triangles = delaunay(points)
    assert len(triangles) and triangles.max() < len(points)
    out = warp_to_landmarks(image, src, bunched)
    assert out is not None and out.shape == image.shape


def test_kept_points_drop_what_point_polygon_test_finds_inside() -> None:
    """faceswap's test, point by point with OpenCV, against the vectorised one."""
    import cv2

    rng = np.random.default_rng(7)
    dropped_any = 0
    for _ in range(300):
        src = face_like(rng, 64)
        dst = src + rng.normal(scale=3, size=src.shape)
        hull = cv2.convexHull(np.concatenate([src[17:], dst[17:]]).astype(np.float32))
        dropped = {i for points in (src, dst) for i in range(18)
                   if cv2.pointPolygonTest(hull, (float(points[i, 0]), float(points[i, 1])),
                                           False) >= 0}
        expected = [i for i in range(68) if i not in dropped]
        assert kept_points(src, dst).tolist() == expected
        dropped_any += bool(dropped) and len(dropped) < 18
    assert dropped_any > 100  # most draws drop some of the 18 and keep others
    # A core collapsed to a line (a hull of two corners): OpenCV's own test decides.
    src = face_like(rng, 64)
    src[17:] = np.linspace([10.0, 10.0], [50.0, 50.0], 51)
    src[0] = (30.0, 30.0)  # on the line
    hull = cv2.convexHull(np.concatenate([src[17:], src[17:]]).astype(np.float32))
    assert len(hull) < 3
    assert 0 not in kept_points(src, src) and 1 in kept_points(src, src)


@pytest.mark.parametrize("size", [64, 256])
def test_delaunay_is_qhulls_triangulation(size: int) -> None:
    """The compiled Bowyer-Watson, trusted, gives the triangles qhull gives griddata, on
    landmark sets moved as the augmentation moves them (zoom, turn, shift, points past the
    image)."""
    rng = np.random.default_rng(11 + size)
    for _ in range(200):
        src = face_like(rng, size)
        dst = src + rng.normal(scale=size / 60, size=src.shape)
        turn = rng.normal(scale=0.3)
        rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        dst = (dst - size / 2) @ (rotation * rng.uniform(0.8, 1.4)).T + size / 2
        points = np.concatenate([dst[kept_points(src, dst)], edge_anchors(size)])
        triangles, trusted = compiled_delaunay(points)
        assert trusted  # not handed to qhull
        got = {tuple(sorted(t)) for t in triangles.tolist()}
        expected = {tuple(sorted(t)) for t in Delaunay(points).simplices.tolist()}
        assert got == expected


def test_delaunay_of_points_on_a_line_is_qhulls_error() -> None:
    """No area to triangulate: handed to qhull, which raises, and warp_to_landmarks then
    falls back to the grid warp (None)."""
    from scipy.spatial import QhullError

    line = np.stack([np.arange(10.0), 2 * np.arange(10.0) + 1], axis=1)
    with pytest.raises(QhullError):
        delaunay(line)


def test_a_batch_warps_each_face_as_it_would_alone() -> None:
    """One compiled call for the batch's maps: griddata's map for each face it makes; a face
    whose points are not finite is skipped (and comes back as it was, False: for the grid
    warp); one whose core is a line is declined and goes the slow way (OpenCV's test, point
    by point), as warp_to_landmarks takes it alone."""
    rng = np.random.default_rng(9)
    size = 64
    src = np.stack([face_like(rng, size) for _ in range(6)])
    dst = src + rng.normal(scale=1.5, size=src.shape)
    dst[2, 40] = np.nan
    src[4, CORE:] = dst[4, CORE:] = np.linspace([10.0, 10.0], [50.0, 50.0], 68 - CORE)
    usable = np.isfinite(dst).all(axis=(1, 2))
    maps = np.zeros((2, 6, size, size), np.float32)
    status = np.full(6, -1)
    landmark_kernels.landmark_maps(src, dst, usable, edge_anchors(size), CORE, CANDIDATES,
                                   maps[0], maps[1], status)
    k = landmark_kernels
    assert status.tolist() == [k.DONE, k.DONE, k.SKIPPED, k.DONE, k.DEGENERATE_CORE, k.DONE]
    for i in (0, 1, 3, 5):
        keep = kept_points(src[i], dst[i])
        expected = griddata_maps(np.concatenate([src[i][keep], edge_anchors(size)]),
                                 np.concatenate([dst[i][keep], edge_anchors(size)]), size)
        assert max(float(np.abs(g - e).max()) for g, e in zip(maps[:, i], expected, strict=True)
                   ) < 1e-3
    images = rng.integers(0, 256, (6, size, size, 3), dtype=np.uint8)
    out, warped = warp_faces_to_landmarks(images, src, dst)
    assert warped.tolist() == [True, True, False, True, True, True]
    assert np.array_equal(out[2], images[2])
    assert warp_to_landmarks(images[2], src[2], dst[2]) is None
    for i in np.flatnonzero(warped):
        alone = warp_to_landmarks(images[i], src[i], dst[i])
        assert alone is not None and np.array_equal(out[i], alone)
        assert not np.array_equal(out[i], images[i])

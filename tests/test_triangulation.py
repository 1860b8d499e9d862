"""The compiled Delaunay triangulation and convex hull (numba) against qhull's and OpenCV's,
and the cases it hands to qhull: duplicate points, a sliver on the hull."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial import Delaunay

from swapd.trainer import landmark_kernels
from swapd.trainer.piecewise_linear import delaunay
from swapd.trainer.triangulation import convex_hull
from swapd.trainer.triangulation import delaunay as compiled_delaunay
from swapd.trainer.warp_landmarks import CANDIDATES, CORE, kept_points


def triangle_set(triangles: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(sorted(t)) for t in np.asarray(triangles).tolist()}


@pytest.mark.parametrize("count", [3, 4, 12, 76, 200])
def test_delaunay_of_random_points_is_qhulls(count: int) -> None:
    rng = np.random.default_rng(count)
    for _ in range(50):
        points = rng.uniform(-20, 300, size=(count, 2))
        triangles, trusted = compiled_delaunay(points)
        assert trusted
        assert triangle_set(triangles) == triangle_set(Delaunay(points).simplices)
        corners = points[triangles]  # every triangle counter-clockwise
        edges = corners[:, 1:] - corners[:, :1]
        assert (edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0] > 0).all()


def test_duplicate_points_are_left_to_qhull() -> None:
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 64, size=(30, 2))
    points[7] = points[3]
    _, trusted = compiled_delaunay(points)
    assert not trusted
    assert triangle_set(delaunay(points)) == triangle_set(Delaunay(points).simplices)


def test_a_sliver_on_the_hull_is_left_to_qhull() -> None:
    """A point a hundred-thousandth of a pixel inside a hull edge: the sliver it makes with
    that edge is a Delaunay triangle whose circumcircle reaches past the helper triangle, so
    Bowyer-Watson loses it; the area check notices, and qhull's triangulation (the sliver
    included) is what comes back. A sliver ten times thicker is kept."""
    def points(offset: float) -> np.ndarray:
        return np.array([[0.0, 0.0], [100.0, 0.0], [50.0, offset], [50.0, 50.0], [20.0, 30.0],
                         [80.0, 20.0]])

    thin = points(1e-5)
    _, trusted = compiled_delaunay(thin)
    assert not trusted
    expected = triangle_set(Delaunay(thin).simplices)
    assert (0, 1, 2) in expected
    assert triangle_set(delaunay(thin)) == expected
    thicker, trusted = compiled_delaunay(points(1e-4))
    assert trusted and (0, 1, 2) in triangle_set(thicker)


def test_convex_hull_is_opencvs() -> None:
    rng = np.random.default_rng(2)
    for count in (1, 2, 3, 10, 102):
        for _ in range(40):
            points = rng.normal(scale=20, size=(count, 2)).astype(np.float32).astype(np.float64)
            if count > 3 and rng.random() < 0.3:  # whole pixels: points on an edge, left out
                points = np.round(points / 4) * 4
            corners = convex_hull(points)
            expected = cv2.convexHull(points.astype(np.float32), returnPoints=False).ravel()
            if count >= 3:
                assert set(corners.tolist()) == set(expected.tolist())
                ring = points[corners]  # counter-clockwise: the shoelace sum is positive
                assert np.dot(ring[:, 0], np.roll(ring[:, 1], -1)) > np.dot(
                    ring[:, 1], np.roll(ring[:, 0], -1))
            else:
                assert len(corners) == count


def test_kept_mask_is_kept_points() -> None:
    """The kernel's choice of the landmarks that steer (one test against every hull edge,
    compiled) is the one ``kept_points`` makes with OpenCV's hull."""
    rng = np.random.default_rng(7)
    centre = np.array([32.0, 32.0])
    for _ in range(300):
        src = centre + rng.normal(scale=9, size=(68, 2))
        dst = src + rng.normal(scale=3, size=src.shape)
        keep, ok = landmark_kernels.kept_mask(src, dst, CORE, CANDIDATES)
        assert ok
        assert np.flatnonzero(keep).tolist() == kept_points(src, dst).tolist()
    src[CORE:] = np.linspace([10.0, 10.0], [50.0, 50.0], 68 - CORE)  # a core on a line
    _, ok = landmark_kernels.kept_mask(src, src, CORE, CANDIDATES)
    assert not ok  # the caller asks OpenCV, point by point

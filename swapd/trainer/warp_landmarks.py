"""faceswap's warp to landmarks (from dfaker): the input's warp moves a face's landmarks
toward those of a similar face of the other side, instead of jittering a 5x5 grid.

Each face of one side is matched once with the ``CLOSEST`` faces of the other side whose 68
landmarks are nearest (sum of squared point distances, in model-crop pixels: faceswap's
``_cache_closest_matches``); per sample one of them is drawn, its landmarks get Gaussian noise
(``2 / 256`` of the side) and become the destination. The corners and edge midpoints stay put;
jaw points inside the convex hull of both faces' cores (landmarks 17 on) are left out so they
cannot fold the map. The dense map is the piecewise-linear interpolation of the point pairs
over their Delaunay triangulation (what ``scipy.interpolate.griddata`` computes), made for a
whole batch in compiled code (:mod:`swapd.trainer.landmark_kernels`) and applied with
``cv2.remap``.

Where this differs from faceswap (lib/training/augmentation.py ``_random_warp_landmarks``):

* faceswap evaluates ``griddata`` on a (row, column) grid with (x, y) points, so its map is
  the transpose of the intended one; here each landmark pixel lands on its destination.
* faceswap warps with the landmarks as stored, after it has flipped and rotated the image;
  here both faces' landmarks follow the target's flip and transform (see
  :meth:`swapd.trainer.augment.Augmenter.__call__`).
* The core hull is built from float points (faceswap truncates them to int32).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from swapd.trainer import piecewise_linear

CLOSEST = 10  # faces of the other side a face may be warped toward
CORE = 17  # landmarks 17..67: brows, nose, eyes, mouth
CANDIDATES = 18  # points 0..17 may be dropped when inside the core's hull (as faceswap)
FARTHEST = 2.0**24  # a landmark coordinate past this is no position (float32 loses pixels)
CHUNK = 512  # source faces per block of the distance matrix (512 x 5,000 float64: 20 MB)


def has_landmarks(points: np.ndarray) -> np.ndarray:
    """Per face of an (N, 68, 2) array: whether its landmarks are known (finite)."""
    return np.isfinite(points).all(axis=(1, 2))


def closest_matches(src: np.ndarray, dst: np.ndarray, k: int = CLOSEST) -> np.ndarray:
    """For each face of ``src`` (N, 68, 2), the indices into ``dst`` (M, 68, 2) of the ``k``
    faces with the smallest sum of squared landmark distances, nearest first.

    NaN rows (faces without landmarks) of ``dst`` are never matched; those of ``src`` get a
    row of -1. ``k`` shrinks to the number of ``dst`` faces with landmarks. The distances
    come from one matrix product per block of ``CHUNK`` source faces.
    """
    targets = np.flatnonzero(has_landmarks(dst))
    k = min(k, len(targets))
    out = np.full((len(src), k), -1, np.int64)
    rows = np.flatnonzero(has_landmarks(src))
    if k == 0 or len(rows) == 0:
        return out
    flat = dst[targets].reshape(len(targets), -1).astype(np.float64)
    centre = flat.mean(axis=0)  # centred: |a|^2 + |b|^2 - 2ab loses less to rounding
    flat -= centre
    norms = np.einsum("ij,ij->i", flat, flat)
    for start in range(0, len(rows), CHUNK):
        block = rows[start:start + CHUNK]
        a = src[block].reshape(len(block), -1).astype(np.float64) - centre
        dist = np.einsum("ij,ij->i", a, a)[:, None] + norms[None, :] - 2 * (a @ flat.T)
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(dist, part, axis=1), axis=1, kind="stable")
        out[block] = targets[np.take_along_axis(part, order, axis=1)]
    return out


class ClosestMatches:
    """Closest-match tables between two face sets, one per direction, rebuilt on first use
    after either set's landmarks change (:meth:`FaceSet.refresh` replaces its arrays; an
    unchanged rescan keeps the table). Safe to share between loader threads."""

    def __init__(self, k: int = CLOSEST) -> None:
        self.k = k
        self._lock = threading.Lock()
        self._tables: dict[object, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def table(self, key: object, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """:func:`closest_matches` of ``src`` in ``dst``, cached under ``key`` (a direction)."""
        with self._lock:
            cached = self._tables.get(key)
            if cached is not None and _same(cached[0], src) and _same(cached[1], dst):
                table = cached[2]
            else:
                table = closest_matches(src, dst, self.k)
            self._tables[key] = (src, dst, table)
            return table


def candidate_landmarks(table: np.ndarray, other: np.ndarray) -> np.ndarray:
    """(n, k, 68, 2) float32: the landmarks in ``other`` (M, 68, 2) of each face's closest
    matches (rows of a :func:`closest_matches` table); NaN where a face has none (-1)."""
    return np.where((table >= 0)[..., None, None], other[table], np.nan).astype(np.float32)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (a.shape == b.shape and np.array_equal(a, b, equal_nan=True))


def edge_anchors(size: int) -> np.ndarray:
    """The 8 fixed points: corners and edge midpoints (faceswap's, in pixel centres)."""
    top, mid = size - 1, size // 2 - 1
    return np.array([(0, 0), (0, top), (top, top), (top, 0),
                     (mid, 0), (mid, top), (top, mid), (0, mid)], dtype=np.float64)


def kept_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Indices of the landmarks that steer the warp: all but the first ``CANDIDATES`` points
    lying in (or on) the convex hull of both faces' core landmarks, in either face (faceswap's
    ``cv2.pointPolygonTest(...) >= 0``, as one test of every point against every hull edge;
    the two may differ for a point on an edge to within rounding)."""
    hull = cv2.convexHull(np.concatenate([src[CORE:], dst[CORE:]]).astype(np.float32))
    points = np.concatenate([src[:CANDIDATES], dst[:CANDIDATES]]).astype(np.float32)
    if len(hull) < 3:  # the core collapsed to a point or a line: OpenCV's test, point by point
        inside = np.array([cv2.pointPolygonTest(hull, (float(x), float(y)), False) >= 0
                           for x, y in points])
    else:
        corners = hull.reshape(-1, 2).astype(np.float64)
        edges = np.concatenate([corners[1:], corners[:1]]) - corners  # corner i to i + 1
        rel = points.astype(np.float64)[:, None, :] - corners[None]
        cross = edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[..., 0]
        inside = (cross >= 0).all(axis=1) | (cross <= 0).all(axis=1)  # convex: one side
    keep = np.ones(len(src), dtype=bool)
    keep[:CANDIDATES] = ~(inside[:CANDIDATES] | inside[CANDIDATES:])
    return np.flatnonzero(keep)


def landmark_maps(src: np.ndarray, dst: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps (x, y) that move an image's ``src`` landmarks to ``dst``: the output
    pixel at each destination point reads the input at its source point. Raises ValueError
    for points that are not finite (or qhull's ``QhullError``, a RuntimeError, where
    :func:`~swapd.trainer.piecewise_linear.delaunay` hands over to it and it fails).

    One compiled call a face (:func:`~swapd.trainer.landmark_kernels.landmark_map`); where
    it declines (a core without area, a triangulation it cannot trust) the same steps run
    one by one, with OpenCV's and qhull's answers."""
    if not (np.abs(src) < FARTHEST).all() or not (np.abs(dst) < FARTHEST).all():  # NaN too
        raise ValueError("landmarks must be finite pixel positions")
    src = np.ascontiguousarray(src, np.float64)
    dst = np.ascontiguousarray(dst, np.float64)
    anchors = edge_anchors(size)
    map_x = np.empty((size, size), np.float32)
    map_y = np.empty((size, size), np.float32)
    kernels = piecewise_linear.kernels()
    if kernels.landmark_map(src, dst, anchors, CORE, CANDIDATES, map_x, map_y) == kernels.DONE:
        return map_x, map_y
    return _maps_step_by_step(src, dst, size)


def _maps_step_by_step(src: np.ndarray, dst: np.ndarray, size: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`landmark_maps` where the compiled call declines: the points that steer by
    OpenCV's test, the triangulation compiled or else qhull's (which may raise)."""
    keep = kept_points(src, dst)
    anchors = edge_anchors(size)
    src_points = np.concatenate([src[keep], anchors])
    dst_points = np.concatenate([dst[keep], anchors])
    # The anchors span the image, so a pixel outside every triangle (rounding at the border
    # only) reads itself, as griddata's NaN did.
    return piecewise_linear.piecewise_linear_maps(
        src_points, dst_points, piecewise_linear.delaunay(dst_points), size)


def warp_to_landmarks(image: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """``image`` (HxW or HxWxC, square) warped so its ``src`` landmarks move to ``dst``; None
    when the points are degenerate (the caller falls back to the grid warp)."""
    from scipy.spatial import QhullError

    try:
        map_x, map_y = landmark_maps(src, dst, image.shape[0])
    except (QhullError, ValueError):  # not finite, or nothing to triangulate
        return None
    return _remap(image, map_x, map_y)


def warp_faces_to_landmarks(images: np.ndarray, src: np.ndarray, dst: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`warp_to_landmarks` for a batch: ``images`` (N, S, S[, C]) with their ``src``
    and ``dst`` landmarks (N, 68, 2). Returns the warped images and which of them were
    warped (False where the points are not finite or degenerate: that face of the result is
    left as it came, for the caller's grid warp). Every face's map in one compiled call."""
    from scipy.spatial import QhullError

    n, size = len(images), images.shape[1]
    src = np.ascontiguousarray(src, np.float64)
    dst = np.ascontiguousarray(dst, np.float64)
    usable = (np.abs(src) < FARTHEST).all(axis=(1, 2)) & (np.abs(dst) < FARTHEST).all(axis=(1, 2))
    maps = np.empty((2, n, size, size), np.float32)
    status = np.empty(n, np.int64)
    kernels = piecewise_linear.kernels()
    kernels.landmark_maps(src, dst, usable, edge_anchors(size), CORE, CANDIDATES, maps[0],
                          maps[1], status)
    out = images.copy()
    warped = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(usable):
        map_x, map_y = maps[0, i], maps[1, i]
        if status[i] != kernels.DONE:
            try:
                map_x, map_y = _maps_step_by_step(src[i], dst[i], size)
            except (QhullError, ValueError):  # nothing to triangulate
                continue
        out[i], warped[i] = _remap(images[i], map_x, map_y), True
    return out, warped


def _remap(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(image.shape)


def follow(points: np.ndarray, flipped: bool | np.ndarray, matrix: np.ndarray,
           size: int) -> np.ndarray:
    """(…, 68, 2) landmarks moved like the image: mirrored first when ``flipped``, then the
    2x3 affine ``matrix`` (``cv2.warpAffine``'s, in pixel centres). For a batch (N, 68, 2),
    ``flipped`` (N,) and ``matrix`` (N, 2, 3), one per face."""
    flipped = np.asarray(flipped)
    if flipped.ndim and flipped.shape != points.shape[:-2]:
        raise ValueError(f"{flipped.shape} flips for landmark sets of {points.shape[:-2]}")
    pts = points.astype(np.float64)
    pts[..., 0] = np.where(flipped[..., None], size - 1 - pts[..., 0], pts[..., 0])
    matrix = np.asarray(matrix, np.float64)
    return pts @ np.swapaxes(matrix[..., :2], -1, -2) + matrix[..., None, :, 2]

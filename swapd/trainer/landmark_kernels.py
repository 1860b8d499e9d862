"""warp_to_landmarks' map in compiled code (numba), one call a batch: for each face, which
landmarks steer, their Delaunay triangulation (:mod:`swapd.trainer.triangulation`) and the
piecewise-linear map rasterised.

At 60-80 points a face the work itself takes microseconds; what cost the time was around it
(qhull or OpenCV's ``Subdiv2D`` per call, numpy's small operations to check and index their
results: 0.46 ms a 64 px face in all, 0.12 ms now; docs/benchmarks.md, "warp_to_landmarks,
compiled end to end").

Importing this module imports numba: only :mod:`swapd.trainer.piecewise_linear` imports it,
when the option is on. How the functions compile, and where they are cached between
processes: :mod:`swapd.trainer.jit`. A call with array arguments from one compiled function
to another costs their reference counts, so the hottest loops are written out in place.
"""

from __future__ import annotations

import numpy as np

from swapd.trainer.jit import njit
from swapd.trainer.triangulation import convex_hull, delaunay

# A pixel centre this close outside a triangle (in barycentric units) still counts as inside:
# rounding must not leave the pixels on a shared edge to neither triangle.
EDGE_TOLERANCE = 1e-9
# What landmark_map returns, per face.
DONE, DEGENERATE_CORE, UNTRUSTED, SKIPPED = 0, 1, 2, 3


@njit
def kept_mask(src: np.ndarray, dst: np.ndarray, core: int, candidates: int
              ) -> tuple[np.ndarray, bool]:
    """Which landmarks steer the warp (see ``warp_landmarks.kept_points``): all but the first
    ``candidates`` points lying in (or on) the convex hull of both faces' points from ``core``
    on, in either face, the points rounded to float32 as OpenCV's test has them. False when
    that hull has no area (the caller asks OpenCV, point by point)."""
    n = src.shape[0]
    cores = np.empty((2 * (n - core), 2))
    for i in range(n - core):
        for axis in range(2):
            cores[i, axis] = np.float32(src[core + i, axis])
            cores[n - core + i, axis] = np.float32(dst[core + i, axis])
    corners = convex_hull(cores)
    keep = np.ones(n, np.bool_)
    if corners.shape[0] < 3:
        return keep, False
    for i in range(candidates):
        for points in (src, dst):
            px, py = np.float64(np.float32(points[i, 0])), np.float64(np.float32(points[i, 1]))
            left = right = True  # every edge's cross product >= 0, or every one <= 0
            for j in range(corners.shape[0]):
                a, b = corners[j], corners[(j + 1) % corners.shape[0]]
                cross = ((cores[b, 0] - cores[a, 0]) * (py - cores[a, 1])
                         - (cores[b, 1] - cores[a, 1]) * (px - cores[a, 0]))
                left &= cross >= 0
                right &= cross <= 0
            if left or right:
                keep[i] = False
    return keep, True


@njit
def row_span(p: float, v: float, lo: float, hi: float) -> tuple[float, float]:
    """The columns ``lo..hi`` narrowed to where the barycentric weight ``p * x + v`` is at
    least ``-EDGE_TOLERANCE``."""
    if p > 0:
        return max(lo, (-EDGE_TOLERANCE - v) / p), hi
    if p < 0:
        return lo, min(hi, (-EDGE_TOLERANCE - v) / p)
    return (lo, hi) if v >= -EDGE_TOLERANCE else (lo, -1.0)


@njit
def rasterise(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray,
              map_x: np.ndarray, map_y: np.ndarray) -> None:
    """Fill ``map_x``/``map_y`` (size x size, float32) with the map that sends each ``dst``
    point (P, 2) to its ``src`` point over ``triangles`` (T, 3 indices into the points):
    each triangle walks the pixel rows it spans and writes, over each row's span inside it,
    the barycentric mix of its source points; pixels outside every triangle map to
    themselves."""
    size_y, size_x = map_x.shape
    for y in range(size_y):
        for x in range(size_x):
            map_x[y, x] = x
            map_y[y, x] = y
    for t in range(triangles.shape[0]):
        a, b, c = triangles[t, 0], triangles[t, 1], triangles[t, 2]
        ax, ay = dst[a, 0], dst[a, 1]
        bx, by = dst[b, 0], dst[b, 1]
        cx, cy = dst[c, 0], dst[c, 1]
        det = (by - cy) * (ax - cx) + (cx - bx) * (ay - cy)
        if abs(det) < 1e-12:  # no area, no pixel centre strictly inside
            continue
        inv = 1.0 / det
        # Barycentric weights as functions of the pixel: la = pa * x + qa * y + ra, and so on.
        pa, qa = (by - cy) * inv, (cx - bx) * inv
        ra = -(pa * cx + qa * cy)
        pb, qb = (cy - ay) * inv, (ax - cx) * inv
        rb = -(pb * cx + qb * cy)
        pc, qc, rc = -pa - pb, -qa - qb, 1.0 - ra - rb
        # ...so the map is affine inside the triangle: map_x = ux * x + vx * y + wx.
        ux = pa * src[a, 0] + pb * src[b, 0] + pc * src[c, 0]
        vx = qa * src[a, 0] + qb * src[b, 0] + qc * src[c, 0]
        wx = ra * src[a, 0] + rb * src[b, 0] + rc * src[c, 0]
        uy = pa * src[a, 1] + pb * src[b, 1] + pc * src[c, 1]
        vy = qa * src[a, 1] + qb * src[b, 1] + qc * src[c, 1]
        wy = ra * src[a, 1] + rb * src[b, 1] + rc * src[c, 1]
        # in floats first: int() of a value past int64 is undefined in compiled code
        y0 = int(np.floor(min(max(min(ay, by, cy), 0.0), float(size_y))))
        y1 = int(np.ceil(max(min(max(ay, by, cy), size_y - 1.0), -1.0)))
        for y in range(y0, y1 + 1):
            # The row's span where all three weights are >= -EDGE_TOLERANCE: a pixel centre
            # on an edge shared by two triangles goes to both (the same value to rounding).
            lo, hi = row_span(pa, qa * y + ra, 0.0, size_x - 1.0)
            lo, hi = row_span(pb, qb * y + rb, lo, hi)
            lo, hi = row_span(pc, qc * y + rc, lo, hi)
            lo, hi = min(lo, float(size_x)), max(hi, -1.0)  # finite before int()
            row_x, row_y = vx * y + wx, vy * y + wy
            for x in range(int(np.ceil(lo)), int(np.floor(hi)) + 1):
                map_x[y, x] = ux * x + row_x
                map_y[y, x] = uy * x + row_y


@njit
def landmark_map(src: np.ndarray, dst: np.ndarray, anchors: np.ndarray, core: int,
                 candidates: int, map_x: np.ndarray, map_y: np.ndarray) -> int:
    """warp_to_landmarks' map into ``map_x``/``map_y``: the kept landmarks of ``src`` and
    ``dst`` (P, 2, float64) with the fixed ``anchors``, triangulated over the destination
    points and rasterised. DONE, or why the caller must take the slower path: the core's hull
    has no area (DEGENERATE_CORE) or the triangulation is not trusted (UNTRUSTED)."""
    keep, ok = kept_mask(src, dst, core, candidates)
    if not ok:
        return DEGENERATE_CORE
    m = int(keep.sum()) + anchors.shape[0]
    src_points = np.empty((m, 2))
    dst_points = np.empty((m, 2))
    # (element by element: numba's slice assignment adds seconds to the compilation)
    j = 0
    for i in range(src.shape[0] + anchors.shape[0]):
        if i >= src.shape[0]:
            for axis in range(2):
                src_points[j, axis] = dst_points[j, axis] = anchors[i - src.shape[0], axis]
            j += 1
        elif keep[i]:
            for axis in range(2):
                src_points[j, axis], dst_points[j, axis] = src[i, axis], dst[i, axis]
            j += 1
    triangles, trusted = delaunay(dst_points)
    if not trusted:
        return UNTRUSTED
    rasterise(src_points, dst_points, triangles, map_x, map_y)
    return DONE


@njit
def landmark_maps(src: np.ndarray, dst: np.ndarray, usable: np.ndarray, anchors: np.ndarray,
                  core: int, candidates: int, maps_x: np.ndarray, maps_y: np.ndarray,
                  status: np.ndarray) -> None:
    """:func:`landmark_map` for a batch (N, P, 2 points, N x size x size maps): the ``usable``
    faces' maps, each face's outcome into ``status`` (SKIPPED for the others)."""
    for i in range(src.shape[0]):
        status[i] = SKIPPED
        if usable[i]:
            status[i] = landmark_map(src[i], dst[i], anchors, core, candidates,
                                     maps_x[i], maps_y[i])

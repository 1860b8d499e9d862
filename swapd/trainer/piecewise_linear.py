"""A piecewise-linear map over the Delaunay triangulation of its points, as ``cv2.remap`` maps:
the triangulation by OpenCV (:func:`delaunay`), the map rasterised in compiled code (numba).

For every pixel centre inside a triangle of the destination points, the map holds the
barycentric mix of that triangle's source points; pixels outside every triangle map to
themselves. This is ``scipy.interpolate.griddata(dst, src, pixels, method="linear")`` on the
same triangulation (to the float32 maps' rounding), without its search for each pixel's
triangle: each triangle walks the rows it spans. warp_to_landmarks' whole map, triangulation
included, takes 0.29 ms a 64 px face against griddata's 0.64, 0.65 against 3.2 at 256 px
(docs/benchmarks.md, "warp_to_landmarks, rasterised").

The kernel is compiled on first use, about 0.7 s once per process, and not cached on disk: a
service may have no folder it can write to (systemd's ProtectHome and a read-only install),
and numba's disk cache then refuses to compile at all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import lru_cache

import cv2
import numpy as np

# A pixel centre this close outside a triangle (in barycentric units) still counts as inside:
# rounding must not leave the pixels on a shared edge to neither triangle.
EDGE_TOLERANCE = 1e-9


def delaunay(points: np.ndarray) -> np.ndarray:
    """(T, 3) indices into ``points`` (P, 2): a Delaunay triangulation of them (qhull's, the
    one ``griddata`` uses, for points in general position; where four points share a circle
    either diagonal is one), by OpenCV's ``Subdiv2D`` on the points rounded to float32: about
    half the time of scipy's ``Delaunay``, most of it outside the GIL. scipy's where OpenCV
    fails or its result cannot be trusted (checked below). Raises ValueError for points that
    are not finite."""
    if not np.isfinite(points).all():
        raise ValueError("points must be finite")
    if np.abs(points).max() > 2.0**24:  # past float32's whole numbers
        return _qhull(points)
    flat = np.ascontiguousarray(points, np.float32)
    low = np.floor(flat.min(axis=0)) - 1
    high = np.ceil(flat.max(axis=0)) + 2
    # Subdiv2D starts from a triangle round its rectangle (three helper vertices): too close,
    # and a thin triangle on the hull goes to a helper instead. A rectangle much larger than
    # the points keeps the helpers away; the area check below catches what remains.
    margin = 64 * float((high - low).max())
    if margin > 2.0**24:
        return _qhull(points)
    subdiv = cv2.Subdiv2D((int(low[0] - margin), int(low[1] - margin),
                           int(high[0] - low[0] + 2 * margin), int(high[1] - low[1] + 2 * margin)))
    try:
        subdiv.insert(flat)
    except cv2.error:  # points bunched within float32's rounding of each other, say
        return _qhull(points)
    corners = np.asarray(subdiv.getTriangleList(), np.float32).reshape(-1, 3, 2)
    # Triangles on the helper vertices go.
    inside = ((corners >= low) & (corners <= high)).all(axis=(1, 2))
    keys = flat.view(np.int64).ravel()  # a point's two float32s as one key, bit for bit
    order = np.argsort(keys, kind="stable")
    wanted = np.ascontiguousarray(corners[inside]).view(np.int64)[..., 0]
    found = np.minimum(np.searchsorted(keys, wanted, sorter=order), len(keys) - 1)
    triangles = order[found]
    # Every corner a point's, and the triangles tile the hull (none lost to a helper, no
    # sliver dropped), on the same float32 points in float64: else qhull, through scipy.
    exact = flat.astype(np.float64)
    edges = exact[triangles[:, 1:]] - exact[triangles[:, :1]]
    area = 0.5 * np.abs(edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]).sum()
    ring = cv2.convexHull(flat).reshape(-1, 2).astype(np.float64)
    hull = 0.5 * abs(np.dot(ring[:, 0], np.roll(ring[:, 1], -1))
                     - np.dot(ring[:, 1], np.roll(ring[:, 0], -1)))  # the shoelace formula
    if hull <= 0 or not np.array_equal(keys[triangles], wanted) or abs(area - hull) > 1e-9 * hull:
        return _qhull(points)
    return triangles


def _qhull(points: np.ndarray) -> np.ndarray:
    """qhull's triangulation through scipy (raises its ``QhullError`` where it has none)."""
    from scipy.spatial import Delaunay

    return Delaunay(points).simplices


def _rasterise(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray,
               map_x: np.ndarray, map_y: np.ndarray) -> None:
    """Fill ``map_x``/``map_y`` (size x size, float32) with the map that sends each ``dst``
    point (P, 2) to its ``src`` point over ``triangles`` (T, 3 indices into the points).
    Plain Python over arrays, for numba to compile (:func:`kernel`)."""
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
        # in floats first: int() of a value past int64 is undefined in compiled code
        y0 = int(np.floor(min(max(min(ay, by, cy), 0.0), float(size_y))))
        y1 = int(np.ceil(max(min(max(ay, by, cy), size_y - 1.0), -1.0)))
        for y in range(y0, y1 + 1):
            # The row's span inside the triangle, one pixel wider on each side against
            # rounding; the weights decide each pixel of it.
            lo, hi = 0.0, size_x - 1.0
            for p, q, r in ((pa, qa, ra), (pb, qb, rb), (pc, qc, rc)):
                v = q * y + r
                if p > 0:
                    lo = max(lo, -v / p - 1.0)
                elif p < 0:
                    hi = min(hi, -v / p + 1.0)
                elif v < -EDGE_TOLERANCE:
                    hi = -1.0
            lo, hi = min(lo, float(size_x)), max(hi, -1.0)  # finite before int()
            for x in range(int(np.ceil(lo)), int(np.floor(hi)) + 1):
                la = pa * x + qa * y + ra
                lb = pb * x + qb * y + rb
                lc = 1.0 - la - lb
                if la >= -EDGE_TOLERANCE and lb >= -EDGE_TOLERANCE and lc >= -EDGE_TOLERANCE:
                    map_x[y, x] = la * src[a, 0] + lb * src[b, 0] + lc * src[c, 0]
                    map_y[y, x] = la * src[a, 1] + lb * src[b, 1] + lc * src[c, 1]


_compiling = threading.Lock()


@lru_cache(maxsize=1)
def _compiled() -> Callable[..., None]:
    import numba  # importing and compiling cost a moment: only where the option is on

    return numba.njit(nogil=True)(_rasterise)


def kernel() -> Callable[..., None]:
    """:func:`_rasterise` compiled (``nogil``: loader threads run it side by side), once per
    process even when several loader threads ask for it first at the same time."""
    with _compiling:
        return _compiled()


def piecewise_linear_maps(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray,
                          size: int) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps (float32 x, y, size x size) of the piecewise-linear map sending the
    ``dst`` points (P, 2) to the ``src`` points over ``triangles`` (T, 3) of ``dst``."""
    triangles = np.ascontiguousarray(triangles, np.int64).reshape(-1, 3)
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("points must be finite")
    if len(src) != len(dst) or (triangles.size and (triangles.min() < 0
                                                    or triangles.max() >= len(dst))):
        raise ValueError(f"triangles index {len(dst)} points, and src must pair with dst")
    map_x = np.empty((size, size), np.float32)
    map_y = np.empty((size, size), np.float32)
    kernel()(np.ascontiguousarray(src, np.float64), np.ascontiguousarray(dst, np.float64),
             triangles, map_x, map_y)
    return map_x, map_y

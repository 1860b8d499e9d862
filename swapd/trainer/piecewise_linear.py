"""A piecewise-linear map over the Delaunay triangulation of its points, as ``cv2.remap`` maps:
the triangulation (:func:`delaunay`) and the map (:func:`piecewise_linear_maps`) in compiled
code (:mod:`swapd.trainer.landmark_kernels`, numba), qhull through scipy where the compiled
triangulation cannot be trusted.

For every pixel centre inside a triangle of the destination points, the map holds the
barycentric mix of that triangle's source points; pixels outside every triangle map to
themselves. This is ``scipy.interpolate.griddata(dst, src, pixels, method="linear")`` on the
same triangulation (to the float32 maps' rounding), without its search for each pixel's
triangle: each triangle walks the rows it spans (docs/benchmarks.md, "warp_to_landmarks,
rasterised" and "compiled end to end").
"""

from __future__ import annotations

from types import ModuleType

import numpy as np


def kernels() -> ModuleType:
    """:mod:`swapd.trainer.landmark_kernels`, imported on first use: numba and its compiled
    code cost about 110 MB (160 MB the first time, compiling), only where warp_to_landmarks
    is on."""
    from swapd.trainer import landmark_kernels

    return landmark_kernels


def delaunay(points: np.ndarray) -> np.ndarray:
    """(T, 3) indices into ``points`` (P, 2): a Delaunay triangulation of them (qhull's, the
    one ``griddata`` uses, for points in general position; where four points share a circle
    either diagonal is one), by Bowyer-Watson in compiled code; qhull's through scipy where
    that one cannot be trusted (duplicate points, triangles that do not tile the hull:
    checked by the kernel). Raises ValueError for points that are not finite, and qhull's
    ``QhullError`` where qhull finds nothing to triangulate."""
    if not np.isfinite(points).all():
        raise ValueError("points must be finite")
    if np.abs(points).max() > 2.0**24:  # the helper triangle would lose the points' detail
        return _qhull(points)
    triangles, trusted = kernels().delaunay(np.ascontiguousarray(points, np.float64))
    return triangles if trusted else _qhull(points)


def _qhull(points: np.ndarray) -> np.ndarray:
    """qhull's triangulation through scipy (raises its ``QhullError`` where it has none)."""
    from scipy.spatial import Delaunay

    return Delaunay(points).simplices


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
    kernels().rasterise(np.ascontiguousarray(src, np.float64),
                        np.ascontiguousarray(dst, np.float64), triangles, map_x, map_y)
    return map_x, map_y

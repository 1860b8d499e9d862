"""The Delaunay triangulation of a few dozen points in compiled code (numba): Bowyer-Watson,
the convex hull and the geometric predicates it stands on.

At warp_to_landmarks' 60-80 points a face, qhull (through scipy) and OpenCV's ``Subdiv2D``
spend most of their time around the work: a call's set-up, and numpy's small operations to
check and index their results. Here the whole triangulation is one compiled call. For points
in general position the Delaunay triangulation is unique, so this is qhull's, which
``griddata`` uses (``tests/test_piecewise_linear.py`` compares them); where four points share
a circle either diagonal is one, and the two may differ.

Imports numba (through :mod:`swapd.trainer.jit`, which says how the kernels compile and
where they are cached): only :mod:`swapd.trainer.landmark_kernels` imports this module.
Functions are compiled on their first call; numpy's sorts, reductions and slice assignments
are written out as loops, each of which would add a second or more to that compilation.
"""

from __future__ import annotations

import numpy as np

from swapd.trainer.jit import njit

# The helper triangle's reach, in widths of the points' bounding box. Far, so that no thin
# triangle on the hull goes to a helper (its circumcircle would have to reach it; at 1,024
# widths one random set of 200 points in 250 lost one); the area check in :func:`delaunay`
# catches what still does (the caller then asks qhull).
HELPER_REACH = 65536.0
# Where the circumcircle test stops trusting the circle's centre and radius (a point within
# this fraction of the radius squared of the circle) and asks the determinant.
CIRCLE_SLACK = 1e-6


@njit
def orient(ax: float, ay: float, bx: float, by: float, cx: float, cy: float) -> float:
    """Twice the signed area of triangle abc: positive when a, b, c turn counter-clockwise."""
    return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)


@njit
def in_circle(ax: float, ay: float, bx: float, by: float, cx: float, cy: float,
              px: float, py: float) -> float:
    """Positive when p lies inside the circumcircle of the counter-clockwise triangle abc
    (the classic determinant, relative to p)."""
    adx, ady, bdx, bdy, cdx, cdy = ax - px, ay - py, bx - px, by - py, cx - px, cy - py
    return ((adx * adx + ady * ady) * (bdx * cdy - cdx * bdy)
            + (bdx * bdx + bdy * bdy) * (cdx * ady - adx * cdy)
            + (cdx * cdx + cdy * cdy) * (adx * bdy - bdx * ady))


@njit
def circumcircle(ax: float, ay: float, bx: float, by: float, cx: float, cy: float
                 ) -> tuple[float, float, float]:
    """The circumcircle of abc as (centre x, centre y, radius squared); a radius squared of
    -1 for a triangle too thin for it to be trusted (then only :func:`in_circle` decides)."""
    bdx, bdy, cdx, cdy = bx - ax, by - ay, cx - ax, cy - ay
    det = 2.0 * (bdx * cdy - bdy * cdx)
    b2, c2 = bdx * bdx + bdy * bdy, cdx * cdx + cdy * cdy
    if not abs(det) > 2e-6 * np.sqrt(b2 * c2):  # the angle at a under about 1e-6 radians
        return 0.0, 0.0, -1.0
    ux, uy = (cdy * b2 - bdy * c2) / det, (bdx * c2 - cdx * b2) / det
    return ax + ux, ay + uy, ux * ux + uy * uy


@njit
def convex_hull(points: np.ndarray) -> np.ndarray:
    """Indices of the convex hull's corners of ``points`` (P, 2), counter-clockwise, points on
    an edge left out (Andrew's monotone chain)."""
    n = points.shape[0]
    order = np.arange(n)  # by x, then y: an insertion sort (a hundred points at most)
    for j in range(1, n):
        i = order[j]
        k = j
        while k > 0 and (points[order[k - 1], 0] > points[i, 0] or (
                points[order[k - 1], 0] == points[i, 0]
                and points[order[k - 1], 1] > points[i, 1])):
            order[k] = order[k - 1]
            k -= 1
        order[k] = i
    hull = np.empty(2 * n + 1, np.int64)
    k = 0
    for sweep in range(2):  # the lower chain left to right, then the upper right to left
        start = k
        for j in range(n):
            i = order[j] if sweep == 0 else order[n - 1 - j]
            while k >= start + 2 and orient(
                    points[hull[k - 2], 0], points[hull[k - 2], 1], points[hull[k - 1], 0],
                    points[hull[k - 1], 1], points[i, 0], points[i, 1]) <= 0:
                k -= 1
            hull[k] = i
            k += 1
        k -= 1  # each chain's last point is the other's first
    return hull[:max(k, 1)] if n else hull[:0]


@njit
def polygon_area(points: np.ndarray, corners: np.ndarray) -> float:
    """The area inside ``corners`` (indices into ``points``, in order): the shoelace formula."""
    total = 0.0
    for j in range(corners.shape[0]):
        a, b = corners[j], corners[(j + 1) % corners.shape[0]]
        total += points[a, 0] * points[b, 1] - points[b, 0] * points[a, 1]
    return 0.5 * abs(total)


@njit
def delaunay(points: np.ndarray) -> tuple[np.ndarray, bool]:
    """(T, 3) indices into ``points`` (P, 2, float64) of their Delaunay triangulation, and
    whether it can be trusted: False for duplicate points, an insertion the predicates
    disagree on, or triangles that do not tile the points' hull (a thin hull triangle lost
    to a helper).

    Bowyer-Watson from a helper triangle round the points: for each point in turn, the
    triangles whose circumcircles hold it go, and the hole's rim is fanned to the point.
    Each point scans every triangle (quadratic, but about 50 us for a face's 75 points)."""
    n = points.shape[0]
    none = np.empty((0, 3), np.int64)
    if n < 3:
        return none, False
    low_x, high_x, low_y, high_y = points[0, 0], points[0, 0], points[0, 1], points[0, 1]
    for i in range(1, n):
        low_x, high_x = min(low_x, points[i, 0]), max(high_x, points[i, 0])
        low_y, high_y = min(low_y, points[i, 1]), max(high_y, points[i, 1])
    reach = HELPER_REACH * max(high_x - low_x, high_y - low_y)
    if not reach > 0:
        return none, False
    mid_x, mid_y = 0.5 * (low_x + high_x), 0.5 * (low_y + high_y)
    xs = np.empty(n + 3)
    ys = np.empty(n + 3)
    for i in range(n):
        xs[i], ys[i] = points[i, 0], points[i, 1]
    xs[n], ys[n] = mid_x - 2 * reach, mid_y - reach  # counter-clockwise round the points
    xs[n + 1], ys[n + 1] = mid_x + 2 * reach, mid_y - reach
    xs[n + 2], ys[n + 2] = mid_x, mid_y + 2 * reach
    capacity = 2 * (n + 3) + 8  # a triangulation of m points has at most 2m - 5 triangles
    tris = np.empty((capacity, 3), np.int64)
    # Each triangle's circumcircle, to decide the clear cases of a point in it in a few
    # operations: points within a millionth of its radius squared of the circle go to the
    # determinant (in_circle), which decides alone.
    circles = np.empty((capacity, 3))
    tris[0, 0], tris[0, 1], tris[0, 2] = n, n + 1, n + 2
    circles[0, 0], circles[0, 1], circles[0, 2] = circumcircle(
        xs[n], ys[n], xs[n + 1], ys[n + 1], xs[n + 2], ys[n + 2])
    count = 1
    bad = np.empty(capacity, np.int64)
    edges = np.empty((3 * capacity, 2), np.int64)  # three a bad triangle at most
    for p in range(n):
        px, py = xs[p], ys[p]
        n_bad = 0
        for t in range(count):
            # The stored circle decides the clear cases, the determinant the rest. (Written
            # out here: a call with array arguments costs their reference counts.)
            radius2 = circles[t, 2]
            if radius2 >= 0:
                dx, dy = px - circles[t, 0], py - circles[t, 1]
                gap = dx * dx + dy * dy - radius2
                if gap > CIRCLE_SLACK * radius2:
                    continue
                if gap < -CIRCLE_SLACK * radius2:
                    bad[n_bad] = t
                    n_bad += 1
                    continue
            a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
            if in_circle(xs[a], ys[a], xs[b], ys[b], xs[c], ys[c], px, py) > 0:
                bad[n_bad] = t
                n_bad += 1
        if n_bad == 0:  # on a vertex: a duplicate point
            return none, False
        # The cavity's boundary: the bad triangles' edges that no other bad triangle shares
        # (a shared edge runs the other way round in its neighbour).
        n_edges = 0
        for j in range(n_bad):
            t = bad[j]
            for e in range(3):
                a, b = tris[t, e], tris[t, (e + 1) % 3]
                shared = False
                for other in range(n_bad):
                    u = bad[other]
                    if other != j and ((tris[u, 0] == b and tris[u, 1] == a)
                                       or (tris[u, 1] == b and tris[u, 2] == a)
                                       or (tris[u, 2] == b and tris[u, 0] == a)):
                        shared = True
                        break
                if not shared:
                    edges[n_edges, 0], edges[n_edges, 1] = a, b
                    n_edges += 1
        if count - n_bad + n_edges > capacity:
            return none, False
        # Remove the bad triangles (highest index first, each replaced by the last one)...
        for j in range(n_bad - 1, -1, -1):
            count -= 1
            for e in range(3):
                tris[bad[j], e] = tris[count, e]
                circles[bad[j], e] = circles[count, e]
        # ...and fan the cavity from p: each boundary edge must see p on its left.
        for j in range(n_edges):
            a, b = edges[j, 0], edges[j, 1]
            if not orient(xs[a], ys[a], xs[b], ys[b], px, py) > 0:
                return none, False
            tris[count, 0], tris[count, 1], tris[count, 2] = a, b, p
            circles[count, 0], circles[count, 1], circles[count, 2] = circumcircle(
                xs[a], ys[a], xs[b], ys[b], px, py)
            count += 1
    kept = 0
    for t in range(count):  # the triangles on a helper go
        if tris[t, 0] < n and tris[t, 1] < n and tris[t, 2] < n:
            for e in range(3):
                tris[kept, e] = tris[t, e]
            kept += 1
    triangles = tris[:kept].copy()
    area = 0.0
    for t in range(kept):
        a, b, c = triangles[t, 0], triangles[t, 1], triangles[t, 2]
        area += 0.5 * orient(xs[a], ys[a], xs[b], ys[b], xs[c], ys[c])
    hull = polygon_area(points, convex_hull(points))
    return triangles, hull > 0 and abs(area - hull) <= 1e-9 * hull

"""Drawing primitives of the painter: a supersampled canvas, its blit, hulls and smooth curves."""

from __future__ import annotations

import functools

import cv2
import numpy as np

from swapd.demo.colours import BGR

SUPERSAMPLE = 2


class Canvas:
    """A supersampled drawing area over a region of the frame, with a coverage mask."""

    def __init__(self, x0: int, y0: int, w: int, h: int) -> None:
        self.x0, self.y0, self.w, self.h = x0, y0, w, h
        self.image = np.zeros((h * SUPERSAMPLE, w * SUPERSAMPLE, 3), np.uint8)
        self.alpha = np.zeros((h * SUPERSAMPLE, w * SUPERSAMPLE), np.uint8)
        self.shade = np.full((h * SUPERSAMPLE, w * SUPERSAMPLE), 255, np.uint8)

    def _fixed(self, pts: np.ndarray) -> np.ndarray:
        local = (np.asarray(pts, np.float64).reshape(-1, 2) - (self.x0, self.y0)) * SUPERSAMPLE
        return np.round(local * 16).astype(np.int32).reshape(-1, 1, 2)

    def poly(self, pts: np.ndarray, colour: BGR, cover: bool = True) -> None:
        fixed = self._fixed(pts)
        cv2.fillPoly(self.image, [fixed], colour, cv2.LINE_AA, shift=4)
        if cover:
            cv2.fillPoly(self.alpha, [fixed], 255, cv2.LINE_AA, shift=4)

    def line(self, pts: np.ndarray, colour: BGR, thickness: float, closed: bool = False) -> None:
        t = max(1, int(float(thickness) * SUPERSAMPLE + 0.5))
        cv2.polylines(self.image, [self._fixed(pts)], closed, colour, t, cv2.LINE_AA, shift=4)

    def ellipse(self, centre: np.ndarray, axes: tuple[float, float], angle: float,
                colour: BGR, target: np.ndarray | None = None) -> None:
        c = np.round((np.asarray(centre) - (self.x0, self.y0)) * SUPERSAMPLE * 16).astype(int)
        ax = (max(1, int(axes[0] * SUPERSAMPLE * 16)), max(1, int(axes[1] * SUPERSAMPLE * 16)))
        img = self.image if target is None else target
        cv2.ellipse(img, (int(c[0]), int(c[1])), ax, angle, 0, 360, colour, -1, cv2.LINE_AA,
                    shift=4)

    def darken(self, pts: np.ndarray, amount: float) -> None:
        """Mark a soft shadow region (applied after blurring the shade layer)."""
        cv2.fillPoly(self.shade, [self._fixed(pts)], int(255 * (1 - amount)), cv2.LINE_AA,
                     shift=4)



def blit(dst: Canvas, src: Canvas) -> None:
    """Paint a small canvas into a bigger one (both supersampled), through its alpha."""
    ox, oy = (src.x0 - dst.x0) * SUPERSAMPLE, (src.y0 - dst.y0) * SUPERSAMPLE
    sh, sw = src.alpha.shape
    x_a, y_a = max(0, ox), max(0, oy)
    x_b, y_b = min(dst.alpha.shape[1], ox + sw), min(dst.alpha.shape[0], oy + sh)
    if x_b <= x_a or y_b <= y_a:
        return
    s = (slice(y_a - oy, y_b - oy), slice(x_a - ox, x_b - ox))
    d = (slice(y_a, y_b), slice(x_a, x_b))
    a = src.alpha[s][..., None].astype(np.float32) / 255.0
    dst.image[d] = (src.image[s] * a + dst.image[d] * (1 - a)).astype(np.uint8)


def hull(points: np.ndarray) -> np.ndarray:
    return cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)


@functools.lru_cache(maxsize=256)
def _spline_basis(k: int, steps: int, closed: bool) -> np.ndarray:
    """Matrix mapping k control points to a Catmull-Rom curve through them."""
    t = np.linspace(0, 1, steps, endpoint=False)
    weights = 0.5 * np.stack([-t + 2 * t**2 - t**3, 2 - 5 * t**2 + 3 * t**3,
                              t + 4 * t**2 - 3 * t**3, -t**2 + t**3], axis=1)
    segments = k if closed else k - 1
    basis = np.zeros((segments * steps + (0 if closed else 1), k))
    for i in range(segments):
        idx = [(i + j - 1) % k if closed else min(max(i + j - 1, 0), k - 1) for j in range(4)]
        for j in range(4):
            basis[i * steps:(i + 1) * steps, idx[j]] += weights[:, j]
    if not closed:
        basis[-1, k - 1] = 1.0
    return basis


def curve(pts: np.ndarray, n: int = 24) -> np.ndarray:
    """A smooth open curve through points (Catmull-Rom), about n samples."""
    return _spline_basis(len(pts), max(2, n // (len(pts) - 1)), False) @ pts


def closed_curve(pts: np.ndarray, n: int = 40) -> np.ndarray:
    """A smooth closed curve through points (Catmull-Rom)."""
    return _spline_basis(len(pts), max(2, n // len(pts)), True) @ pts

"""Invisible watermark of merged frames that survives resizing, cropping, flips and re-encoding.

Scheme ``swapd-wm-v2``
----------------------
* A fixed built-in key seeds a ``TILE x TILE`` (32 x 32) tile of equiprobable +-1 values.
  The tile is repeated over the frame on a grid of square *cells* whose size is a fixed
  share of the frame: ``CELLS`` (64) cells across the frame's shorter side, so 11.25 px
  cells at 1280x720, 16.9 px at 1920x1080 (3.75 px in a 720p copy scaled to 33 %).
  Because the pattern is tied to the frame's own size, a scaled copy carries the same
  pattern at the same relative scale; because the tile repeats, a crop or a pad only
  shifts it cyclically.
* :func:`embed` interpolates the cells bilinearly (a smooth, low/mid-frequency pattern:
  what scaling, JPEG and H.264 keep) and adds it to B, G and R alike (luminance only, so
  chroma subsampling cannot hurt it), at 1.5 grey levels on flat areas up to 7 where
  texture masks it (:mod:`swapd.merger.watermark_search` explains detection).  Areas whose 8 x 8
  blocks vary by less than ``TEXTURE_FLOOR`` count as flat (a gentle shading shows the mark
  as much as a flat wall).  Until December 2026 it was 2 levels on flat areas and 4.5 on
  texture: after the merger's H.264 CRF 18 that showed as a faint cell-sized mottling in a
  400 % crop of smooth areas (still there at 1.5, fainter: a mean change of 1.16 levels
  instead of 1.53; 1.0 would be fainter still, but 33 % copies of flat content lose it).
  The detector's poolings (below) win back what the weaker flat mark loses, and marks
  of the first embedding are still found.  On flat areas the rounding to whole
  grey levels is dithered (a fixed noise pattern): plain rounding cut the pattern into flat
  steps with crisp one-level edges along the cell grid (see docs/benchmarks.md).
* :func:`detect` pools the frames of a file at a low working resolution two ways (the mean
  frame whitened: the mark is fixed to the frame, the content moves, so averaging
  strengthens the one and smooths the other; and the mean of the whitened frames), a third
  when the caller hands it the file's keyframes apart (the mean of the whitened keyframes:
  a re-encode codes the mark afresh only in them), and searches each for scale, rotation
  (+-2.4 deg), horizontal flip and cyclic offset with FFT correlation against the key tile,
  after flattening the spectrum of what folding leaves of the host (a textured wall's peaks
  weigh less than the frequencies where the mark stands out).

Why the threshold is trustworthy
--------------------------------
For one hypothesis (scale, angle, flip, offset) the score is ``z = sum(a * k) / |a|``,
where ``a`` is the folded host, whitened and flattened (a function of the content alone:
every weighting is computed from the frames, never from the key) and ``k`` the key.
Over the key's randomness it is a Rademacher sum, so by Hoeffding's inequality
``P(z >= t) <= exp(-t^2 / 2)`` for *any* content, and by the union bound over the
``HYPOTHESES`` (11.5 million: 3.8 million per pooling, three poolings) hypotheses searched
the chance that unmarked content reaches ``t`` anywhere is at most
``HYPOTHESES * exp(-t^2 / 2)``.  ``Z_THRESHOLD`` = 8.4 makes that bound 5.5e-9 per file
(8.3 did 8.4e-9 for two poolings, 8.2 1e-8 for one).  Measured on 2,000+ unmarked inputs
(see docs/benchmarks.md), the largest score was far below it.  A file searched more widely
(frames of several sizes, or a second orientation: a video's rotation tag, an image's EXIF
orientation) must score higher, :func:`threshold_for`, so its bound stays the same.

Not designed for: deliberate removal by someone who knows the key and the scheme.  It is
a provenance signal that survives what sharing does to a copy, next to the metadata tag,
not tamper-proof DRM.  Marks of the previous scheme (:mod:`swapd.merger.watermark_v1`)
are still detected by :mod:`swapd.merger.provenance`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from swapd.merger import watermark_search as search
from swapd.merger.watermark_search import CELLS, TILE, key_tile

SCHEME = "swapd-wm-v2"
AMP_FLAT = 1.5
AMP_TEXTURE = 7.0
TEXTURE_FLOOR = 1.0  # block std (grey levels) up to which an area counts as flat
TEXTURE_REF = 12.0  # block std at which the mark reaches AMP_TEXTURE
Z_THRESHOLD = 8.4
# Levels kept free above black and below white: on a clipped area (pure white, a black
# backdrop, a binary graphic) half of the mark would be cut off, too little for the flat
# mark to survive a re-encode (skimage's *horse* after CRF 28: 4.8; so: 27.4).
HEADROOM = 2
MIN_SIZE = 64
HYPOTHESES = search.HYPOTHESES
# The views a Detector searches: a file's pixels as coded, and as a player shows them
AS_CODED, AS_DISPLAYED = "as coded", "as displayed"
_BLOCK = 8  # texture is measured per 8x8 block ...
_TEXTURE_SHORT = 720  # ... of the frame brought to this shorter side at most
_DITHER_SEED = 0x17D1

__all__ = ["CELLS", "TILE", "SCHEME", "Z_THRESHOLD", "MIN_SIZE", "HYPOTHESES", "threshold_for",
           "AS_CODED", "AS_DISPLAYED",
           "WatermarkEvidence", "WatermarkError", "Detector", "embed", "detect",
           "chance_if_unmarked"]


# The chance bound per file that Z_THRESHOLD gives a video's three poolings (5.5e-9).
FALSE_ALARM_BOUND = HYPOTHESES * math.exp(-Z_THRESHOLD * Z_THRESHOLD / 2.0)


def threshold_for(hypotheses: int) -> float:
    """The score a search of *hypotheses* must reach: ``Z_THRESHOLD`` up to ``HYPOTHESES``
    (never lower: that is what the false-positive runs measured), above it the next tenth
    that keeps the union bound at most ``FALSE_ALARM_BOUND`` (twice the hypotheses: 8.5)."""
    if hypotheses <= HYPOTHESES:
        return Z_THRESHOLD
    exact = math.sqrt(2.0 * math.log(hypotheses / FALSE_ALARM_BOUND))
    return math.ceil(round(exact * 10.0, 6)) / 10.0


def chance_if_unmarked(score: float, hypotheses: int = HYPOTHESES) -> float:
    """Upper bound on the chance that unmarked content scores at least *score* anywhere in
    the search (Hoeffding per hypothesis, union bound over all of them), capped at 1."""
    if score <= 0:
        return 1.0
    return float(min(1.0, hypotheses * math.exp(-score * score / 2.0)))


@dataclass(frozen=True)
class WatermarkEvidence:
    """Result of :func:`detect`.

    ``score`` is the best z-score found by the search, ``marked`` is ``score >= threshold``,
    ``chance_if_unmarked`` bounds the chance that a file without the mark scores this high
    anywhere in the ``hypotheses`` searched (keyframes, when given, are not counted in
    ``frames_checked``: they are a pooling of their own), ``geometry`` says where the mark
    was found (scale of the copy, angle, flip).
    """

    score: float
    marked: bool
    frames_checked: int
    chance_if_unmarked: float = 1.0
    threshold: float = Z_THRESHOLD
    scheme: str = SCHEME
    geometry: dict = field(default_factory=dict)
    hypotheses: int = 0

    def to_dict(self) -> dict:
        """Plain JSON-serialisable form."""
        return asdict(self)


class WatermarkError(ValueError):
    """A frame cannot be watermarked or checked (wrong shape, dtype or too small)."""


@lru_cache(maxsize=4)
def _unit_pattern(h: int, w: int) -> np.ndarray:
    """The +-1 key cells, bilinearly interpolated over an (h, w) frame (float32)."""
    c = min(h, w) / CELLS
    gh, gw = math.ceil(h / c) + 3, math.ceil(w / c) + 3
    # Grid row/column j holds cell j - 1, so the first pixel's source coordinate is >= 0.
    grid = np.roll(np.tile(key_tile(), (math.ceil(gh / TILE), math.ceil(gw / TILE))),
                   (1, 1), axis=(0, 1))[:gh, :gw]
    # Pixel x (centre x + 0.5) lies at cell coordinate (x + 0.5) / c - 0.5, i.e. grid
    # coordinate one more; cell j's centre is at pixel (j + 0.5) * c - 0.5.
    offset = 0.5 / c - 0.5 + 1.0
    matrix = np.array([[1 / c, 0, offset], [0, 1 / c, offset]], dtype=np.float64)
    pattern = cv2.warpAffine(grid, matrix, (w, h),
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    pattern.setflags(write=False)
    return pattern


@lru_cache(maxsize=2)
def _dither(h: int, w: int) -> np.ndarray:
    """Fixed uniform noise in [-0.5, 0.5) over an (h, w) frame (float32): added before the
    rounding, it spreads the mark's fraction of a grey level over pixels (a mean-preserving
    dither) instead of cutting it into steps."""
    noise = np.random.default_rng(_DITHER_SEED).random((h, w), dtype=np.float32) - 0.5
    noise.setflags(write=False)
    return noise


def _luma(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2 or frame.shape[2] == 1:
        return frame.reshape(frame.shape[:2])
    code = cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(frame, code)


def _amplitude(y: np.ndarray) -> np.ndarray:
    """Per-pixel mark strength: weak on flat areas, stronger where texture masks it."""
    h, w = y.shape
    # Texture at the mark's own scale (a cell is 1/64 of the shorter side): the fine detail
    # of a 4K frame does not hide cell-sized mottling, while detail at the cells' scale that
    # 8 x 8 blocks of 4K pixels cannot see does (an upscaled 720p texture). So a larger frame
    # is measured brought down to 720p, and its block grid spread over the whole frame.
    scale = min(1.0, _TEXTURE_SHORT / min(h, w))
    if scale < 1.0:
        y = cv2.resize(y, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    grid = _amplitude_grid(y)
    # Block j covers pixels [8j, 8j + 8) of the measured frame, [8j, 8j + 8) / scale here:
    # the grid spread over (blocks x 8 / scale) pixels, cut to the frame.
    gh, gw = grid.shape
    size = (max(w, round(gw * _BLOCK / scale)), max(h, round(gh * _BLOCK / scale)))
    return cv2.resize(grid, size, interpolation=cv2.INTER_LINEAR)[:h, :w]


def _amplitude_grid(y: np.ndarray) -> np.ndarray:
    """The mark's strength per 8 x 8 block of *y*, from the block's texture."""
    h, w = y.shape
    gh, gw = math.ceil(h / _BLOCK), math.ceil(w / _BLOCK)
    # Texture is estimated on every other pixel: plenty for a strength map, 4x cheaper.
    sub = y[::2, ::2].astype(np.float32)
    half = _BLOCK // 2
    pad_h, pad_w = gh * half - sub.shape[0], gw * half - sub.shape[1]
    if pad_h or pad_w:
        sub = cv2.copyMakeBorder(sub, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT)
    mean = cv2.resize(sub, (gw, gh), interpolation=cv2.INTER_AREA)
    mean_sq = cv2.resize(sub * sub, (gw, gh), interpolation=cv2.INTER_AREA)
    std = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))
    std = cv2.blur(std, (3, 3), borderType=cv2.BORDER_REFLECT)
    t = np.clip((std - TEXTURE_FLOOR) / (TEXTURE_REF - TEXTURE_FLOOR), 0.0, 1.0)
    return AMP_FLAT + (AMP_TEXTURE - AMP_FLAT) * t


def _check_layout(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise WatermarkError(
            f"expected a uint8 numpy image, got {type(frame).__name__} "
            f"{getattr(frame, 'dtype', '')}"
        )
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (1, 3, 4)):
        raise WatermarkError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got {frame.shape}")


def _big_enough(frame: np.ndarray) -> bool:
    return frame.shape[0] >= MIN_SIZE and frame.shape[1] >= MIN_SIZE


def embed(frame_bgr: np.ndarray) -> np.ndarray:
    """Return a watermarked copy of a BGR (or grey, or BGRA) uint8 frame; alpha is kept.

    Raises :class:`WatermarkError` for a non-uint8 array, another layout, or a frame
    smaller than 64x64.
    """
    _check_layout(frame_bgr)
    h, w = frame_bgr.shape[:2]
    if not _big_enough(frame_bgr):
        raise WatermarkError(f"frame {w}x{h} is smaller than {MIN_SIZE}x{MIN_SIZE}")
    amplitude = _amplitude(_luma(frame_bgr))
    mark = cv2.multiply(_unit_pattern(h, w), amplitude)
    # Dither the rounding on flat areas (weight 1 at AMP_FLAT, 0 from AMP_FLAT + 1 up):
    # texture masks the steps, the noise would only cost codec bits there, and the peak stays
    # where plain rounding put it (a + (AMP_FLAT + 1 - a) / 2 <= AMP_FLAT + 1).
    flatness = np.maximum(np.float32(AMP_FLAT + 1.0) - amplitude, np.float32(0.0))
    mark = cv2.add(mark, cv2.multiply(_dither(h, w), flatness))
    # One rounding pass to uint8 around an offset of 8 (|mark| <= AMP_TEXTURE < 8), then
    # saturating arithmetic splits it: pos = max(m, 0), neg = max(-m, 0) = (255 - u) - 247;
    # clip(frame + mark) without an int16 round trip.
    u = cv2.convertScaleAbs(mark, alpha=1.0, beta=8.0)
    pos, neg = cv2.subtract(u, 8), cv2.subtract(cv2.bitwise_not(u), 247)
    if frame_bgr.ndim == 2 or frame_bgr.shape[2] == 1:
        plane = _off_the_limits(frame_bgr.reshape(h, w))
        return cv2.subtract(cv2.add(plane, pos), neg).reshape(frame_bgr.shape)
    bgr = _off_the_limits(frame_bgr[..., :3])
    bgr = cv2.subtract(cv2.add(bgr, cv2.merge([pos] * 3)), cv2.merge([neg] * 3))
    return np.dstack([bgr, frame_bgr[..., 3]]) if frame_bgr.shape[2] == 4 else bgr


def _off_the_limits(colour: np.ndarray) -> np.ndarray:
    """*colour* (uint8) with every value moved at least ``HEADROOM`` levels off 0 and 255."""
    if HEADROOM <= 0:
        return colour
    return np.clip(colour, HEADROOM, 255 - HEADROOM)


_BySize = dict[tuple[int, int], search.LowResFrames]  # a view's frames, pooled per size


class Detector:
    """Accumulates frames (all of one video, or a single image), then checks them for the mark.

    Frames of one size are pooled for the search (their mean, and the mean of each frame
    whitened; the keyframes given to :meth:`add_keyframe`, the mean of each whitened); a
    file whose frames come in several sizes is searched once per size and the best score
    counts (with the hypotheses of every search in its chance and its threshold).  Frames
    smaller than 64x64 are skipped (not counted), and keyframes of a size no frame has; a
    frame of the wrong dtype or layout raises :class:`WatermarkError`.

    A caller may add the same frames in a second *view* (a name: the frames as a player
    shows a file with a rotation tag, beside the frames as coded): each view is searched
    apart, its hypotheses counted, and ``geometry["view"]`` says where the mark was found.
    """

    def __init__(self) -> None:
        # view -> (frames by size, keyframes by size); the first view added is the main one
        self._views: dict[str, tuple[_BySize, _BySize]] = {}

    def add(self, frame: np.ndarray, view: str = AS_CODED) -> None:
        """Add one frame (of *view*)."""
        self._add(frame, self._pools(view)[0])

    def add_keyframe(self, frame: np.ndarray, view: str = AS_CODED) -> None:
        """Add one of the file's keyframes, decoded apart from the frames :meth:`add` took
        (which may include it): searched as a pooling of its own."""
        self._add(frame, self._pools(view)[1])

    def _pools(self, view: str) -> tuple[_BySize, _BySize]:
        return self._views.setdefault(view, ({}, {}))

    @staticmethod
    def _add(frame: np.ndarray, sizes: _BySize) -> None:
        _check_layout(frame)
        if not _big_enough(frame):
            return  # too small to carry usable evidence
        y = _luma(frame)
        sizes.setdefault(y.shape, search.LowResFrames(y.shape)).add(y)

    @property
    def frames(self) -> int:
        """Frames added (and big enough to count), in the main view."""
        sizes = next(iter(self._views.values()), ({}, {}))[0]
        return sum(a.count for a in sizes.values())

    def result(self) -> WatermarkEvidence:
        """The evidence of every frame added so far."""
        searches = [(view, search.search(frames, min(shape), keyframes.get(shape)))
                    for view, (sizes, keyframes) in self._views.items()
                    for shape, frames in sizes.items()]
        if not searches:
            return WatermarkEvidence(score=0.0, marked=False, frames_checked=0)
        view, found = max(searches, key=lambda s: s[1].score)
        hypotheses = sum(f.hypotheses for _, f in searches)
        threshold = threshold_for(hypotheses)
        geometry = found.geometry()
        if len(self._views) > 1:
            geometry["view"] = view
        return WatermarkEvidence(
            score=found.score,
            marked=found.score >= threshold,
            frames_checked=self.frames,
            chance_if_unmarked=chance_if_unmarked(found.score, hypotheses),
            threshold=threshold,
            geometry=geometry,
            hypotheses=hypotheses,
        )


def detect(frames: Iterable[np.ndarray], keyframes: Iterable[np.ndarray] = ()
           ) -> WatermarkEvidence:
    """Check frames (all of one video, or a single image), and a video's keyframes decoded
    apart, for the mark (see :class:`Detector`)."""
    detector = Detector()
    for frame in frames:
        detector.add(frame)
    for frame in keyframes:
        detector.add_keyframe(frame)
    return detector.result()

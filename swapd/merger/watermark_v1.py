"""The previous watermark scheme, ``swapd-wm-v1`` (swapd 0.x merges before the v2 mark).

swapd no longer embeds it (:mod:`swapd.merger.watermark` does, ``swapd-wm-v2``), but
:mod:`swapd.merger.provenance` still detects it, so outputs merged earlier still verify:
it costs one block-mean pass over the frames already decoded for v2.  :func:`embed` is
kept to make such outputs in tests.

Scheme (``swapd-wm-v1``)
------------------------
* A fixed built-in key seeds a ``512 x 512`` tile of independent, equiprobable +-1 values,
  one per ``BLOCK x BLOCK`` (8 x 8) pixel block, anchored at the frame's top-left corner
  (tiled when a frame is wider or taller than 4096 pixels).
* :func:`embed` scales each block's sign by a strength of 2.0 grey levels on flat areas up
  to 4.2 on textured ones (texture masks the mark, and x264's adaptive quantisation
  quantises textured blocks harder), upsamples it bilinearly to the frame size and adds
  it to B, G and R alike, i.e. to luminance only: chroma subsampling cannot hurt it.
  Block-sized, smooth offsets are low-frequency energy, which JPEG and H.264 spend their
  bits keeping (mostly the DC of their 4x4 / 8x8 transforms).  PSNR is >= 39 dB even on
  fully textured frames, typically 40-41 dB.
* :func:`detect` takes block means of the luminance, averages those grids over all
  frames of one size, removes the host's low frequencies with a local-mean high-pass,
  normalises by the local high-pass energy (so flat areas, where the mark is clean, are
  not drowned by textured ones), clips outliers, and correlates the result with the key.

Why the threshold is trustworthy
--------------------------------
For content that was not marked, the key is independent of the filtered host grid ``h``
(every step above depends on the host alone), so ``sum(h * k)`` has mean 0 and variance
exactly ``sum(h**2)`` over the key's randomness, whatever the content is.  The score
``z = sum(h * k) / sqrt(sum(h**2))`` is therefore ~N(0, 1) for unmarked input: flat or
textured, sharp or blurry, re-encoded or not.  Averaging frames *before* correlating keeps
that true for static video, whose per-frame scores would not be independent.  A file is
called marked at ``z >= Z_THRESHOLD`` = 6.0: a false-positive rate of about 1e-9 per file
under the Gaussian approximation, and still below 1/36 by Chebyshev's bound whatever the
distribution.  Marked 640x360 frames score about 9-28 after JPEG q75 (lowest for dense,
natural-image-like texture), and a 60-frame sample of a clip after two H.264 encodes
(CRF 23 then 28) about 17-35.  Single P-frames of moving content score lower, since
motion compensation drags the mark along with the content; evidence is pooled over frames.

Not designed for: geometric changes (scaling, cropping from the left or top, rotation) or
deliberate removal by someone who knows the key.  It is a provenance signal that survives
ordinary re-encoding, next to the metadata tag, not tamper-proof DRM.

Alternative considered: ``invisible-watermark`` (PyPI) embeds mid-band DWT/DCT bits that
H.264 at CRF 23-28 largely quantises away, adds PyWavelets, and gives no calibrated
false-positive rate; this small scheme is dependency-free beyond OpenCV and NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache

import cv2
import numpy as np

from swapd.merger.watermark import WatermarkError, WatermarkEvidence

SCHEME = "swapd-wm-v1"
BLOCK = 8
AMP_FLAT = 2.0
AMP_TEXTURE = 4.2
TEXTURE_REF = 12.0
Z_THRESHOLD = 6.0
MIN_SIZE = 64

_KEY = 0x5A9D_2024_F00D
_TILE = 512
_CLIP_SIGMAS = 3.0
_NORM_WINDOW = 5  # blocks


@lru_cache(maxsize=1)
def _key_tile() -> np.ndarray:
    rng = np.random.default_rng(_KEY)
    return rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(_TILE, _TILE))


def _key_grid(gh: int, gw: int) -> np.ndarray:
    tile = _key_tile()
    reps = (math.ceil(gh / _TILE), math.ceil(gw / _TILE))
    if reps != (1, 1):
        tile = np.tile(tile, reps)
    return tile[:gh, :gw]


def _luma(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2 or frame.shape[2] == 1:
        return frame.reshape(frame.shape[:2])
    code = cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(frame, code)


def _amplitude_grid(y: np.ndarray, gh: int, gw: int) -> np.ndarray:
    """Per-block mark strength: weak on flat areas, stronger where texture masks it."""
    # Texture is estimated on every other pixel: plenty for a strength map, 4x cheaper.
    sub = y[::2, ::2].astype(np.float32)
    half = BLOCK // 2
    pad_h, pad_w = gh * half - sub.shape[0], gw * half - sub.shape[1]
    if pad_h or pad_w:
        sub = cv2.copyMakeBorder(sub, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT)
    mean = cv2.resize(sub, (gw, gh), interpolation=cv2.INTER_AREA)
    mean_sq = cv2.resize(sub * sub, (gw, gh), interpolation=cv2.INTER_AREA)
    std = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))
    std = cv2.blur(std, (3, 3), borderType=cv2.BORDER_REFLECT)
    t = np.clip(std / TEXTURE_REF, 0.0, 1.0)
    return AMP_FLAT + (AMP_TEXTURE - AMP_FLAT) * t


def _pattern(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mark for this frame as (positive part, negative part), uint8 (H, W) each."""
    h, w = frame.shape[:2]
    gh, gw = math.ceil(h / BLOCK), math.ceil(w / BLOCK)
    grid = _key_grid(gh, gw) * _amplitude_grid(_luma(frame), gh, gw)
    # Bilinear upsampling with block centres on the block grid: smooth within the block,
    # sign changes spread over the block border instead of a hard step.
    up = cv2.resize(grid, (gw * BLOCK, gh * BLOCK), interpolation=cv2.INTER_LINEAR)[:h, :w]
    # One rounding pass to uint8 around an offset of 8 (|mark| <= AMP_TEXTURE < 8), then
    # saturating arithmetic splits it: pos = max(m, 0), neg = max(-m, 0) = (255 - u) - 247.
    u = cv2.convertScaleAbs(up, alpha=1.0, beta=8.0)
    return cv2.subtract(u, 8), cv2.subtract(cv2.bitwise_not(u), 247)


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
    pos, neg = _pattern(frame_bgr)
    # Saturating add then subtract: pos and neg are never both non-zero at a pixel, so
    # this is clip(frame + pattern) without an int16 round trip.
    if frame_bgr.ndim == 2 or frame_bgr.shape[2] == 1:
        plane = frame_bgr.reshape(h, w)
        return cv2.subtract(cv2.add(plane, pos), neg).reshape(frame_bgr.shape)
    if frame_bgr.shape[2] == 4:
        bgr = cv2.subtract(cv2.add(frame_bgr[..., :3], cv2.merge([pos] * 3)), cv2.merge([neg] * 3))
        return np.dstack([bgr, frame_bgr[..., 3]])
    return cv2.subtract(cv2.add(frame_bgr, cv2.merge([pos] * 3)), cv2.merge([neg] * 3))


def _block_means(frame: np.ndarray) -> np.ndarray:
    y = _luma(frame)
    gh, gw = y.shape[0] // BLOCK, y.shape[1] // BLOCK
    y = y[: gh * BLOCK, : gw * BLOCK]
    return cv2.resize(y.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)


def _highpass(grid: np.ndarray) -> np.ndarray:
    """Each block minus its 3x3 neighbourhood mean, normalised by the local energy, clipped."""
    local = cv2.blur(grid, (3, 3), borderType=cv2.BORDER_REFLECT)
    h = grid - local
    energy = cv2.blur(h * h, (_NORM_WINDOW, _NORM_WINDOW), borderType=cv2.BORDER_REFLECT)
    h = h / np.sqrt(energy + 0.25)  # +0.25: a floor of half a grey level on flat areas
    # Robust clipping bounds the weight of strong edges (a function of the host alone, so
    # the null distribution of the score is unchanged).
    scale = 1.4826 * float(np.median(np.abs(h))) + 1e-6
    return np.clip(h, -_CLIP_SIGMAS * scale, _CLIP_SIGMAS * scale)


def _fold(h: np.ndarray) -> np.ndarray:
    """Sum grid cells that share a key-tile cell, so repeated key values are counted once."""
    gh, gw = h.shape
    if gh <= _TILE and gw <= _TILE:
        return h
    ny, nx = math.ceil(gh / _TILE), math.ceil(gw / _TILE)
    padded = np.zeros((ny * _TILE, nx * _TILE), dtype=np.float64)
    padded[:gh, :gw] = h
    return padded.reshape(ny, _TILE, nx, _TILE).sum(axis=(0, 2))


def _z_score(mean_grid: np.ndarray) -> float:
    h = _fold(_highpass(mean_grid).astype(np.float64))
    k = _key_grid(*h.shape).astype(np.float64)
    energy = float(np.sum(h * h))
    if energy < 1e-9:  # perfectly flat content carries no evidence either way
        return 0.0
    return float(np.sum(h * k) / math.sqrt(energy))


def detect(frames: Iterable[np.ndarray]) -> WatermarkEvidence:
    """Check frames (all of one video, or a single image) for the swapd watermark.

    Frames of the same size are averaged (as block-mean grids) before correlating, so
    evidence from many frames accumulates; different sizes are scored separately and
    combined with Stouffer's method.  Frames smaller than 64x64 are skipped (not counted);
    a frame of the wrong dtype or layout raises :class:`WatermarkError`.
    """
    sums: dict[tuple[int, int], np.ndarray] = {}
    counts: dict[tuple[int, int], int] = {}
    for frame in frames:
        _check_layout(frame)
        if not _big_enough(frame):
            continue  # too small to carry usable evidence
        grid = _block_means(frame)
        key = grid.shape
        if key in sums:
            sums[key] += grid
            counts[key] += 1
        else:
            sums[key] = grid.astype(np.float64)
            counts[key] = 1
    n_frames = sum(counts.values())
    if not sums:
        return WatermarkEvidence(score=0.0, marked=False, frames_checked=0,
                                 threshold=Z_THRESHOLD, scheme=SCHEME, hypotheses=1)
    zs = [_z_score((sums[s] / counts[s]).astype(np.float32)) for s in sums]
    z = sum(zs) / math.sqrt(len(zs))
    p_value = 0.5 * math.erfc(z / math.sqrt(2.0))
    return WatermarkEvidence(
        chance_if_unmarked=float(p_value),
        threshold=Z_THRESHOLD,
        scheme=SCHEME,
        score=z,
        marked=z >= Z_THRESHOLD,
        frames_checked=n_frames,
        hypotheses=1,  # one test at the known geometry: the p-value is its chance
    )

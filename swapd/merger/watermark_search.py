"""Finding the ``swapd-wm-v2`` key in a (possibly scaled, cropped, padded, flipped or rotated)
copy: the geometry search behind :func:`swapd.merger.watermark.detect`.

How the search works
--------------------
1. Each size's frames are kept at a low resolution (:class:`LowResFrames`): their mean, and
   (up to 120, evenly spread) the frames themselves.
2. Flat bars around the picture (letterboxing, padding) are found, so the picture's own size
   is known; the mark's cell size is a fixed share of that size (``CELLS`` across the
   shorter side), up to a crop of 10 % from each side (cells then look larger, up to
   1 / 0.8 = 1.25x; searched to 1.30x).  Without bars, or when they are mistaken (a flat sky),
   the frame's own size is searched too.
3. The frames are resampled so a cell spans about two samples, and whitened: the host's
   low frequencies are removed, each area is normalised by its own energy (so flat areas,
   where the mark is cleanest, count as much as textured ones), outliers are clipped.  Two
   poolings of a video's frames are searched: the mean frame whitened (moving content
   averages out before the normalisation, which keeps textured footage's evidence), and the
   mean of the whitened frames (each frame normalised by its own local energy, so a moving
   edge weighs by its energy in each frame instead of leaving a smeared ramp; measured, it
   lifts smooth panning footage by 1-3 and lowers dense texture, hence both: see
   docs/benchmarks.md).  A third pooling is the mean of the whitened *keyframes*, when the
   caller decoded them apart (:mod:`swapd.merger.provenance` does for short videos): a
   re-encode codes the mark afresh in its keyframes, while its P-frames carry the keyframe's
   copy along with the moving content, so on a panning copy scaled to 33 % at CRF 28 the
   pooled frames lost the mark that the first frame alone still held (a dense-edge photo,
   before tiles were flattened (step 5): 6.3 pooled, 11.1 in its keyframe; since: 10.3 and
   11.5).  A single frame is one pooling.
4. For each scale (1.2 % steps) and angle (0.6 deg steps, +-2.4 deg) the whitened image is
   warped to a canonical grid of exactly two samples per cell and *folded*: samples one key
   tile apart are summed, so the whole frame's evidence lands in one 64 x 64 tile, and a
   crop or pad (a translation) becomes a cyclic shift of that tile.
5. Each folded tile's spectrum is flattened: divided by the square root of its own power
   spectrum smoothed over 5 x 5 neighbouring frequencies.  What folding leaves of the host
   is far from white noise (a brick wall's rows, a fabric's weave: peaks at a few
   frequencies), while the mark spreads evenly over all of them; flattening weighs each
   frequency by how clean it is.  Measured: a single frame of skimage's *brick* at half
   size, JPEG q75 7.8 -> 14.7, photo clips after CRF 28 +3 to +6 (docs/benchmarks.md).
6. Every cyclic shift, half-cell phase and flip of the key is scored at once by FFT.  The
   score of one hypothesis is ``sum(a * k) / |a|`` (``a``: the folded host, flattened and
   correlated with the interpolation kernel: a function of the content alone), a
   Rademacher sum for unmarked content: see the threshold argument in
   :mod:`swapd.merger.watermark`.  Every pooling's hypotheses count in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import scipy.fft
import scipy.ndimage

CELLS = 64  # mark cells across the frame's shorter side
TILE = 32  # the key tile is TILE x TILE cells
_KEY = 0x5A9D_2025_0F17
_SAMPLES = 2  # canonical samples per cell
_ACCUM_SHORT = 4 * CELLS  # frames are averaged at this shorter side (or their own, if smaller)
_RHO = np.geomspace(0.97, 1.30, 26)  # observed cell size / expected, for the picture's size
_ANGLES = np.arange(-2.4, 2.41, 0.6)  # degrees
_RANGES = 2  # the picture inside its bars, and the whole frame
_FLIPS = 2
_PHASES = _SAMPLES * _SAMPLES
# A video's frames: the mean frame whitened, the whitened frames' mean, the whitened keyframes'
POOLINGS = 3
HYPOTHESES_PER_POOLING = _RANGES * len(_RHO) * len(_ANGLES) * _FLIPS * _PHASES * TILE * TILE
HYPOTHESES = POOLINGS * HYPOTHESES_PER_POOLING  # what one size of a video costs at most
_BAR_STD = 2.0  # grey levels: a row or column this uniform ...
_BAR_DELTA = 4.0  # ... and this close to the frame's edge colour is a bar
_CLIP_SIGMAS = 3.0
_HIGHPASS_CELLS = 0.5  # sigma of the low frequencies removed, in cells
# Energy floor (grey levels squared) of the normalisation: low, so the faint mark a scaled,
# re-encoded copy keeps on flat areas is not drowned by it (0.25 before: 33 % copies lost 1-2)
_ENERGY_FLOOR = 0.01
_KEPT_MAX = 120  # frames kept for the whitened frames' mean (about 14 MB at 720p)
# Frequencies (per axis) a folded tile's power spectrum is smoothed over: odd, so the
# smoothing is centred and the flattening stays a real, symmetric filter
_SPECTRUM_BOX = 5


@lru_cache(maxsize=1)
def key_tile() -> np.ndarray:
    """The TILE x TILE key of +-1 values (float32), fixed by the built-in seed."""
    rng = np.random.default_rng(_KEY)
    tile = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(TILE, TILE))
    tile.setflags(write=False)
    return tile


class LowResFrames:
    """One size's luminance frames at a low resolution: their running mean, and the frames
    themselves (up to ``_KEPT_MAX``; past it every other one is dropped and from then on every
    other one kept, so the kept frames stay spread over the whole file)."""

    def __init__(self, shape: tuple[int, int]) -> None:
        h, w = shape
        scale = min(1.0, _ACCUM_SHORT / min(h, w))
        self.size = (max(1, round(w * scale)), max(1, round(h * scale)))
        self.total = np.zeros(self.size[::-1], np.float64)
        self.count = 0
        self.kept: list[np.ndarray] = []
        self._stride = 1

    def add(self, luma: np.ndarray) -> None:
        """Add one (H, W) uint8 luminance frame."""
        small = cv2.resize(luma, self.size, interpolation=cv2.INTER_AREA)
        self.total += small
        if self.count % self._stride == 0:
            self.kept.append(small)
            if len(self.kept) > _KEPT_MAX:
                self.kept, self._stride = self.kept[::2], 2 * self._stride
        self.count += 1

    def mean(self) -> np.ndarray:
        """The mean frame (float32)."""
        return (self.total / max(self.count, 1)).astype(np.float32)


@dataclass(frozen=True)
class Found:
    """The best hypothesis of a search."""

    score: float
    hypotheses: int  # how many the search tried
    cell_px: float  # cell size in the checked frame's pixels
    angle: float
    flipped: bool
    in_bars: bool  # the picture was found inside bars (letterbox, padding)

    def geometry(self) -> dict:
        """Where the mark was found, as plain data."""
        return {"cell_px": round(self.cell_px, 2), "angle_deg": round(self.angle, 1),
                "flipped": self.flipped, "inside_bars": self.in_bars}


def _is_bar(line: np.ndarray, edge: float) -> bool:
    return float(line.std()) < _BAR_STD and abs(float(line.mean()) - edge) < _BAR_DELTA


def content_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the picture inside flat bars of the frame's edge colour."""
    h, w = image.shape
    top, bottom, left, right = 0, h, 0, w
    while top < h * 0.45 and _is_bar(image[top], float(image[0].mean())):
        top += 1
    while bottom > h * 0.55 and _is_bar(image[bottom - 1], float(image[-1].mean())):
        bottom -= 1
    while left < w * 0.45 and _is_bar(image[top:bottom, left], float(image[:, 0].mean())):
        left += 1
    while right > w * 0.55 and _is_bar(image[top:bottom, right - 1],
                                       float(image[:, -1].mean())):
        right -= 1
    return top, bottom, left, right


def whiten(image: np.ndarray) -> np.ndarray:
    """High-pass, normalise by local energy, clip: what is left is mostly the mark + noise.

    A function of the content alone, so it cannot bias the score of unmarked content.
    """
    h = image - cv2.GaussianBlur(image, (0, 0), _HIGHPASS_CELLS * _SAMPLES,
                                 borderType=cv2.BORDER_REFLECT)
    energy = cv2.GaussianBlur(h * h, (0, 0), 1.5 * _SAMPLES, borderType=cv2.BORDER_REFLECT)
    h = h / np.sqrt(energy + _ENERGY_FLOOR)
    if float(np.abs(h).max()) < 1e-3:  # flat content: rounding noise is no evidence
        return np.zeros_like(h)
    scale = 1.4826 * float(np.median(np.abs(h))) + 1e-6
    return np.clip(h, -_CLIP_SIGMAS * scale, _CLIP_SIGMAS * scale)


def _fold(canonical: np.ndarray) -> np.ndarray:
    period = TILE * _SAMPLES
    hc, wc = canonical.shape
    ny, nx = math.ceil(hc / period), math.ceil(wc / period)
    padded = np.zeros((ny * period, nx * period), np.float32)
    padded[:hc, :wc] = canonical
    return padded.reshape(ny, period, nx, period).sum(axis=(0, 2))


def _flatten_spectrum(tiles: np.ndarray) -> np.ndarray:
    """Folded *tiles* (N, 64, 64) with each one's spectrum divided by the square root of its
    own smoothed power spectrum (cyclically, over ``_SPECTRUM_BOX`` frequencies per axis):
    a whitening of what the host left, from the tile alone (so the bound is untouched)."""
    spectrum = scipy.fft.fft2(tiles)
    power = spectrum.real * spectrum.real + spectrum.imag * spectrum.imag
    smooth = scipy.ndimage.uniform_filter(power, size=(1, _SPECTRUM_BOX, _SPECTRUM_BOX),
                                          mode="wrap")
    # A tile of nothing (flat content: whiten() gives exact zeros) stays nothing, so its
    # score is 0; any other tile comes out at the same scale whatever its host's strength.
    floor = 1e-6 * smooth.mean(axis=(-2, -1), keepdims=True) + 1e-30
    flat = scipy.fft.ifft2(spectrum / np.sqrt(smooth + floor)).real
    return flat.astype(np.float32, copy=False)


def _best(tiles: np.ndarray) -> tuple[float, int, bool]:
    """(best z-score, its tile, flipped?) over every shift and phase of the key, and its
    mirror image, in each folded tile (flattened, :func:`_flatten_spectrum`)."""
    tiles = _flatten_spectrum(tiles)
    # Correlate with the bilinear kernel (1/2, 1, 1/2 per axis at two samples per cell): the
    # mark is the key's cells interpolated with it, so the matched filter is the kernel.
    g = tiles + 0.5 * (np.roll(tiles, 1, -1) + np.roll(tiles, -1, -1))
    g = g + 0.5 * (np.roll(g, 1, -2) + np.roll(g, -1, -2))
    phases = np.stack([g[:, py::_SAMPLES, px::_SAMPLES]
                       for py in range(_SAMPLES) for px in range(_SAMPLES)], axis=1)
    norm = np.sqrt(np.sum(phases * phases, axis=(-2, -1), dtype=np.float64))[..., None, None]
    norm = np.where(norm > 1e-9, norm, np.inf).astype(np.float32)  # a zero tile: score 0
    # Real FFTs in single precision: the search's cost is mostly these transforms, and a
    # score needs no more than 3 significant digits.
    spectrum = scipy.fft.rfft2(phases.astype(np.float32))
    best, where, flipped = -np.inf, 0, False
    for mirrored, key in enumerate((key_tile(), key_tile()[:, ::-1])):
        key_spectrum = np.conj(scipy.fft.rfft2(np.ascontiguousarray(key)))
        z = scipy.fft.irfft2(spectrum * key_spectrum, s=(TILE, TILE)) / norm
        index = int(np.argmax(z))
        if float(z.flat[index]) > best:
            best = float(z.flat[index])
            where, flipped = index // (_PHASES * TILE * TILE), bool(mirrored)
    return best, where, flipped


def _candidates(mean: np.ndarray) -> list[tuple[float, bool]]:
    """(picture's shorter side in pixels of *mean*, inside bars) for each range searched."""
    h, w = mean.shape
    top, bottom, left, right = content_box(mean)
    frame_short = float(min(h, w))
    box_short = float(min(bottom - top, right - left))
    ranges = [(frame_short, False)]
    if 0.3 * frame_short <= box_short < 0.97 * frame_short:
        ranges.append((box_short, True))
    return ranges


def _whitened_mean(kept: list[np.ndarray], size: tuple[int, int], interp: int) -> np.ndarray:
    total = np.zeros(size[::-1], np.float32)
    for small in kept:
        total += whiten(cv2.resize(small.astype(np.float32), size, interpolation=interp))
    return total / len(kept)


def _poolings(frames: LowResFrames, mean: np.ndarray, size: tuple[int, int],
              keyframes: LowResFrames | None = None) -> list[np.ndarray]:
    """The whitened images searched, at *size*: the mean frame (*mean*, of *frames*)
    whitened, for several frames the mean of the whitened frames, and with *keyframes* the
    mean of the whitened keyframes."""
    interp = cv2.INTER_AREA if size[0] < mean.shape[1] else cv2.INTER_LINEAR
    works = [whiten(cv2.resize(mean, size, interpolation=interp))]
    if len(frames.kept) > 1:
        works.append(_whitened_mean(frames.kept, size, interp))
    if keyframes is not None and keyframes.kept:
        works.append(_whitened_mean(keyframes.kept, size, interp))
    return works


def pooling_count(frames: LowResFrames, keyframes: LowResFrames | None = None) -> int:
    """How many poolings :func:`search` searches for these frames (and keyframes)."""
    return 1 + (len(frames.kept) > 1) + (keyframes is not None and bool(keyframes.kept))


def search(frames: LowResFrames, frame_short: int,
           keyframes: LowResFrames | None = None) -> Found:
    """Search one size's frames (shorter side *frame_short* pixels), and its *keyframes*
    when the caller decoded them apart, for the key."""
    mean = frames.mean()
    # Every range counts, searched or not; every pooling searched counts (which poolings are
    # searched depends on the frames given, never on the key, so the bound holds).
    hypotheses = pooling_count(frames, keyframes) * HYPOTHESES_PER_POOLING
    best = Found(0.0, hypotheses, 0.0, 0.0, False, False)
    for picture_short, in_bars in _candidates(mean):
        # Work at two samples per expected cell; bars stay in (they whiten to nothing).
        scale = _SAMPLES * CELLS / picture_short
        h, w = mean.shape
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        centre = (size[0] / 2.0, size[1] / 2.0)
        tiles, labels = [], []
        for work in _poolings(frames, mean, size, keyframes):
            for rho in _RHO:
                dsize = (math.ceil(size[0] / rho) + 2, math.ceil(size[1] / rho) + 2)
                for angle in _ANGLES:
                    matrix = cv2.getRotationMatrix2D(centre, float(angle), 1.0 / float(rho))
                    matrix[:, 2] += (dsize[0] / 2.0 - centre[0], dsize[1] / 2.0 - centre[1])
                    canonical = cv2.warpAffine(work, matrix, dsize, flags=cv2.INTER_LINEAR,
                                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                    tiles.append(_fold(canonical))
                    labels.append((float(rho), float(angle)))
        score, where, flipped = _best(np.stack(tiles).astype(np.float32))
        if score > best.score:
            rho, angle = labels[where]
            cell_px = rho * picture_short / CELLS * frame_short / min(mean.shape)
            best = Found(score, hypotheses, cell_px, angle, flipped, in_bars)
    return best

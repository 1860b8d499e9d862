"""Colour transfer: bring the swapped face's colours to the original face's.

Each method is the published one, with DeepFaceLab's and faceswap's meanings
(DeepFaceLab's core/imagelib/color_transfer.py, faceswap's plugins/convert/color/):

- ``rct``: Reinhard et al.'s transfer of the L*a*b* mean and standard deviation, statistics
  taken inside the face mask (weighted by it); the gain is bounded (0.25..4) so a flat
  swapped face does not have its noise blown up. swapd's colour match before issue 16, and
  the default. DeepFaceLab's rct (it has no rct-m) zeroes the L*a*b* face outside the mask
  and takes the statistics over the whole crop, zeros included: the face's a* and b* then
  miss the original's by several units (tests/test_colour_dfl.py measures it), so swapd keeps
  the masked statistics the method means.
- ``lct``: linear transfer of the BGR mean and covariance (the PCA square roots, DFL's).
- ``mkl``: Pitie and Kokaram's Monge-Kantorovitch linear transfer (mean and covariance).
- ``idt``: Pitie's iterative distribution transfer (1-D matching along random rotations,
  DFL's: 20 rotations, 256-bin histograms, each moving 1/20 of the way).
- ``sot``: sliced optimal transport (DFL's port of OTColorTransfer), its displacement smoothed
  by DFL's bilateral regularisation; 10 steps of 5 directions.
- ``*-m``: DeepFaceLab's masked variants, exactly as its merger (MergeMasked.py) runs them:
  both faces multiplied by the mask's area (mask > 0, so zero outside it), then the method
  on the whole crops (sot-m with 30 directions a step, DFL's). The zeros count in the
  statistics: what is matched is the zero-filled crops' distribution, which brings the face
  inside the mask close to the original's, not exactly to it. (lct-m is swapd's: DFL has no
  masked lct; it is made the same way.) Outside the mask the result is the zeros' image,
  which the blend never shows. tests/test_colour_dfl.py runs DFL's own functions against
  these on the same inputs.
- ``hist-match``: per-channel histogram matching inside the mask (faceswap's match-hist; its
  ``threshold`` on DFL's 0..255 scale).
- ``avg-color``: the masked mean of each channel moved to the original's (faceswap's).
- ``manual-balance``: faceswap's fixed adjustment (a colour space's channels, contrast,
  brightness); it does not look at the original.

A grayscale model's face is gray: it gets the original's brightness and contrast (the luma
mean and standard deviation inside the mask) whatever the method, and stays gray.

Faces are float32 BGR in [0, 1], (H, W, 3); masks float (H, W) in [0, 1]. Every method is
deterministic (seeded rotations and directions), so a video's frames do not flicker.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from swapd.config import MergeLook

_MIN_STD = 1e-3
_EPS = 1e-5
_GRAY = np.array([0.114, 0.587, 0.299], np.float32)  # BGR luma, as cv2's BGR2GRAY
METHODS = ("none", "rct", "lct", "lct-m", "mkl", "mkl-m", "idt", "idt-m", "sot", "sot-m",
           "hist-match", "avg-color", "manual-balance")


def transfer(method: str, swapped: np.ndarray, original: np.ndarray, mask: np.ndarray,
             look: MergeLook | None = None, grayscale: bool = False) -> np.ndarray:
    """``swapped`` with its colours brought to ``original``'s by ``method`` (see the module)."""
    if method == "none":
        return swapped
    if method not in METHODS:
        raise ValueError(f"unknown colour transfer {method!r} (expected one of: "
                         f"{', '.join(METHODS)})")
    area = (mask > 0).astype(np.float32)
    if area.sum() < 1.0:
        return swapped
    if grayscale:
        return _match_luma(swapped, original, mask)
    if method == "manual-balance":
        return manual_balance(swapped, look)
    masked = method.endswith("-m")
    if masked:  # DeepFaceLab's: both faces times the mask's area (zero outside), whole crops
        swapped, original = swapped * area[..., None], original * area[..., None]
    base = method.removesuffix("-m")
    if base == "rct":
        out = rct(swapped, original, mask)
    elif base == "lct":
        out = lct(swapped, original)
    elif base == "mkl":
        out = mkl(swapped, original)
    elif base == "idt":
        out = idt(swapped, original)
    elif base == "sot":
        out = sot(swapped, original, batch=30 if masked else 5)  # DFL's sot-m, its sot
    elif base == "hist-match":
        threshold = 255 if look is None else look.hist_match_threshold
        out = hist_match(swapped, original, area, threshold)
    else:  # avg-color
        out = avg_color(swapped, original, mask)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# --- statistics helpers ----------------------------------------------------------------------


def _pixels(image: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) pixels and (N,) weights (all ones without a mask; only weighted pixels with)."""
    flat = image.reshape(-1, image.shape[-1]).astype(np.float64)
    if weights is None:
        return flat, np.ones(len(flat))
    w = weights.reshape(-1).astype(np.float64)
    keep = w > 0
    return flat[keep], w[keep]


def weighted_stats(image: np.ndarray, weights: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Mean (C,) and covariance (C, C) of ``image``'s pixels, weighted."""
    x, w = _pixels(image, weights)
    mean = (x * w[:, None]).sum(0) / w.sum()
    centred = x - mean
    cov = (centred * w[:, None]).T @ centred / w.sum()
    return mean, cov


def _sqrtm(cov: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(cov)
    return vectors @ np.diag(np.sqrt(np.clip(values, _EPS, None))) @ vectors.T


def _apply_linear(image: np.ndarray, matrix: np.ndarray, mean_from: np.ndarray,
                  mean_to: np.ndarray) -> np.ndarray:
    flat = image.reshape(-1, image.shape[-1]).astype(np.float64)
    return ((flat - mean_from) @ matrix.T + mean_to).reshape(image.shape)


# --- the methods -------------------------------------------------------------------------------


def rct(swapped: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reinhard: L*a*b* mean and std of the masked (weighted) face moved to the original's."""
    weights = mask.astype(np.float32)[..., None]
    total = float(weights.sum())
    src = cv2.cvtColor(np.ascontiguousarray(swapped, np.float32), cv2.COLOR_BGR2LAB)
    ref = cv2.cvtColor(np.ascontiguousarray(original, np.float32), cv2.COLOR_BGR2LAB)

    def stats(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = (lab * weights).sum(axis=(0, 1)) / total
        var = (((lab - mean) ** 2) * weights).sum(axis=(0, 1)) / total
        return mean, np.sqrt(var)

    src_mean, src_std = stats(src)
    ref_mean, ref_std = stats(ref)
    gain = np.clip(ref_std / np.maximum(src_std, _MIN_STD), 0.25, 4.0)
    out = (src - src_mean) * gain + ref_mean
    out[..., 0] = np.clip(out[..., 0], 0.0, 100.0)
    return cv2.cvtColor(out.astype(np.float32), cv2.COLOR_LAB2BGR)


def lct(swapped: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Linear colour transfer (DFL's 'pca'): x' = Qs Qt^-1 (x - mu_t) + mu_s, Q = sqrt(cov)."""
    mu_src, cov_src = weighted_stats(swapped, None)
    mu_ref, cov_ref = weighted_stats(original, None)
    eye = _EPS * np.eye(3)
    matrix = _sqrtm(cov_ref + eye) @ np.linalg.inv(_sqrtm(cov_src + eye))
    return _apply_linear(swapped, matrix, mu_src, mu_ref)


def mkl(swapped: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Monge-Kantorovitch linear transfer (Pitie & Kokaram 2007): the linear map between the
    two Gaussians that moves colours least."""
    mu_src, a = weighted_stats(swapped, None)
    mu_ref, b = weighted_stats(original, None)
    da2, ua = np.linalg.eigh(a)
    tiny = np.finfo(np.float64).eps  # C's eigenvalues are products of variances: tiny
    da = np.diag(np.sqrt(np.clip(da2, tiny, None)))
    c = da @ ua.T @ b @ ua @ da
    dc2, uc = np.linalg.eigh(c)
    dc = np.diag(np.sqrt(np.clip(dc2, tiny, None)))
    da_inv = np.diag(1.0 / np.diag(da))
    t = ua @ da_inv @ uc @ dc @ uc.T @ da_inv @ ua.T
    return _apply_linear(swapped, t, mu_src, mu_ref)  # t is symmetric


@lru_cache(maxsize=4)
def _rotations(count: int, seed: int = 16) -> np.ndarray:
    """Fixed random 3-D rotations (seeded: the same for every frame), float32 as DFL's; the
    same as DFL's ``special_ortho_group.rvs(3)`` calls after ``np.random.seed(seed)``."""
    from scipy.stats import special_ortho_group

    return special_ortho_group.rvs(3, size=count, random_state=seed).astype(np.float32)


def _match_1d(values: np.ndarray, source: np.ndarray, source_w: np.ndarray,
              target: np.ndarray, target_w: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``values`` mapped by 1-D distribution matching: each value's quantile in ``source``
    (weighted) becomes the ``target`` (weighted) value at that quantile (times ``scale``, DFL's
    histogram threshold). ``values`` may be ``source`` itself (then its ranks are used)."""
    order_s = np.argsort(source)
    s_cdf = np.cumsum(source_w[order_s])
    s_cdf = (s_cdf - 0.5 * source_w[order_s]) / s_cdf[-1] * scale
    if values is source:
        quantile = np.empty_like(s_cdf)
        quantile[order_s] = s_cdf
    else:
        quantile = np.interp(values, source[order_s], s_cdf)
    order_t = np.argsort(target)
    t_cdf = np.cumsum(target_w[order_t])
    t_cdf = (t_cdf - 0.5 * target_w[order_t]) / t_cdf[-1]
    return np.interp(quantile, t_cdf, target[order_t])


def idt(swapped: np.ndarray, original: np.ndarray, rotations: int = 20, bins: int = 256
        ) -> np.ndarray:
    """Iterative distribution transfer (Pitie et al. 2005), as DFL's color_transfer_idt: along
    each of ``rotations`` rotated axes both 1-D distributions as 256-bin histograms over their
    common range, each pixel moved 1/``rotations`` of the way to the target's value at its
    quantile. (As DFL's: pixels in the lowest bin are moved toward 0, its ``left=0``.)"""
    relaxation = np.float32(1.0 / rotations)
    d0 = np.ascontiguousarray(swapped, np.float32).reshape(-1, 3).T
    d1 = np.ascontiguousarray(original, np.float32).reshape(-1, 3).T
    for r in _rotations(rotations):
        d0r, d1r = r @ d0, r @ d1
        d_r = np.empty_like(d0)
        for j in range(3):
            lo = min(d0r[j].min(), d1r[j].min())
            hi = max(d0r[j].max(), d1r[j].max())
            p0r, edges = np.histogram(d0r[j], bins=bins, range=(lo, hi))
            p1r, _ = np.histogram(d1r[j], bins=bins, range=(lo, hi))
            cp0r = p0r.cumsum().astype(np.float32)
            cp0r /= cp0r[-1]
            cp1r = p1r.cumsum().astype(np.float32)
            cp1r /= cp1r[-1]
            f = np.interp(cp0r, cp1r, edges[1:])
            d_r[j] = np.interp(d0r[j], edges[1:], f, left=0, right=bins)
        d0 = relaxation * np.linalg.solve(r, d_r - d0r) + d0
    return d0.T.reshape(swapped.shape)


def sot(swapped: np.ndarray, original: np.ndarray, steps: int = 10, batch: int = 5,
        seed: int = 7) -> np.ndarray:
    """Sliced optimal transport (DFL's port of OTColorTransfer, color_transfer_sot): each step
    moves every pixel along ``batch`` random directions by the 1-D transport between the
    projected distributions (rank to rank); the displacement is then smoothed in the image
    (DFL's bilateral regularisation). The directions come from ``RandomState(seed)``: DFL's
    after ``np.random.seed(seed)``, and the same for every frame."""
    rng = np.random.RandomState(seed)
    src = np.ascontiguousarray(swapped, np.float32)
    trg = np.ascontiguousarray(original, np.float32)
    h, w, c = src.shape
    new = src.copy()
    advect = np.empty((h * w, c), np.float32)
    for _ in range(steps):
        advect.fill(0)
        for _ in range(batch):
            direction = rng.normal(size=c).astype(np.float32)
            direction /= np.linalg.norm(direction)
            proj_src = np.sum(new * direction, axis=-1).reshape(h * w)
            proj_trg = np.sum(trg * direction, axis=-1).reshape(h * w)
            id_src, id_trg = np.argsort(proj_src), np.argsort(proj_trg)
            moved = proj_trg[id_trg] - proj_src[id_src]
            for i in range(c):
                advect[id_src, i] += moved * direction[i]
        new += advect.reshape(h, w, c) / batch
    smooth = cv2.bilateralFilter(new - src, 0, 5.0, 16.0)  # DFL's reg_sigmaV, reg_sigmaXY
    return src + smooth


def hist_match(swapped: np.ndarray, original: np.ndarray, area: np.ndarray,
               threshold: int = 255) -> np.ndarray:
    """Each channel's histogram inside ``area`` matched to the original's; ``threshold`` (of
    255) scales the swapped face's quantiles, as DFL's and faceswap's thresholds do."""
    keep = area.reshape(-1) > 0
    w = np.ones(int(keep.sum()))
    out = np.empty_like(swapped, dtype=np.float64)
    for c in range(3):
        channel = swapped[..., c].reshape(-1).astype(np.float64)
        target = original[..., c].reshape(-1).astype(np.float64)[keep]
        out[..., c] = _match_1d(channel, channel[keep], w, target, w,
                                threshold / 255.0).reshape(swapped.shape[:2])
    return out


def color_hist_match(source: np.ndarray, template: np.ndarray, threshold: int = 255
                     ) -> np.ndarray:
    """DeepFaceLab's color_hist_match (its hist-match mode): each channel's distinct values
    mapped to the template's value at the same quantile (counted over every pixel), the
    source's quantiles scaled by ``threshold``/255."""
    out = np.empty(source.shape, np.float64)
    for c in range(source.shape[-1]):
        _, index, s_counts = np.unique(source[..., c].ravel(), return_inverse=True,
                                       return_counts=True)
        t_values, t_counts = np.unique(template[..., c].ravel(), return_counts=True)
        s_quantiles = np.cumsum(s_counts).astype(np.float64)
        s_quantiles = threshold * s_quantiles / s_quantiles[-1]
        t_quantiles = np.cumsum(t_counts).astype(np.float64)
        t_quantiles = 255 * t_quantiles / t_quantiles[-1]
        out[..., c] = np.interp(s_quantiles, t_quantiles, t_values)[index].reshape(
            source.shape[:-1])
    return out.astype(source.dtype)


def avg_color(swapped: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """faceswap's avg-color: the masked mean of each channel moved to the original's."""
    w = mask.astype(np.float64)[..., None]
    shift = ((original - swapped) * w).sum(axis=(0, 1)) / w.sum()
    return swapped + shift


_BALANCE_SPACES = {"hsv": (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR),
                   "lab": (cv2.COLOR_BGR2LAB, cv2.COLOR_LAB2BGR),
                   "ycrcb": (cv2.COLOR_BGR2YCrCb, cv2.COLOR_YCrCb2BGR),
                   "rgb": (cv2.COLOR_BGR2RGB, cv2.COLOR_RGB2BGR)}


def manual_balance(swapped: np.ndarray, look: MergeLook | None) -> np.ndarray:
    """faceswap's manual-balance: each channel of a colour space moved toward 1 (a positive
    percentage) or 0 (negative), then contrast and brightness (percent, as faceswap's)."""
    if look is None:
        return swapped
    to_space, to_bgr = _BALANCE_SPACES[look.balance_colorspace]
    face = np.clip(swapped * 255.0 + 0.5, 0, 255).astype(np.uint8)
    image = cv2.cvtColor(face, to_space).astype(np.float32) / 255.0
    for idx, percent in enumerate((look.balance_1, look.balance_2, look.balance_3)):
        amount = percent / 100.0
        if amount >= 0:
            image[..., idx] += (1 - image[..., idx]) * amount
        else:
            image[..., idx] *= 1 + amount
    back = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    out = cv2.cvtColor(back, to_bgr).astype(np.float32)
    contrast = max(-126, int(round(look.balance_contrast * 1.27)))
    brightness = max(-126, int(round(look.balance_brightness * 1.27)))
    if contrast or brightness:
        out = out * (contrast / 127 + 1) - contrast + brightness
    return np.clip(out, 0, 255) / 255.0


def _match_luma(swapped: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A gray face given the original's brightness and contrast (masked luma mean and std)."""
    w = mask.astype(np.float64)
    luma_src = swapped @ _GRAY
    luma_ref = original @ _GRAY
    total = w.sum()
    m_s, m_r = (luma_src * w).sum() / total, (luma_ref * w).sum() / total
    s_s = np.sqrt((((luma_src - m_s) ** 2) * w).sum() / total)
    s_r = np.sqrt((((luma_ref - m_r) ** 2) * w).sum() / total)
    gain = float(np.clip(s_r / max(s_s, _MIN_STD), 0.25, 4.0))
    luma = (luma_src - m_s) * gain + m_r
    return np.repeat(luma[..., None], 3, axis=-1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None,
                       directions: int = 64, seed: int = 3) -> float:
    """The sliced Wasserstein-1 distance between two images' colour distributions (inside
    ``weights`` > 0): how far apart their colours are, for tests and benchmarks."""
    rng = np.random.default_rng(seed)
    pa, wa = _pixels(a, weights)
    pb, wb = _pixels(b, weights)
    quantiles = np.linspace(0.005, 0.995, 200)
    total = 0.0
    for _ in range(directions):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        qa = np.quantile(pa @ d, quantiles)
        qb = np.quantile(pb @ d, quantiles)
        total += float(np.abs(qa - qb).mean())
    del wa, wb
    return total / directions

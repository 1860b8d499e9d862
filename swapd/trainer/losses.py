"""Reconstruction losses on NCHW images in [0, 1], and the masked loss the trainer uses.

"ssim" follows faceswap's default pairing of a structural loss with a pixel loss, kept
simple: ``(1 - SSIM) / 2 + MAE`` with equal weights (faceswap pairs SSIM with MSE; MAE keeps
the pixel term's gradient from vanishing as the error gets small, which matters at the low
iteration counts swapd's small models run for).

:class:`FaceLoss` applies faceswap's penalized mask loss (the background counts only
``background_weight``) and its eye and mouth multipliers (the loss again on the eye / mouth
regions alone, times the multiplier) using the masks the batch loader draws from landmarks.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor

LossFn = Callable[[Tensor, Tensor], Tensor]  # (pred, target) NCHW -> per-image loss (N,)

_C1 = 0.01**2
_C2 = 0.03**2


@lru_cache(maxsize=32)
def _gaussian_band(n: int, window: int, sigma: float, device: torch.device,
                   dtype: torch.dtype) -> Tensor:
    """(n, n - window + 1) matrix whose columns are a shifted 1-D Gaussian: ``x @ band``
    blurs the last axis of x over its valid region."""
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    band = torch.zeros(n, n - window + 1, dtype=torch.float64)
    for j in range(n - window + 1):
        band[j : j + window, j] = kernel
    return band.to(device=device, dtype=dtype)


def ssim(pred: Tensor, target: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity per image (Gaussian window, per channel, valid region), (N,).

    The Gaussian blur is separable, done as two matrix products with a band matrix (one per
    axis) on all five statistics at once: at the 64-128 px swapd's CPU models train, about
    twice as fast as a depthwise conv2d. The products grow with the side (n/11 times the work
    of an 11-tap blur), so at several hundred pixels a conv2d would win again.
    """
    pred = pred.float()
    target = target.float()
    channels, height, width = pred.shape[1:]
    window = min(window_size, height, width)
    rows = _gaussian_band(height, window, sigma, pred.device, pred.dtype)
    cols = _gaussian_band(width, window, sigma, pred.device, pred.dtype)
    stats = torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1)
    mu_p, mu_t, pp, tt, pt = (rows.T @ stats @ cols).split(channels, dim=1)
    var_p = pp - mu_p**2
    var_t = tt - mu_t**2
    cov = pt - mu_p * mu_t
    num = (2 * mu_p * mu_t + _C1) * (2 * cov + _C2)
    den = (mu_p**2 + mu_t**2 + _C1) * (var_p + var_t + _C2)
    return (num / den).mean(dim=(1, 2, 3))


def mae(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error per image."""
    return (pred.float() - target.float()).abs().mean(dim=(1, 2, 3))


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error per image."""
    return (pred.float() - target.float()).square().mean(dim=(1, 2, 3))


def ssim_mae(pred: Tensor, target: Tensor) -> Tensor:
    """Structural dissimilarity plus mean absolute error, per image."""
    return (1 - ssim(pred, target)) / 2 + mae(pred, target)


class FaceLoss:
    """``primary`` loss with the penalized mask and the eye / mouth multipliers, as a scalar.

    ``masks`` are NCHW with channels face, eyes, mouth (see :mod:`swapd.faces.masks`).
    A multiplier of 1 or less adds nothing (faceswap's convention).
    """

    def __init__(self, primary: LossFn, penalized_mask: bool = True,
                 background_weight: float = 0.0, eye_multiplier: float = 3.0,
                 mouth_multiplier: float = 2.0) -> None:
        self.primary = primary
        self.penalized_mask = penalized_mask
        self.background_weight = background_weight
        self.extras = [(channel, weight) for channel, weight in
                       ((1, eye_multiplier), (2, mouth_multiplier)) if weight > 1]

    def __call__(self, pred: Tensor, target: Tensor, masks: Tensor) -> Tensor:
        if not self.penalized_mask and not self.extras:
            return self.primary(pred, target).mean()
        if self.penalized_mask:
            face = masks[:, 0:1]
            weights = [face + self.background_weight * (1 - face)]
        else:
            weights = [torch.ones_like(masks[:, 0:1])]
        weights += [masks[:, channel : channel + 1] for channel, _ in self.extras]
        # All terms in one batch: [face-weighted, eyes only, mouth only].
        stacked = torch.cat(weights)
        per_image = self.primary(pred.repeat(len(weights), 1, 1, 1) * stacked,
                                 target.repeat(len(weights), 1, 1, 1) * stacked)
        per_term = per_image.view(len(weights), -1).mean(dim=1)
        multipliers = torch.tensor([1.0] + [m for _, m in self.extras], device=pred.device)
        return (per_term * multipliers).sum()


LOSSES: dict[str, LossFn] = {"ssim": ssim_mae, "mae": mae, "mse": mse}


def get_loss(name: str) -> LossFn:
    """The per-image loss function called ``name`` ("ssim", "mae" or "mse")."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}") from None

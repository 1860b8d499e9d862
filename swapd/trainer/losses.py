"""Reconstruction losses on NCHW images in [0, 1].

"ssim" follows faceswap's default pairing of a structural loss with a pixel loss, kept
simple: ``(1 - SSIM) / 2 + MAE`` with equal weights (faceswap pairs SSIM with MSE; MAE keeps
the pixel term's gradient from vanishing as the error gets small, which matters at the low
iteration counts swapd's small models run for).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LossFn = Callable[[Tensor, Tensor], Tensor]

_C1 = 0.01**2
_C2 = 0.03**2


def _gaussian_window(size: int, sigma: float, channels: int, like: Tensor) -> Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=like.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    window = torch.outer(g, g)
    return window.expand(channels, 1, size, size).contiguous()


def ssim(pred: Tensor, target: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean structural similarity (Gaussian window, per channel, valid region)."""
    pred = pred.float()
    target = target.float()
    channels = pred.shape[1]
    size = min(window_size, pred.shape[-1], pred.shape[-2])
    window = _gaussian_window(size, sigma, channels, pred)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(x, window, groups=channels)

    mu_p, mu_t = blur(pred), blur(target)
    var_p = blur(pred * pred) - mu_p**2
    var_t = blur(target * target) - mu_t**2
    cov = blur(pred * target) - mu_p * mu_t
    num = (2 * mu_p * mu_t + _C1) * (2 * cov + _C2)
    den = (mu_p**2 + mu_t**2 + _C1) * (var_p + var_t + _C2)
    return (num / den).mean()


def ssim_mae(pred: Tensor, target: Tensor) -> Tensor:
    """Structural dissimilarity plus mean absolute error."""
    return (1 - ssim(pred, target)) / 2 + F.l1_loss(pred.float(), target.float())


def mae(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error."""
    return F.l1_loss(pred.float(), target.float())


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error."""
    return F.mse_loss(pred.float(), target.float())


LOSSES: dict[str, LossFn] = {"ssim": ssim_mae, "mae": mae, "mse": mse}


def get_loss(name: str) -> LossFn:
    """The loss function called ``name`` ("ssim", "mae" or "mse")."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}") from None

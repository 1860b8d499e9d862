"""Reconstruction losses on NCHW images in [0, 1], and the masked loss the trainer uses.

Every loss returns one value per image, (N,). faceswap's names: ``ssim`` (structural
dissimilarity, (1 - SSIM) / 2), ``ms_ssim`` (multi-scale, 1 - MS-SSIM, from the
``pytorch-msssim`` package), ``mae``, ``mse``, ``logcosh``, ``gmsd`` (gradient magnitude
similarity deviation), ``ffl`` (focal frequency loss) and ``pixel_gradient_diff``.
:func:`combine_losses` adds up to three weighted extras to a primary loss, as faceswap's
loss_function_2..4 do. swapd's default is ssim plus mae at weight 1 (faceswap pairs SSIM with
MSE; MAE keeps the pixel term's gradient from vanishing as the error gets small, which matters
at the low iteration counts swapd's small CPU models run for).

:class:`FaceLoss` applies faceswap's penalized mask loss (the background counts only
``background_weight``) and its eye and mouth multipliers (the loss again on the eye / mouth
regions alone, times the multiplier) using the masks the batch loader draws from landmarks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import lru_cache

import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim as _ms_ssim
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


# On the CPU, SSIM's elementwise work streams its five statistics through memory: once a
# batch's tensors outgrow the last-level cache (48 images at 256 px: 38 MB each), every op
# waits on memory. The images are independent, so a large batch goes through in chunks of
# about this many bytes of statistics, each chunk's ops finding the last one's output in the
# cache: SSIM alone 1.3-1.6x faster from 128 px up, a step at 256 px 1.35-1.4x (docs/
# benchmarks.md, "The cost of growth"). A GPU takes the batch whole.
_CPU_CHUNK_BYTES = 16 << 20


def ssim(pred: Tensor, target: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity per image (Gaussian window, per channel, valid region), (N,).

    The Gaussian blur is separable, done as two matrix products with a band matrix (one per
    axis) on all five statistics at once: at the 64-128 px swapd's CPU models train, about
    twice as fast as a depthwise conv2d. The products grow with the side (n/11 times the work
    of an 11-tap blur), so at several hundred pixels a conv2d would win again.
    """
    per_image = 5 * pred[0].numel() * 4 if len(pred) else 1  # one image's float32 statistics
    step = max(1, _CPU_CHUNK_BYTES // per_image)
    if pred.device.type != "cpu" or pred.shape[0] <= step:
        return _ssim(pred, target, window_size, sigma)
    return torch.cat([_ssim(pred[i : i + step], target[i : i + step], window_size, sigma)
                      for i in range(0, pred.shape[0], step)])


def _ssim(pred: Tensor, target: Tensor, window_size: int, sigma: float) -> Tensor:
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


def dssim(pred: Tensor, target: Tensor) -> Tensor:
    """Structural dissimilarity, (1 - SSIM) / 2, per image."""
    return (1 - ssim(pred, target)) / 2


def ms_ssim(pred: Tensor, target: Tensor) -> Tensor:
    """1 - multi-scale SSIM (Wang et al. 2003: five scales), per image.

    The Gaussian window shrinks with the image so that its four halvings still fit (the
    package needs side > (window - 1) * 16: window 3 at 64 px, 7 at 128 px, 11 from 161 px).
    """
    side = min(pred.shape[-2:])
    window = min(11, (side - 1) // 16 + 1)
    window -= 1 - window % 2  # odd
    if window < 3:
        raise ValueError(f"ms_ssim needs faces larger than 32 px, got {side} px")
    value = _ms_ssim(pred.float(), target.float(), data_range=1.0, size_average=False,
                     win_size=window)
    return 1 - value


def logcosh(pred: Tensor, target: Tensor) -> Tensor:
    """Mean log(cosh(error)) per image: like MSE for small errors, like MAE for large ones.
    Written as x + softplus(-2x) - log 2, which does not overflow."""
    x = pred.float() - target.float()
    return (x + F.softplus(-2 * x) - math.log(2.0)).mean(dim=(1, 2, 3))


# BT.601 luma of BGR images (swapd's faces are BGR, as OpenCV decodes them).
_LUMA_BGR = (0.114, 0.587, 0.299)
# GMSD's stability constant: 170 on 0..255 images (Xue et al.), here on 0..1.
_GMSD_C = 170 / 255**2


def _gradient_magnitude(luma: Tensor) -> Tensor:
    prewitt = torch.tensor([[1.0, 0.0, -1.0]] * 3, device=luma.device) / 3
    kernels = torch.stack([prewitt, prewitt.T])[:, None]  # (2, 1, 3, 3): x and y
    grad = F.conv2d(luma, kernels)
    return torch.sqrt(grad.square().sum(dim=1) + 1e-12)  # eps: sqrt has no gradient at 0


def gmsd(pred: Tensor, target: Tensor) -> Tensor:
    """Gradient magnitude similarity deviation (Xue et al. 2014), per image: the standard
    deviation of the gradient similarity map of the luma, at half resolution as in the paper."""
    weights = torch.tensor(_LUMA_BGR, device=pred.device).view(1, 3, 1, 1)
    lumas = [(x.float() * weights).sum(dim=1, keepdim=True) if x.shape[1] == 3 else x.float()
             for x in (pred, target)]
    grad_p, grad_t = (_gradient_magnitude(F.avg_pool2d(y, 2)) for y in lumas)
    similarity = (2 * grad_p * grad_t + _GMSD_C) / (grad_p**2 + grad_t**2 + _GMSD_C)
    return similarity.flatten(1).std(dim=1)


def ffl(pred: Tensor, target: Tensor, alpha: float = 1.0) -> Tensor:
    """Focal frequency loss (Jiang et al., ICCV 2021), per image: the squared distance of the
    two 2-D spectra, each frequency weighted by its own distance (to the power ``alpha``,
    normalised per image and channel, not differentiated), so the frequencies the model gets
    most wrong count most. As the authors' ``focal-frequency-loss`` package computes it, with
    one patch and no log weighting."""
    diff = torch.fft.fft2(pred.float(), norm="ortho") - torch.fft.fft2(target.float(),
                                                                       norm="ortho")
    distance = diff.real.square() + diff.imag.square()
    weight = distance.sqrt() ** alpha
    weight = weight / weight.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return (weight.detach() * distance).mean(dim=(1, 2, 3))


def pixel_gradient_diff(pred: Tensor, target: Tensor) -> Tensor:
    """Gradient difference loss (Mathieu et al. 2016), per image: how far the size of each
    horizontal and vertical pixel step differs from the target's (sharpens edges)."""
    pred, target = pred.float(), target.float()
    dx = (pred[..., :, 1:] - pred[..., :, :-1]).abs() - (target[..., :, 1:]
                                                           - target[..., :, :-1]).abs()
    dy = (pred[..., 1:, :] - pred[..., :-1, :]).abs() - (target[..., 1:, :]
                                                           - target[..., :-1, :]).abs()
    return dx.abs().mean(dim=(1, 2, 3)) + dy.abs().mean(dim=(1, 2, 3))


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
        # (component name, mask channel, multiplier) of the region terms that are on
        self._regions = [(name, channel, weight) for name, channel, weight in
                         (("eyes", 1, eye_multiplier), ("mouth", 2, mouth_multiplier))
                         if weight > 1]
        self.extras = [(name, weight) for name, _, weight in self._regions]

    def __call__(self, pred: Tensor, target: Tensor, masks: Tensor) -> Tensor:
        return self.per_image(pred, target, masks).mean()

    def per_image(self, pred: Tensor, target: Tensor, masks: Tensor) -> Tensor:
        """The loss of each image, (N,): the batch loss is their mean (the snapshot tracker
        records them face by face)."""
        return self.breakdown(pred, target, masks)[0]

    def breakdown(self, pred: Tensor, target: Tensor, masks: Tensor
                  ) -> tuple[Tensor, dict[str, Tensor]]:
        """Each image's loss (N,) and the batch loss split into components that add up to
        it: each loss function's share on the face (or the whole image) and, when their
        multipliers are on, the eye and mouth terms. Components are detached scalars."""
        regions = ["face"] + [name for name, _ in self.extras]
        if self.penalized_mask or self.extras:
            if self.penalized_mask:
                face = masks[:, 0:1]
                weights = [face + self.background_weight * (1 - face)]
            else:
                weights = [torch.ones_like(masks[:, 0:1])]
            weights += [masks[:, channel : channel + 1] for _, channel, _ in self._regions]
            # All regions in one batch: [face-weighted, eyes only, mouth only].
            stacked = torch.cat(weights)
            pred = pred.repeat(len(weights), 1, 1, 1) * stacked
            target = target.repeat(len(weights), 1, 1, 1) * stacked
        parts = (self.primary.by_part(pred, target) if isinstance(self.primary, CombinedLoss)
                 else {"loss": self.primary(pred, target)})
        multipliers = torch.tensor([1.0] + [m for _, _, m in self._regions],
                                   device=pred.device)
        by_region = {name: value.view(len(regions), -1) * multipliers[:, None]
                     for name, value in parts.items()}
        per_image = sum(by_region.values()).sum(dim=0)  # type: ignore[union-attr]
        components = {name: value[0].mean().detach() for name, value in by_region.items()}
        for r, region in enumerate(regions[1:], start=1):
            components[region] = sum(v[r] for v in by_region.values()).mean().detach()
        return per_image, components  # type: ignore[return-value]


LOSSES: dict[str, LossFn] = {
    "ssim": dssim, "ms_ssim": ms_ssim, "mae": mae, "mse": mse, "logcosh": logcosh,
    "gmsd": gmsd, "ffl": ffl, "pixel_gradient_diff": pixel_gradient_diff,
}
MAX_EXTRA_LOSSES = 3  # as faceswap's loss_function_2..4


def get_loss(name: str) -> LossFn:
    """The per-image loss function called ``name`` (see :data:`LOSSES`)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}") from None


class CombinedLoss:
    """A primary loss plus weighted extras, per image; ``parts`` names each term."""

    def __init__(self, parts: list[tuple[str, LossFn, float]]) -> None:
        self.parts = parts

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        return sum(self.by_part(pred, target).values())  # type: ignore[return-value]

    def by_part(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Each term's per-image value, weighted: they add up to the loss."""
        return {name: weight * loss(pred, target) for name, loss, weight in self.parts}


def combine_losses(primary: str, extras: Mapping[str, float] | None = None) -> CombinedLoss:
    """``primary`` plus each extra loss times its weight, per image (weight 0: left out)."""
    extras = {name: weight for name, weight in (extras or {}).items() if weight}
    if len(extras) > MAX_EXTRA_LOSSES:
        raise ValueError(f"at most {MAX_EXTRA_LOSSES} extra losses, got {len(extras)}")
    parts = [(primary, get_loss(primary), 1.0)]
    for name, weight in extras.items():  # the primary again as an extra is a second term
        parts.append((name if name != primary else f"{name}_2", get_loss(name), float(weight)))
    return CombinedLoss(parts)

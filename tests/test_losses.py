"""The reconstruction losses against straightforward reference formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from swapd.trainer.losses import get_loss, mae, mse, ssim


def reference_ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11,
                   sigma: float = 1.5) -> torch.Tensor:
    """SSIM per image the textbook way (Wang et al. 2004): a 2-D Gaussian window applied by a
    depthwise conv2d over the valid region, in float64."""
    pred, target = pred.double(), target.double()
    channels = pred.shape[1]
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g /= g.sum()
    kernel = torch.outer(g, g).expand(channels, 1, window, window)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=channels)

    mu_p, mu_t = blur(pred), blur(target)
    var_p = blur(pred * pred) - mu_p**2
    var_t = blur(target * target) - mu_t**2
    cov = blur(pred * target) - mu_p * mu_t
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / (
        (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return value.mean(dim=(1, 2, 3))


def test_ssim_matches_the_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(4, 3, 40, 48, generator=gen)
    pred = (target + 0.2 * torch.rand(4, 3, 40, 48, generator=gen)).clamp(0, 1)
    ours = ssim(pred, target)
    assert ours.shape == (4,)
    assert torch.allclose(ours.double(), reference_ssim(pred, target), atol=1e-5)
    assert torch.allclose(ssim(target, target), torch.ones(4), atol=1e-5)
    channels_last = ssim(pred.contiguous(memory_format=torch.channels_last), target)
    assert torch.allclose(channels_last, ours, atol=1e-6)


def test_pixel_losses_per_image() -> None:
    pred = torch.zeros(2, 3, 4, 4)
    target = torch.zeros(2, 3, 4, 4)
    target[1] = 0.5
    assert torch.equal(mae(pred, target), torch.tensor([0.0, 0.5]))
    assert torch.equal(mse(pred, target), torch.tensor([0.0, 0.25]))
    assert get_loss("ssim")(target, target).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    with pytest.raises(ValueError, match="unknown loss 'lpips'"):
        get_loss("lpips")

"""The reconstruction losses against reference formulas and the properties that define them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from swapd.trainer.losses import (
    LOSSES,
    FaceLoss,
    combine_losses,
    ffl,
    get_loss,
    gmsd,
    logcosh,
    mae,
    ms_ssim,
    mse,
    pixel_gradient_diff,
    ssim,
)
from swapd.trainer.options import OptionsError, TrainerOptions, split_options


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


def test_a_large_cpu_batch_goes_through_in_chunks_with_the_same_values_and_gradients(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """200 px: 2.4 MB of statistics an image, so a batch of 9 goes in chunks of 6 and 3 (each
    image's SSIM is its own): the same values, the same gradients as the batch whole."""
    from swapd.trainer import losses

    chunks: list[int] = []
    whole_ssim = losses._ssim

    def counted(pred: torch.Tensor, *args: object) -> torch.Tensor:
        chunks.append(len(pred))
        return whole_ssim(pred, *args)

    monkeypatch.setattr(losses, "_ssim", counted)
    gen = torch.Generator().manual_seed(1)
    target = torch.rand(9, 3, 200, 200, generator=gen)
    pred = (target + 0.3 * torch.rand(9, 3, 200, 200, generator=gen)).clamp(0, 1)
    chunked, whole = pred.clone().requires_grad_(True), pred.clone().requires_grad_(True)
    ours = ssim(chunked, target)
    assert chunks == [6, 3]
    theirs = whole_ssim(whole, target, 11, 1.5)
    assert torch.allclose(ours, theirs, atol=1e-7)
    ours.sum().backward()
    theirs.sum().backward()
    assert torch.allclose(chunked.grad, whole.grad, atol=1e-9)
    assert ours.shape == (9,) and ssim(pred[:0], target[:0]).shape == (0,)
    assert torch.allclose(ours[:2].double(), reference_ssim(pred[:2], target[:2]), atol=1e-5)


def test_pixel_losses_per_image() -> None:
    pred = torch.zeros(2, 3, 4, 4)
    target = torch.zeros(2, 3, 4, 4)
    target[1] = 0.5
    assert torch.equal(mae(pred, target), torch.tensor([0.0, 0.5]))
    assert torch.equal(mse(pred, target), torch.tensor([0.0, 0.25]))
    assert get_loss("ssim")(target, target).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    with pytest.raises(ValueError, match="unknown loss 'lpips'"):
        get_loss("lpips")


def _faces(seed: int = 0, size: int = 64) -> torch.Tensor:
    """Smooth random images (blurred noise), closer to faces than white noise."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(3, 3, size // 4, size // 4, generator=gen)
    return F.interpolate(noise, size=(size, size), mode="bicubic").clamp(0, 1)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_zero_at_the_target_and_grows_with_the_error(name: str) -> None:
    loss = get_loss(name)
    target = _faces()
    gen = torch.Generator().manual_seed(1)
    noise = torch.rand(target.shape, generator=gen) - 0.5
    values = []
    for level in (0.0, 0.1, 0.3):
        pred = (target + level * noise).clamp(0, 1).requires_grad_(True)
        value = loss(pred, target)
        assert value.shape == (3,)
        values.append(value.detach())
        if level:
            value.sum().backward()
            assert pred.grad is not None and torch.isfinite(pred.grad).all()
            assert pred.grad.abs().sum() > 0
    assert torch.allclose(values[0], torch.zeros(3), atol=1e-5), values[0]
    assert (values[1] > 1e-4).all() and (values[2] > values[1]).all(), values


def test_logcosh_is_mse_like_near_zero_and_mae_like_far_away() -> None:
    zero = torch.zeros(1, 1, 2, 2)
    small, large = torch.full_like(zero, 0.01), torch.full_like(zero, 30.0)
    assert logcosh(small, zero).item() == pytest.approx(0.01**2 / 2, rel=1e-3)
    assert logcosh(large, zero).item() == pytest.approx(30 - math.log(2), rel=1e-6)


def test_ffl_with_flat_weights_is_the_mse() -> None:
    """With alpha 0 every frequency weighs 1, and the orthonormal FFT keeps the energy
    (Parseval): the focal frequency loss is then exactly the mean squared error."""
    pred, target = _faces(1), _faces(2)
    assert torch.allclose(ffl(pred, target, alpha=0.0), mse(pred, target), rtol=1e-4)
    assert (ffl(pred, target) < mse(pred, target)).all()  # focal weights are at most 1


def test_gradient_losses_ignore_flat_shifts_and_see_blur() -> None:
    target = _faces(3)
    brighter = target + 0.05  # the same edges everywhere
    blurred = F.avg_pool2d(target, 5, stride=1, padding=2, count_include_pad=False)
    assert pixel_gradient_diff(brighter, target).max() < 1e-6
    assert gmsd(brighter, target).max() < 1e-6
    assert (pixel_gradient_diff(blurred, target) > 1e-3).all()
    assert (gmsd(blurred, target) > 1e-3).all()


def test_ms_ssim_fits_its_window_to_the_face_size() -> None:
    for size in (64, 128, 192):
        target = _faces(4, size)
        pred = (target + 0.2 * (_faces(5, size) - 0.5)).clamp(0, 1)
        value = ms_ssim(pred, target)
        assert value.shape == (3,) and ((value > 0) & (value < 1)).all()
    with pytest.raises(ValueError, match="larger than 32 px"):
        ms_ssim(_faces(4, 32), _faces(5, 32))


def test_extra_losses_add_with_their_weights() -> None:
    pred, target = _faces(6), _faces(7)
    combined = combine_losses("ssim", {"mse": 2.0, "ffl": 0.5, "gmsd": 0.0})
    expected = get_loss("ssim")(pred, target) + 2 * mse(pred, target) + 0.5 * ffl(pred, target)
    assert torch.allclose(combined(pred, target), expected)
    assert torch.equal(combine_losses("mae", {})(pred, target), mae(pred, target))
    twice = combine_losses("mae", {"mae": 1.0})  # the primary again is a second term
    assert [name for name, _, _ in twice.parts] == ["mae", "mae_2"]
    with pytest.raises(ValueError, match="at most 3"):
        combine_losses("ssim", {"mse": 1, "mae": 1, "ffl": 1, "gmsd": 1})


def test_the_loss_breaks_down_into_parts_that_add_up() -> None:
    gen = torch.Generator().manual_seed(8)
    pred, target = _faces(9), _faces(10)
    masks = (torch.rand(3, 3, 64, 64, generator=gen) > 0.5).float()
    loss = FaceLoss(combine_losses("ssim", {"mae": 1.0, "ffl": 0.5}), eye_multiplier=3,
                    mouth_multiplier=2)
    per_image, parts = loss.breakdown(pred, target, masks)
    assert set(parts) == {"ssim", "mae", "ffl", "eyes", "mouth"}
    assert sum(float(v) for v in parts.values()) == pytest.approx(float(per_image.mean()),
                                                                  rel=1e-5)
    assert float(loss(pred, target, masks)) == pytest.approx(float(per_image.mean()))
    plain = FaceLoss(mae, penalized_mask=False, eye_multiplier=1, mouth_multiplier=1)
    assert set(plain.breakdown(pred, target, masks)[1]) == {"loss"}


def test_extra_losses_are_validated_as_options() -> None:
    assert TrainerOptions().extra_losses == {"mae": 1.0}  # faceswap's pairing, with MAE
    options = TrainerOptions(loss="ms_ssim", extra_losses={"ffl": 1.0, "logcosh": 0.5})
    assert options.extra_losses == {"ffl": 1.0, "logcosh": 0.5}
    with pytest.raises(OptionsError, match="extra_losses: .*unknown loss lpips"):
        split_options("original", {"extra_losses": {"lpips": 1.0}})
    with pytest.raises(OptionsError, match="at most 3"):
        split_options("original", {"extra_losses": {"mse": 1, "mae": 1, "ffl": 1, "gmsd": 1}})

"""faceswap's Original model, plus the building blocks the faceswap-shaped models share.

Encoder: 5x5 stride-2 convs 128-256-512-1024 (the last dropped with ``lowmem``), dense
bottleneck (1024; 512 with ``lowmem``), dense back to (size/16)^2 x 1024, one pixel-shuffle
upscale to 512 channels. Each decoder: upscales 256-128-64 then a 5x5 sigmoid conv to BGR.
About 82 M parameters at the defaults (64 px, width 1.0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from swapd.trainer.models import CommonOptions, SwapModel, register

LEAK = 0.1  # faceswap's LeakyReLU slope


def channels(base: int, width: float) -> int:
    """``base`` channels scaled by the width multiplier (at least 4)."""
    return max(4, round(base * width))


ConvPadding = Literal["symmetric", "same"]


class SameConv2d(nn.Conv2d):
    """A 5x5 stride-2 conv padded as Keras/TensorFlow's ``padding="same"`` pads it: on an even
    side, 1 pixel before and 2 after (torch's ``padding=2`` puts 2 on each side, which samples
    a grid one pixel earlier: no weights can make up for that). faceswap's Conv2DBlock is
    this; an imported faceswap model needs it to draw the same faces."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out, 5, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        # The sides are even (input_size is a multiple of 16), so the split is always (1, 2).
        return super().forward(nn.functional.pad(x, (1, 2, 1, 2)))


def conv_block(c_in: int, c_out: int, padding: ConvPadding = "symmetric") -> nn.Sequential:
    """faceswap's Conv2DBlock: 5x5 stride-2 conv + LeakyReLU; halves the side. ``padding``:
    "same" pads as Keras does (see :class:`SameConv2d`), "symmetric" as swapd always did."""
    conv = (SameConv2d(c_in, c_out) if padding == "same"
            else nn.Conv2d(c_in, c_out, 5, stride=2, padding=2))
    return nn.Sequential(conv, nn.LeakyReLU(LEAK))


def upscale_block(c_in: int, c_out: int) -> nn.Sequential:
    """faceswap's UpscaleBlock: 3x3 conv to 4x channels + LeakyReLU + pixel shuffle."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out * 4, 3, padding=1), nn.LeakyReLU(LEAK), nn.PixelShuffle(2)
    )


class Reshape(nn.Module):
    """Reshape a flat vector into a (C, H, W) map."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], *self.shape)


def conv_stack(convs: Sequence[int], c_in: int, padding: ConvPadding = "symmetric"
               ) -> list[nn.Module]:
    """faceswap's encoder convolutions: one stride-2 Conv2DBlock per entry of ``convs``."""
    layers: list[nn.Module] = []
    for c_out in convs:
        layers.append(conv_block(c_in, c_out, padding))
        c_in = c_out
    return layers


def make_encoder(
    input_size: int,
    convs: Sequence[int],
    dense_dim: int,
    reshape_channels: int,
    upscale_to: int,
    c_in: int = 3,
    padding: ConvPadding = "symmetric",
) -> nn.Sequential:
    """Conv stack, flatten, dense bottleneck, dense to (size/16)^2 maps, one upscale."""
    layers = conv_stack(convs, c_in, padding)
    c_in = convs[-1]
    side = input_size // 2 ** len(convs)
    seed = input_size // 16
    layers += [
        nn.Flatten(),
        nn.Linear(c_in * side * side, dense_dim),
        nn.Linear(dense_dim, reshape_channels * seed * seed),
        Reshape(reshape_channels, seed, seed),
        upscale_block(reshape_channels, upscale_to),
    ]
    return nn.Sequential(*layers)


def _upscales_to_image(c_in: int, upscales: Sequence[int], out_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_out in upscales:
        layers.append(upscale_block(c_in, c_out))
        c_in = c_out
    layers += [nn.Conv2d(c_in, out_channels, 5, padding=2), nn.Sigmoid()]
    return nn.Sequential(*layers)


class FaceAndMask(nn.Module):
    """faceswap's decoder with ``learn_mask``: the face branch and, from the same input, a
    mask branch of the same upscales ending in one sigmoid channel; outputs them stacked."""

    def __init__(self, face: nn.Module, mask: nn.Module) -> None:
        super().__init__()
        self.face = face
        self.mask = mask

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.face(x), self.mask(x)], dim=1)


MaskDecoder = Literal["separate", "shared"]


def make_decoder(c_in: int, upscales: Sequence[int], out_channels: int = 3,
                 mask: bool = False, mask_decoder: MaskDecoder = "separate") -> nn.Module:
    """Pixel-shuffle upscales then a 5x5 conv + sigmoid to an ``out_channels`` image; with
    ``mask`` also a mask channel after the image: from faceswap's mask branch (``separate``,
    see :class:`FaceAndMask`) or from the face decoder's last conv (``shared``)."""
    if mask and mask_decoder == "shared":
        # One more output channel of the last conv: the face's upscales serve the mask too,
        # where a separate branch costs as much again as the face decoder.
        return _upscales_to_image(c_in, upscales, out_channels + 1)
    face = _upscales_to_image(c_in, upscales, out_channels)
    if not mask:
        return face  # the plain Sequential: checkpoints keep their layer names
    return FaceAndMask(face, _upscales_to_image(c_in, upscales, 1))


class FaceswapShapeOptions(CommonOptions):
    """Options of the models of faceswap's shape (original, lightweight, iae)."""

    mask_decoder: MaskDecoder = Field(
        "separate", description="with learn_mask: faceswap's mask decoder beside each face "
        "decoder (separate), or one more channel of the face decoder's last conv (shared: "
        "nearly free; a separate decoder costs as much as the face's)")
    conv_padding: ConvPadding = Field(
        "symmetric", description="how the stride-2 convs pad: 'same' as Keras does, 1 pixel "
        "before and 2 after (faceswap's own models; `swapd model import` sets it), or "
        "'symmetric', 2 each side (swapd's models so far)")

    @model_validator(mode="after")
    def _shared_needs_a_mask(self) -> FaceswapShapeOptions:
        # Refused rather than ignored: saved options must say what the network is.
        if self.mask_decoder == "shared" and not self.learn_mask:
            raise ValueError("mask_decoder = 'shared' draws a learned mask: set learn_mask = "
                             "true, or leave mask_decoder out")
        return self


class OriginalOptions(FaceswapShapeOptions):
    """Options of the Original model."""

    lowmem: bool = Field(False, description="drop the 1024 conv, bottleneck 512")


@register("original")
class Original(SwapModel):
    """faceswap's Original autoencoder."""

    Options = OriginalOptions

    def __init__(self, options: OriginalOptions) -> None:
        super().__init__(options)
        w = options.width
        convs = [128, 256, 512] if options.lowmem else [128, 256, 512, 1024]
        dense = options.dense_dim or (512 if options.lowmem else 1024)
        self.encoder = make_encoder(
            options.input_size,
            [channels(c, w) for c in convs],
            dense,
            channels(1024, w),
            channels(512, w),
            self.image_channels,
            options.conv_padding,
        )
        ups = [channels(c, w) for c in (256, 128, 64)]
        self.decoder_a = make_decoder(channels(512, w), ups, self.image_channels,
                                      options.learn_mask, options.mask_decoder)
        self.decoder_b = make_decoder(channels(512, w), ups, self.image_channels,
                                      options.learn_mask, options.mask_decoder)

"""faceswap's DFL-SAE model (DeepFaceLab's old SAE, as faceswap's plugin builds it).

Widths are per colour channel, as in faceswap: ``dims = 3 * encoder_dims`` (126 at the
default 42). Encoder: 5x5 stride-2 convs dims-2dims-4dims-8dims. Decoders: three pixel-shuffle
upscales to ``3 * decoder_dims`` x 8 / 4 / 2, each followed by LeakyReLU(0.2) and two residual
blocks, then a 5x5 sigmoid conv; with ``learn_mask`` a mask branch of plain upscales
(``decoder_dims`` x 8 / 4 / 2) ending in a 5x5 sigmoid conv to one channel.

- ``df``: the encoder goes on through a dense bottleneck (``autoencoder_dims``, 512) and a
  dense back to (size/16)^2 maps, one upscale; one decoder per side.
- ``liae``: the encoder stops at the flattened convs; two intermediate blocks (dense
  ``autoencoder_dims``, 256, then dense to (size/16)^2 x 2 ae maps, one upscale), ``inter_both``
  and ``inter_b``, feed one shared decoder. faceswap's assignment: side "a" draws from
  ``concat(inter_both(code), inter_both(code))``, side "b" from
  ``concat(inter_b(code), inter_both(code))``.

About 130 M parameters at the defaults (df, 128 px). grayscale changes only the first conv and
the face output (the widths stay faceswap's). faceswap's ``multiscale_decoder`` is not
supported: swapd trains one output per side. ``width`` and ``dense_dim`` are not used (the
``*_dims`` options size the model) and must stay at their defaults.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor, nn

from swapd.trainer.models import CommonOptions, Side, SwapModel, register, split_sides
from swapd.trainer.models.original import (
    FaceAndMask,
    Reshape,
    conv_stack,
    make_decoder,
    make_encoder,
    upscale_block,
)

RESIDUAL_LEAK = 0.2  # the residual blocks' LeakyReLU slope (faceswap's and DFL's)
# faceswap's plugin sizes its layers from its input's channels, always 3 (BGR).
CHANNELS_PER_DIM = 3


class ResidualBlock(nn.Module):
    """faceswap's (dfaker's) and DeepFaceLab's residual block: 3x3 conv, LeakyReLU(0.2), 3x3
    conv, add the input, LeakyReLU(0.2). Same channels and size in and out."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = nn.functional.leaky_relu(self.conv1(x), RESIDUAL_LEAK)
        return nn.functional.leaky_relu(x + self.conv2(y), RESIDUAL_LEAK)


def intermediate(in_features: int, dense: int, out_channels: int, seed: int,
                 upscale: bool = True) -> nn.Sequential:
    """An intermediate block: dense ``dense``, dense to seed x seed x ``out_channels`` maps and
    (unless ``upscale`` is False) one pixel-shuffle upscale keeping the channels."""
    layers: list[nn.Module] = [
        nn.Linear(in_features, dense),
        nn.Linear(dense, out_channels * seed * seed),
        Reshape(out_channels, seed, seed),
    ]
    if upscale:
        layers.append(upscale_block(out_channels, out_channels))
    return nn.Sequential(*layers)


def unused_option(value: object, info: ValidationInfo) -> object:
    """Field validator for CommonOptions' ``width`` and ``dense_dim`` on models sized by their
    own ``*_dims`` options: only the default passes, so a job cannot think it set them."""
    default = CommonOptions.model_fields[info.field_name or ""].default
    if value != default:
        raise ValueError(f"not used by this model (its *_dims options size it); leave it at "
                         f"{default}")
    return value


class DFLSAEOptions(CommonOptions):
    """Options of the DFL-SAE model (faceswap's ``dfl_sae`` plugin)."""

    input_size: int = Field(128, ge=64, le=256, description="model input side, multiple of 16")
    width: float = Field(1.0, description="not used (encoder_dims / decoder_dims size it)")
    dense_dim: int | None = Field(None, description="not used (see autoencoder_dims)")
    architecture: Literal["df", "liae"] = Field(
        "df", description="'df' keeps faces more natural; 'liae' can fix overly different "
        "face shapes")
    autoencoder_dims: int = Field(
        0, description="bottleneck width, 32-1024 (0 = 256 for liae, 512 for df)")
    encoder_dims: int = Field(42, ge=21, le=85, description="encoder width per colour channel")
    decoder_dims: int = Field(21, ge=10, le=85, description="decoder width per colour channel")
    multiscale_decoder: bool = Field(
        False, description="faceswap's extra 1/4 and 1/2 size outputs: not supported")

    _unused = field_validator("width", "dense_dim")(unused_option)

    @field_validator("autoencoder_dims")
    @classmethod
    def _ae_dims(cls, value: int) -> int:
        if value != 0 and not 32 <= value <= 1024:
            raise ValueError(f"must be 0 (the architecture's default) or 32-1024, got {value}")
        return value

    @field_validator("multiscale_decoder")
    @classmethod
    def _one_scale(cls, value: bool) -> bool:
        if value:
            raise ValueError("not supported: swapd trains one output per side (faceswap's "
                             "default is off too)")
        return value

    @property
    def ae_dims(self) -> int:
        """The bottleneck width, with 0 resolved to the architecture's default."""
        if self.autoencoder_dims:
            return self.autoencoder_dims
        return 256 if self.architecture == "liae" else 512


def _sae_decoder(c_in: int, decoder_dims: int, out_channels: int, mask: bool) -> nn.Module:
    dims = CHANNELS_PER_DIM * decoder_dims
    layers: list[nn.Module] = []
    width = c_in
    for c_out in (dims * 8, dims * 4, dims * 2):
        # faceswap: UpscaleBlock without activation, then LeakyReLU(0.2). The shared block
        # with its slope changed is the same (an elementwise activation commutes with the
        # pixel shuffle).
        upscale = upscale_block(width, c_out)
        upscale[1] = nn.LeakyReLU(RESIDUAL_LEAK)
        layers += [upscale, ResidualBlock(c_out), ResidualBlock(c_out)]
        width = c_out
    layers += [nn.Conv2d(width, out_channels, 5, padding=2), nn.Sigmoid()]
    face = nn.Sequential(*layers)
    if not mask:
        return face
    # The mask branch's widths are decoder_dims itself, not per colour channel (as faceswap).
    upscales = [decoder_dims * 8, decoder_dims * 4, decoder_dims * 2]
    return FaceAndMask(face, make_decoder(c_in, upscales, 1))


@register("dfl_sae")
class DFLSAE(SwapModel):
    """faceswap's DFL-SAE autoencoder, ``df`` or ``liae``."""

    Options = DFLSAEOptions
    options: DFLSAEOptions

    def __init__(self, options: DFLSAEOptions) -> None:
        super().__init__(options)
        dims = CHANNELS_PER_DIM * options.encoder_dims
        convs = [dims, dims * 2, dims * 4, dims * 8]
        size, ae = options.input_size, options.ae_dims
        seed = size // 16
        out, mask = self.image_channels, options.learn_mask
        if options.architecture == "df":
            self.encoder = make_encoder(size, convs, ae, ae, ae, self.image_channels)
            self.decoder_a = _sae_decoder(ae, options.decoder_dims, out, mask)
            self.decoder_b = _sae_decoder(ae, options.decoder_dims, out, mask)
        else:
            self.encoder = nn.Sequential(*conv_stack(convs, self.image_channels), nn.Flatten())
            flat = convs[-1] * seed * seed
            self.inter_both = intermediate(flat, ae, ae * 2, seed)
            self.inter_b = intermediate(flat, ae, ae * 2, seed)
            self.decoder_shared = _sae_decoder(ae * 4, options.decoder_dims, out, mask)

    @classmethod
    def draws_from_one_code(cls, options: CommonOptions) -> bool:
        return isinstance(options, DFLSAEOptions) and options.architecture == "df"

    def forward(self, x: Tensor, side: Side) -> Tensor:
        if self.options.architecture == "df":
            return super().forward(x, side)
        if side not in ("a", "b"):
            raise ValueError(f"side must be 'a' or 'b', got {side!r}")
        code = self.encoder(x)
        both = self.inter_both(code)
        particular = both if side == "a" else self.inter_b(code)
        return self.decoder_shared(torch.cat([particular, both], dim=1))

    def both_sides(self, input_a: Tensor, input_b: Tensor) -> tuple[Tensor, Tensor]:
        if self.options.architecture == "df":
            return super().both_sides(input_a, input_b)
        # LIAE: the encoder, the shared intermediate block and the decoder once over both.
        code = self.encoder(torch.cat([input_a, input_b]))
        both = self.inter_both(code)
        both_a, _ = split_sides(both, len(input_a))
        _, code_b = split_sides(code, len(input_a))
        particular = torch.cat([both_a, self.inter_b(code_b)])
        faces = self.decoder_shared(torch.cat([particular, both], dim=1))
        return split_sides(faces, len(input_a))

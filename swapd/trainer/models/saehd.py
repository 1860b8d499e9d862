"""DeepFaceLab's SAEHD model (core/leras/archis/DeepFakeArchi.py, models/Model_SAEHD).

``archi`` is ``df`` or ``liae``, optionally followed by "-" and any of the letters:
``u`` pixel-normalises the flattened encoder output ("increased likeness"), ``d`` halves the
dense code's side and draws the face at double the decoder's resolution (four output convs
interleaved by depth-to-space), ``t`` a thinner, deeper encoder and decoder (a fifth
downscale, residual blocks in the encoder, a fourth upscale in the decoder).

Encoder: 5x5 stride-2 convs ``e_dims`` x 1-2-4-8 (with ``t``: x 1, residual, 2, 4, 8, 8,
residual), flattened. Inter: dense ``ae_dims``, dense to (size/16)^2 maps (size/32 with ``d``)
and, without ``t``, one upscale. Decoder: upscales ``d_dims`` x 8-4-2 (with ``t``: 8-8-4-2),
each followed by a residual block, then a 1x1 sigmoid conv to BGR; the mask decoder beside it
(``learn_mask``, on by default as SAEHD always has it): upscales ``d_mask_dims`` x 8-4-2
(``t``: 8-8-4-2; ``d`` adds one to x1), 1x1 sigmoid conv to one channel.

- ``df``: one inter (ae_dims maps), a decoder per side: ``decoder_a`` is DFL's dst decoder,
  ``decoder_b`` its src decoder.
- ``liae``: ``inter_ab`` and ``inter_b`` (ae_dims * 2 maps each) and one decoder. Side "b"
  (DFL's src) draws from ``concat(inter_ab(code), inter_ab(code))``, side "a" (dst) from
  ``concat(inter_b(code), inter_ab(code))``; the swap A>B then decodes
  ``concat(inter_ab(code_a), inter_ab(code_a))``, DFL's dst-to-src.

The face type fixes the crop (see :meth:`SAEHD.crop`). About 82 M parameters at the defaults
(liae-ud, 128 px). grayscale takes and draws one channel (DFL's SAEHDBW); ``width`` and
``dense_dim`` are not used and must stay at their defaults. DFL's ``c`` (cosine activation)
letter is not supported.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from torch import Tensor, nn

from swapd.faces.alignment import CENTERING_PADDING
from swapd.trainer.models import CommonOptions, Side, SwapModel, register, split_sides
from swapd.trainer.models.dfl_sae import ResidualBlock, intermediate, unused_option
from swapd.trainer.models.original import FaceAndMask, conv_block, conv_stack, upscale_block

ARCHI_TYPES = ("df", "liae")
ARCHI_LETTERS = "udt"

# DeepFaceLab's face types as swapd crops: (centering, coverage).
#
# DFL (LandmarksProcessor.get_transform_mat) cuts a square of side 1 + 2 * sqrt(2) * padding
# in units of its mean face's unit box (half-diagonal |diag| * (padding * sqrt(2) + 0.5)),
# with paddings h 0.0, mf 0.0675, f 0.2109375, wf 0.40, head 0.70: sides 1.000, 1.191, 1.597,
# 2.131 and 2.980. A swapd face at a centering spans 1 / (1 - CENTERING_PADDING) units
# (legacy 1.6, face 2.0, head 2.667) and the trainer keeps its centre `coverage`, so
# coverage = DFL side * (1 - padding), at most 1. The centering is the nearest one
# swapd.faces.dfl_jpg.DFL_CENTERING gives DFL's face-type files: h 0.625 and mf 0.744 of a
# legacy face, f 0.798 of a face-centred one. wf is 7 % wider than a whole face-centred face
# and head 12 % wider than a head-centred one, so both take all of theirs. The centres differ
# a little too: DFL moves wf's up 0.07 units and head's 0.5 (swapd's head 0.32), and both
# tools' mean faces agree only roughly.
DFL_PADDING: dict[str, float] = {"h": 0.0, "mf": 0.0675, "f": 0.2109375, "wf": 0.40,
                                 "head": 0.70}
FACE_TYPE_CENTERING: dict[str, str] = {"h": "legacy", "mf": "legacy", "f": "face",
                                       "wf": "face", "head": "head"}


def face_type_crop(face_type: str) -> tuple[str, float]:
    """(centering, coverage) of swapd's crop nearest DeepFaceLab's ``face_type``."""
    centering = FACE_TYPE_CENTERING[face_type]
    side = 1 + 2 * math.sqrt(2) * DFL_PADDING[face_type]
    return centering, round(min(1.0, side * (1 - CENTERING_PADDING[centering])), 4)


def split_archi(archi: str) -> tuple[str, str]:
    """("df" or "liae", its option letters) of an ``archi`` such as "liae-ud"."""
    kind, _, letters = archi.partition("-")
    return kind, letters


class SAEHDOptions(CommonOptions):
    """Options of the SAEHD model (DeepFaceLab's names; ``input_size`` is its resolution)."""

    input_size: int = Field(
        128, ge=64, le=640, description="resolution, a multiple of 16 (of 32 with 'd' or 't')")
    width: float = Field(1.0, description="not used (e_dims / d_dims size it)")
    dense_dim: int | None = Field(None, description="not used (see ae_dims)")
    learn_mask: bool = Field(
        True, description="SAEHD's mask decoder beside the face decoder (False drops it)")
    archi: str = Field(
        "liae-ud", description="'df' or 'liae', then optionally '-' and letters: 'u' more "
        "likeness, 'd' double resolution at the same cost, 't' thinner and deeper")
    ae_dims: int = Field(256, ge=32, le=1024, description="autoencoder (bottleneck) width")
    e_dims: int = Field(64, ge=16, le=256, description="encoder width, even")
    d_dims: int = Field(64, ge=16, le=256, description="decoder width, even")
    d_mask_dims: int = Field(22, ge=16, le=256, description="mask decoder width, even")
    face_type: Literal["h", "mf", "f", "wf", "head"] = Field(
        "f", description="DeepFaceLab's face type: half, mid-full, full, whole face or head; "
        "fixes the trainer's centering and coverage")

    _unused = field_validator("width", "dense_dim")(unused_option)

    @field_validator("archi")
    @classmethod
    def _archi(cls, value: str) -> str:
        kind, dash, letters = value.partition("-")
        if kind not in ARCHI_TYPES:
            raise ValueError(f"must start with 'df' or 'liae', got {value!r}")
        if dash and not letters:
            raise ValueError(f"needs option letters after '-', got {value!r}")
        for letter in letters:
            if letter not in ARCHI_LETTERS:
                raise ValueError(f"unknown letter {letter!r} in {value!r}; the letters are "
                                 "u, d and t")
        if len(set(letters)) != len(letters):
            raise ValueError(f"repeats a letter: {value!r}")
        return value

    @field_validator("e_dims", "d_dims", "d_mask_dims")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"must be even, got {value}")
        return value

    @model_validator(mode="after")
    def _resolution_fits_archi(self) -> SAEHDOptions:
        # 'd' halves the dense code's side, 't' adds a fifth downscale: either needs size/32.
        if set(split_archi(self.archi)[1]) & {"d", "t"} and self.input_size % 32:
            # Raised as the input_size key's error, so messages name the key to change.
            error = PydanticCustomError(
                "multiple_of_32", f"must be a multiple of 32 with archi {self.archi!r}")
            raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
                type=error, loc=("input_size",), input=self.input_size)])
        return self


class PixelNorm(nn.Module):
    """DFL's pixel_norm over the last axis: x / sqrt(mean(x^2) + 1e-6)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + 1e-6)


class DoubledOutput(nn.Module):
    """SAEHD's "d" output: four convs to ``out_channels`` (one 1x1, three 3x3), interleaved
    by depth-to-space into a face at twice the side, through a sigmoid."""

    def __init__(self, c_in: int, out_channels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(c_in, out_channels, 1)]
            + [nn.Conv2d(c_in, out_channels, 3, padding=1) for _ in range(3)])
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        # DFL's depth_to_space reads channels as (row, column, colour), torch's PixelShuffle
        # as (colour, row, column): stacking on a new axis after the colours gives DFL's
        # layout, conv k drawing sub-pixel (k // 2, k % 2) of every colour.
        stacked = torch.stack([conv(x) for conv in self.convs], dim=2).flatten(1, 2)
        return torch.sigmoid(self.shuffle(stacked))


def _upscales(c_in: int, widths: list[int], residual: bool) -> list[nn.Module]:
    # The channel order of DFL's depth_to_space differs from PixelShuffle's, but after a conv
    # that is only a permutation of the conv's filters: the same layer for a fresh model.
    layers: list[nn.Module] = []
    for c_out in widths:
        layers.append(upscale_block(c_in, c_out))
        if residual:
            layers.append(ResidualBlock(c_out))
        c_in = c_out
    return layers


def _decoder(c_in: int, options: SAEHDOptions, out_channels: int) -> nn.Module:
    letters = split_archi(options.archi)[1]
    steps = [8, 8, 4, 2] if "t" in letters else [8, 4, 2]
    d_ch, m_ch = options.d_dims, options.d_mask_dims
    head: nn.Module = (DoubledOutput(d_ch * 2, out_channels) if "d" in letters else
                       nn.Sequential(nn.Conv2d(d_ch * 2, out_channels, 1), nn.Sigmoid()))
    face = nn.Sequential(*_upscales(c_in, [d_ch * s for s in steps], True), head)
    if not options.learn_mask:
        return face
    mask_steps = [*steps, 1] if "d" in letters else steps  # the mask has no doubled output
    mask = nn.Sequential(*_upscales(c_in, [m_ch * s for s in mask_steps], False),
                         nn.Conv2d(m_ch * mask_steps[-1], 1, 1), nn.Sigmoid())
    return FaceAndMask(face, mask)


def _encoder(options: SAEHDOptions, c_in: int) -> nn.Sequential:
    letters = split_archi(options.archi)[1]
    e = options.e_dims
    if "t" in letters:
        layers = [conv_block(c_in, e), ResidualBlock(e), conv_block(e, e * 2),
                  conv_block(e * 2, e * 4), conv_block(e * 4, e * 8), conv_block(e * 8, e * 8),
                  ResidualBlock(e * 8)]
    else:
        layers = conv_stack([e, e * 2, e * 4, e * 8], c_in)
    layers.append(nn.Flatten())
    if "u" in letters:
        layers.append(PixelNorm())
    return nn.Sequential(*layers)


@register("saehd")
class SAEHD(SwapModel):
    """DeepFaceLab's SAEHD autoencoder, ``df`` or ``liae`` with its archi letters."""

    Options = SAEHDOptions
    options: SAEHDOptions

    def __init__(self, options: SAEHDOptions) -> None:
        super().__init__(options)
        kind, letters = split_archi(options.archi)
        size, ae = options.input_size, options.ae_dims
        self.encoder = _encoder(options, self.image_channels)
        flat = options.e_dims * 8 * (size // (32 if "t" in letters else 16)) ** 2
        seed = size // (32 if "d" in letters else 16)
        upscale = "t" not in letters
        if kind == "df":
            self.inter = intermediate(flat, ae, ae, seed, upscale)
            self.decoder_a = _decoder(ae, options, self.image_channels)
            self.decoder_b = _decoder(ae, options, self.image_channels)
        else:
            self.inter_ab = intermediate(flat, ae, ae * 2, seed, upscale)
            self.inter_b = intermediate(flat, ae, ae * 2, seed, upscale)
            self.decoder_shared = _decoder(ae * 4, options, self.image_channels)

    def crop(self) -> tuple[str, float]:
        """The face type's crop: see :data:`FACE_TYPE_CENTERING` and :func:`face_type_crop`."""
        return face_type_crop(self.options.face_type)

    @classmethod
    def draws_from_one_code(cls, options: CommonOptions) -> bool:
        return isinstance(options, SAEHDOptions) and split_archi(options.archi)[0] == "df"

    def encode(self, x: Tensor) -> Tensor:
        """DF's code: the inter block's maps (DeepFaceLab's true face looks at these)."""
        if not self.draws_from_one_code(self.options):
            raise NotImplementedError("SAEHD's liae draws each side from its own code")
        return self.inter(self.encoder(x))

    def forward(self, x: Tensor, side: Side) -> Tensor:
        if side not in ("a", "b"):
            raise ValueError(f"side must be 'a' or 'b', got {side!r}")
        if split_archi(self.options.archi)[0] == "df":
            return self.decode(self.encode(x), side)
        code = self.encoder(x)
        shared = self.inter_ab(code)
        particular = shared if side == "b" else self.inter_b(code)
        return self.decoder_shared(torch.cat([particular, shared], dim=1))

    def both_sides(self, input_a: Tensor, input_b: Tensor) -> tuple[Tensor, Tensor]:
        if split_archi(self.options.archi)[0] == "df":
            return super().both_sides(input_a, input_b)
        # LIAE: the encoder, inter_AB and the decoder once over both sides.
        code = self.encoder(torch.cat([input_a, input_b]))
        shared = self.inter_ab(code)
        code_a, _ = split_sides(code, len(input_a))
        _, shared_b = split_sides(shared, len(input_a))
        particular = torch.cat([self.inter_b(code_a), shared_b])
        faces = self.decoder_shared(torch.cat([particular, shared], dim=1))
        return split_sides(faces, len(input_a))

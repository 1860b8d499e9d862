"""faceswap's IAE ("intermediate auto-encoder") model.

One shared encoder (5x5 stride-2 convs 128-256-512-1024, flattened) and one shared decoder
(upscales 512-256-128-64, 5x5 sigmoid conv). Between them three intermediate blocks, each
dense ``encoder_dim`` (1024) then dense to (size/16)^2 x 512: ``inter_a`` and ``inter_b``
hold what is particular to each side, ``inter_both`` what they share. A face of side S is
drawn from ``concat(inter_S(code), inter_both(code))``; the swap to the other side swaps the
particular block only, so the shared block carries pose and expression across.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from swapd.trainer.models import CommonOptions, Side, SwapModel, register, split_sides
from swapd.trainer.models.original import (
    FaceswapShapeOptions,
    Reshape,
    channels,
    conv_stack,
    make_decoder,
)


class IAEOptions(FaceswapShapeOptions):
    """Options of the IAE model (dense_dim is faceswap's encoder_dim, default 1024)."""

    dense_dim: int | None = Field(None, ge=2, description="encoder_dim (None = 1024)")


def _intermediate(in_features: int, dense: int, out_channels: int, seed: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, dense),
        nn.Linear(dense, out_channels * seed * seed),
        Reshape(out_channels, seed, seed),
    )


@register("iae")
class IAE(SwapModel):
    """faceswap's IAE autoencoder."""

    Options = IAEOptions

    def __init__(self, options: IAEOptions) -> None:
        super().__init__(options)
        w = options.width
        convs = [channels(c, w) for c in (128, 256, 512, 1024)]
        self.encoder = nn.Sequential(*conv_stack(convs, self.image_channels, options.conv_padding),
                                     nn.Flatten())
        seed = options.input_size // 16
        flat = convs[-1] * seed * seed
        dense = options.dense_dim or 1024
        half = channels(512, w)  # faceswap: encoder_dim / 2
        self.inter_a = _intermediate(flat, dense, half, seed)
        self.inter_b = _intermediate(flat, dense, half, seed)
        self.inter_both = _intermediate(flat, dense, half, seed)
        self.decoder_shared = make_decoder(
            2 * half, [channels(c, w) for c in (512, 256, 128, 64)], self.image_channels,
            options.learn_mask, options.mask_decoder)

    @classmethod
    def draws_from_one_code(cls, options: CommonOptions) -> bool:
        return False  # each side draws from its own intermediate block's code

    def forward(self, x: Tensor, side: Side) -> Tensor:
        if side not in ("a", "b"):
            raise ValueError(f"side must be 'a' or 'b', got {side!r}")
        code = self.encoder(x)
        particular = self.inter_a(code) if side == "a" else self.inter_b(code)
        return self.decoder_shared(torch.cat([particular, self.inter_both(code)], dim=1))

    def both_sides(self, input_a: Tensor, input_b: Tensor) -> tuple[Tensor, Tensor]:
        # The encoder, the shared intermediate block and the decoder once over both sides.
        code = self.encoder(torch.cat([input_a, input_b]))
        code_a, code_b = split_sides(code, len(input_a))
        particular = torch.cat([self.inter_a(code_a), self.inter_b(code_b)])
        faces = self.decoder_shared(torch.cat([particular, self.inter_both(code)], dim=1))
        return split_sides(faces, len(input_a))

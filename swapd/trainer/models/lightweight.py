"""faceswap's Lightweight model: the Original cut down for ~2 GB cards.

Encoder: 5x5 stride-2 convs 128-256-512, dense 512, dense back to (size/16)^2 x 512, one
upscale to 256 channels. Each decoder: upscales 512-256-128 then a 5x5 sigmoid conv.
About 51 M parameters at the defaults (64 px, width 1.0).
"""

from __future__ import annotations

from swapd.trainer.models import SwapModel, register
from swapd.trainer.models.original import (
    FaceswapShapeOptions,
    channels,
    make_decoder,
    make_encoder,
)


class LightweightOptions(FaceswapShapeOptions):
    """Options of the Lightweight model."""


@register("lightweight")
class Lightweight(SwapModel):
    """faceswap's Lightweight autoencoder."""

    Options = LightweightOptions

    def __init__(self, options: LightweightOptions) -> None:
        super().__init__(options)
        w = options.width
        self.encoder = make_encoder(
            options.input_size,
            [channels(c, w) for c in (128, 256, 512)],
            options.dense_dim or 512,
            channels(512, w),
            channels(256, w),
            self.image_channels,
            options.conv_padding,
        )
        ups = [channels(c, w) for c in (512, 256, 128)]
        self.decoder_a = make_decoder(channels(256, w), ups, self.image_channels,
                                      options.learn_mask, options.mask_decoder)
        self.decoder_b = make_decoder(channels(256, w), ups, self.image_channels,
                                      options.learn_mask, options.mask_decoder)

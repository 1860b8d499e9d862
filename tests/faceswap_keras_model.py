"""faceswap's Original and Lightweight models as Keras 3 graphs, at a chosen width: the test
fixture `swapd model import` reads.

Re-derived, not vendored (faceswap is GPL-3.0; swapd carries none of its code), from faceswap
at acdcfa87: `plugins/train/model/original.py` and `lightweight.py` (the layer graph),
`lib/model/nn_blocks.py` (Conv2DBlock: 5x5 stride-2 "same" conv + LeakyReLU(0.1);
UpscaleBlock: 3x3 "same" conv to 4x filters + LeakyReLU(0.1) + PixelShuffler; Conv2DOutput:
5x5 "same" conv then a float32 sigmoid Activation; the layer names `_get_name` gives them)
and `lib/model/layers.py` (PixelShuffler, channels_last). Why re-derived: faceswap's plugin
code hard-codes full width (an Original is over 300 MB) and imports its whole training stack
(lib.config, lib.utils, the model base); the graph here is the same layers, the same names
and the same weight layout at any width. `tests/test_upstream_interop.py` builds the real
thing from a faceswap checkout when one is given (SWAPD_FACESWAP_SRC).

Keras runs on its torch backend (KERAS_BACKEND=torch, set before keras is imported).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
from keras import Input, layers, ops  # noqa: E402
from keras import Model as KModel  # noqa: E402


@keras.saving.register_keras_serializable(package="Custom", name="PixelShuffler")
class PixelShuffler(layers.Layer):
    """faceswap's `lib/model/layers.py` PixelShuffler, channels_last, size 2."""

    def __init__(self, size: int | tuple[int, int] = (2, 2), data_format: str | None = None,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.data_format = "channels_last" if data_format is None else data_format
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def call(self, inputs):  # type: ignore[no-untyped-def]
        _, height, width, channels = inputs.shape
        r_height, r_width = self.size
        o_channels = channels // (r_height * r_width)
        out = ops.reshape(inputs, (-1, height, width, r_height, r_width, o_channels))
        out = ops.transpose(out, (0, 1, 3, 2, 4, 5))
        return ops.reshape(out, (-1, height * r_height, width * r_width, o_channels))

    def compute_output_shape(self, input_shape):  # type: ignore[no-untyped-def]
        b, h, w, c = input_shape
        return (b, h * self.size[0], w * self.size[1], c // (self.size[0] * self.size[1]))

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size, "data_format": self.data_format}


class _Names:
    """nn_blocks `_get_name`: ``<name>_<n>``, n counting from 0 per name."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def __call__(self, name: str) -> str:
        self.seen[name] = self.seen.get(name, -1) + 1
        return f"{name}_{self.seen[name]}"


def _conv_block(names: _Names, x, filters: int, kernel: int = 5, strides: int = 2,
                name: str | None = None):  # type: ignore[no-untyped-def]
    name = name or names(f"conv_{filters}")
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same",
                      kernel_initializer="he_uniform", name=f"{name}_conv2d")(x)
    return layers.LeakyReLU(0.1, name=f"{name}_leakyrelu")(x)


def _upscale(names: _Names, x, filters: int):  # type: ignore[no-untyped-def]
    name = names(f"upscale_{filters}")
    x = _conv_block(names, x, filters * 4, 3, 1, name=f"{name}_conv2d")
    return PixelShuffler(name=f"{name}_pixelshuffler", size=2)(x)


def _output(names: _Names, x, filters: int, name: str):  # type: ignore[no-untyped-def]
    name = names(name)
    x = layers.Conv2D(filters, 5, padding="same", kernel_initializer="he_uniform",
                      name=f"{name}_conv2d")(x)
    return layers.Activation("sigmoid", dtype="float32", name=name)(x)


def build(model: str = "original", width: float = 1.0, dense: int | None = None,
          lowmem: bool = False, learn_mask: bool = False) -> KModel:
    """faceswap's ``model`` ("original" or "lightweight") at ``width`` times its filters
    (``dense``: the bottleneck, default faceswap's), its two inputs and its outputs
    [face_a, (mask_a), face_b, (mask_b)], as faceswap's ``build_model`` joins them."""
    keras.backend.clear_session()  # layer names as a fresh faceswap process gives them
    names = _Names()

    def w(n: int) -> int:
        return max(4, round(n * width))

    if model == "original":
        convs = [128, 256, 512] if lowmem else [128, 256, 512, 1024]
        dense_dim = dense or (512 if lowmem else 1024)
        seed, ups = 1024, [256, 128, 64]
        first_up = 512
    elif model == "lightweight":
        convs, dense_dim, seed, ups, first_up = [128, 256, 512], dense or 512, 512, \
            [512, 256, 128], 256
    else:
        raise ValueError(model)
    inp = Input(shape=(64, 64, 3))
    x = inp
    for c in convs:
        x = _conv_block(names, x, w(c))
    x = layers.Dense(dense_dim)(layers.Flatten()(x))
    x = layers.Dense(4 * 4 * w(seed))(x)
    x = layers.Reshape((4, 4, w(seed)))(x)
    x = _upscale(names, x, w(first_up))
    encoder = KModel(inp, x, name="encoder")

    def decoder(side: str) -> KModel:
        d_in = Input(shape=(8, 8, w(first_up)))
        y = d_in
        for c in ups:
            y = _upscale(names, y, w(c))
        outputs = [_output(names, y, 3, f"face_out_{side}")]
        if learn_mask:
            m = d_in
            for c in ups:
                m = _upscale(names, m, w(c))
            outputs.append(_output(names, m, 1, f"mask_out_{side}"))
        return KModel(d_in, outputs=outputs, name=f"decoder_{side}")

    input_a, input_b = Input(shape=(64, 64, 3), name="face_in_a"), \
        Input(shape=(64, 64, 3), name="face_in_b")
    out_a = decoder("a")(encoder(input_a))
    out_b = decoder("b")(encoder(input_b))
    outs = (out_a if isinstance(out_a, list) else [out_a]) + \
        (out_b if isinstance(out_b, list) else [out_b])
    return KModel([input_a, input_b], outs, name=model)


def save(model: KModel, folder: Path, iterations: int = 0) -> Path:
    """Save as faceswap's `_base/io.py` does: ``<folder>/<name>.keras`` by ``model.save``,
    and its ``<name>_state.json`` (`_base/state.py` `save`'s keys; the config's crop at
    faceswap's defaults, `plugins/train/train_config.py`: face centering, coverage 100)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{model.name}.keras"
    model.save(path)
    state = {"name": model.name, "sessions": {}, "lowest_avg_loss": {}, "iterations": iterations,
             "mixed_precision_layers": [], "lr_finder": -1.0,
             "config": {"centering": "face", "coverage": 100.0}}
    (folder / f"{model.name}_state.json").write_text(json.dumps(state))
    return path

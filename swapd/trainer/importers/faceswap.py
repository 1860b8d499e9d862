"""faceswap's Original and Lightweight models (a Keras 3 ``.keras`` file faceswap saved) as
swapd's ``original`` and ``lightweight``, layer for layer.

faceswap's graph (``plugins/train/model/original.py``, ``lightweight.py``; the blocks of
``lib/model/nn_blocks.py``) and swapd's are the same layers in the same order; what differs
is how each framework lays the numbers out, all of it undone here:

- Conv2D kernels are (kh, kw, in, out), torch's (out, in, kh, kw); Dense kernels are
  (in, out), torch's Linear (out, in).
- Tensors are NHWC: the Flatten before the first Dense orders its features (h, w, c), torch's
  (c, h, w); the Reshape after the second Dense reads (h, w, c) where swapd's reads (c, h, w).
  The Dense weights are permuted to match.
- faceswap's PixelShuffler (``lib/model/layers.py``, channels_last) takes output channel c of
  sub-pixel (i, j) from input channel (i * 2 + j) * C + c; torch's PixelShuffle from
  c * 4 + i * 2 + j. The conv before each shuffler has its output channels permuted.
- Keras' ``padding="same"`` on a stride-2 conv pads 1 before and 2 after: the swapd model is
  built with ``conv_padding = "same"`` (see ``swapd.trainer.models.original.SameConv2d``).

Anything else faceswap's settings can put in these models (reflect padding, another
activation, instance or batch norm) is refused, as is a layer of a shape swapd's model lacks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swapd.trainer.importers.common import Imported, ModelImportError
from swapd.trainer.importers.keras_file import KerasLayer, chain, read_keras

# Layers these two models hold; any other (ReflectionPadding2D, InstanceNormalization, ...)
# comes from a faceswap setting the swapd models do not have.
_KNOWN = {"Conv2D", "LeakyReLU", "Flatten", "Dense", "Reshape", "PixelShuffler", "Activation"}
_WEIGHTED = ("Conv2D", "Dense")


def _keras_file(source: Path) -> Path:
    if source.is_file():
        return source
    files = sorted(p for p in source.glob("*.keras") if p.is_file())
    named = [p for p in files if p.stem in ("original", "lightweight")]
    if len(named) == 1:
        return named[0]
    if len(files) != 1:
        raise ModelImportError(source, f"{len(files)} .keras files: give the one to import")
    return files[0]


def _iterations(keras: Path) -> tuple[int, dict[str, Any] | None]:
    """faceswap's ``<name>_state.json`` beside the model (``_base/state.py``): iterations
    done and its config; (0, None) without one."""
    state_file = keras.with_name(f"{keras.stem}_state.json")
    if not state_file.is_file():
        return 0, None
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        iterations = int(state.get("iterations", 0))
    except (ValueError, TypeError, AttributeError, OSError) as exc:
        raise ModelImportError(state_file, f"unreadable faceswap state file ({exc})") from None
    config = state.get("config")
    return max(0, iterations), config if isinstance(config, dict) else {}


def _check_layer(path: Path, owner: str, layer: KerasLayer) -> None:
    config = layer.config
    if layer.class_name not in _KNOWN:
        raise ModelImportError(path, f"{owner}: layer {layer.name!r} is a {layer.class_name}, "
                                     "which swapd's models do not have (a faceswap setting "
                                     "such as reflect padding or normalization?)")
    if layer.class_name == "Conv2D" and (
            config.get("padding") != "same" or config.get("activation") not in ("linear", None)
            or tuple(config.get("dilation_rate", (1, 1))) != (1, 1)
            or config.get("groups", 1) != 1 or not config.get("use_bias", True)):
        raise ModelImportError(path, f"{owner}: conv {layer.name!r} is not a plain 'same' "
                                     "conv with a bias")
    if layer.class_name == "LeakyReLU" and not math.isclose(
            float(config.get("negative_slope", config.get("alpha", 0.3))), 0.1):
        raise ModelImportError(path, f"{owner}: {layer.name!r} has another slope than 0.1")
    if layer.class_name == "Activation" and config.get("activation") != "sigmoid":
        raise ModelImportError(path, f"{owner}: output {layer.name!r} is not a sigmoid")
    if layer.class_name == "PixelShuffler" and (
            tuple(config.get("size", (2, 2))) != (2, 2)
            or config.get("data_format", "channels_last") != "channels_last"):
        raise ModelImportError(path, f"{owner}: {layer.name!r} is not a 2x channels_last "
                                     "pixel shuffler")


def _shuffle_order(channels: int) -> np.ndarray:
    """For each torch output channel c * 4 + s of a conv feeding a pixel shuffle, the Keras
    channel s * (channels // 4) + c holding the same sub-pixel."""
    out = channels // 4
    return np.array([s * out + c for c in range(out) for s in range(4)])


def _flatten_order(height: int, width: int, channels: int) -> np.ndarray:
    """For each index c * H * W + h * W + w of torch's (C, H, W) flatten, Keras' NHWC flatten
    index (h * W + w) * C + c of the same value."""
    c, h, w = np.meshgrid(np.arange(channels), np.arange(height), np.arange(width),
                          indexing="ij")
    return ((h * width + w) * channels + c).reshape(-1)


def _convert(path: Path, owner: str, layers: list[KerasLayer],
             weights: dict[tuple[str, ...], list[np.ndarray]], in_shape: tuple[int, int, int]
             ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The weighted layers of one chain as torch (weight, bias), in order, laid out for
    swapd's modules; ``in_shape``: the chain's input (H, W, C)."""
    converted = []
    shape = in_shape  # the tensor's (H, W, C) as it flows
    flat_from: tuple[int, int, int] | None = None
    for k, layer in enumerate(layers):
        _check_layer(path, owner, layer)
        arrays = weights.get((owner, layer.name))
        if layer.class_name in _WEIGHTED:
            if arrays is None or len(arrays) != 2:
                raise ModelImportError(path, f"{owner}: no kernel and bias for {layer.name!r}")
            kernel, bias = arrays
        if layer.class_name == "Conv2D":
            if (kernel.ndim != 4 or kernel.shape[2] != shape[2] or bias.shape != kernel.shape[3:]
                    or kernel.shape[3] != layer.config.get("filters")
                    or list(kernel.shape[:2]) != list(layer.config.get("kernel_size", ()))):
                raise ModelImportError(path, f"{owner}: conv {layer.name!r} kernel "
                                             f"{kernel.shape} does not fit its input {shape} "
                                             f"and config")
            weight = kernel.transpose(3, 2, 0, 1)
            following = layers[k + 2].class_name if k + 2 < len(layers) else ""
            if following == "PixelShuffler":
                order = _shuffle_order(weight.shape[0])
                weight, bias = weight[order], bias[order]
            stride = int(layer.config.get("strides", (1, 1))[0])
            shape = (shape[0] // stride, shape[1] // stride, kernel.shape[3])
            converted.append((weight, bias))
        elif layer.class_name == "Dense":
            if (kernel.ndim != 2 or kernel.shape[0] != math.prod(shape)
                    or bias.shape != kernel.shape[1:]
                    or kernel.shape[1] != layer.config.get("units")):
                raise ModelImportError(path, f"{owner}: dense {layer.name!r} kernel "
                                             f"{kernel.shape} does not fit its input {shape} "
                                             f"and config")
            weight = kernel.T
            if flat_from is not None:
                weight = weight[:, _flatten_order(*flat_from)]
                flat_from = None
            following = layers[k + 1] if k + 1 < len(layers) else None
            if following is not None and following.class_name == "Reshape":
                target = tuple(int(n) for n in following.config.get("target_shape", ()))
                if len(target) != 3 or math.prod(target) != kernel.shape[1]:
                    raise ModelImportError(path, f"{owner}: reshape {following.name!r} to "
                                                 f"{target} does not fit")
                order = _flatten_order(*target)
                weight, bias = weight[order], bias[order]
            shape = (1, 1, kernel.shape[1])
            converted.append((weight, bias))
        elif layer.class_name == "Flatten":
            flat_from, shape = shape, (1, 1, math.prod(shape))
        elif layer.class_name == "Reshape":
            shape = tuple(int(n) for n in layer.config["target_shape"])  # type: ignore[assignment]
        elif layer.class_name == "PixelShuffler":
            shape = (shape[0] * 2, shape[1] * 2, shape[2] // 4)
    return converted


def _swapd_weighted(module: torch.nn.Module, prefix: str) -> list[str]:
    """The dotted names of ``module``'s convs and linears, in forward order."""
    return [f"{prefix}{name}" for name, m in module.named_modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def read_faceswap(source: Path) -> Imported:
    from swapd.trainer.models import build_model

    path = _keras_file(source)
    keras = read_keras(path)
    top = keras.model
    assert top.layers is not None
    name = top.name
    if name not in ("original", "lightweight"):
        raise ModelImportError(path, f"a faceswap {name!r} model: swapd imports original and "
                                     "lightweight")
    encoder, dec_a, dec_b = (top.layers.get(n) for n in ("encoder", "decoder_a", "decoder_b"))
    if encoder is None or dec_a is None or dec_b is None or encoder.outputs is None:
        raise ModelImportError(path, "not faceswap's shape (an encoder, decoder_a, decoder_b)")
    enc_chain = chain(path, encoder, encoder.outputs[0])
    convs = [lay for lay in enc_chain if lay.class_name == "Conv2D"]
    size = _input_size(path, encoder)
    if size != 64:
        raise ModelImportError(path, f"input {size} px: faceswap's {name} takes 64")
    width = int(convs[0].config["filters"]) / 128
    denses = [lay for lay in enc_chain if lay.class_name == "Dense"]
    if len(denses) != 2:
        raise ModelImportError(path, f"encoder has {len(denses)} dense layers, not 2")
    learn_mask = len(dec_a.outputs or []) == 2
    options: dict[str, Any] = {"input_size": size, "width": width,
                               "dense_dim": int(denses[0].config["units"]),
                               "learn_mask": learn_mask, "conv_padding": "same"}
    if name == "original":
        options["lowmem"] = len(convs) == 4  # 3 strided convs + the upscale's
    model = build_model(name, options)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pairs = [(encoder, [enc_chain], model.encoder, "encoder.", (size, size, 3))]
    for side, dec in (("a", dec_a), ("b", dec_b)):
        chains = [chain(path, dec, out) for out in dec.outputs or []]
        swapd_dec = model.decoder(side)  # type: ignore[arg-type]
        seed = model.encoder(torch.zeros(1, 3, size, size)).shape
        pairs.append((dec, chains, swapd_dec, f"decoder_{side}.",
                      (seed[2], seed[3], seed[1])))
    for keras_model, chains, module, prefix, in_shape in pairs:
        keras_weights = [w for c in chains
                         for w in _convert(path, keras_model.name, c, keras.weights, in_shape)]
        names = _swapd_weighted(module, prefix)
        if len(names) != len(keras_weights):
            raise ModelImportError(path, f"{keras_model.name}: {len(keras_weights)} weighted "
                                         f"layers, swapd's {name} has {len(names)}")
        for key, (weight, bias) in zip(names, keras_weights, strict=True):
            for suffix, array in (("weight", weight), ("bias", bias)):
                target = state[f"{key}.{suffix}"]
                if tuple(array.shape) != tuple(target.shape):
                    raise ModelImportError(path, f"{keras_model.name}: {key}.{suffix} is "
                                                 f"{tuple(array.shape)}, swapd's {name} has "
                                                 f"{tuple(target.shape)} (width {width:g})")
                state[f"{key}.{suffix}"] = torch.from_numpy(np.ascontiguousarray(array))
    iterations, config = _iterations(path)
    return Imported(name, options, state, iterations,
                    {"tool": "faceswap", "file": path.name, "faceswap_config": config or {}},
                    {} if config is None else _crop(config))


def _crop(config: dict[str, Any]) -> dict[str, Any]:
    """faceswap's training crop from its state's config (``plugins/train/train_config.py``:
    ``centering`` legacy/face/head, ``coverage`` in percent) as swapd's trainer options. A
    state without them is from before they existed: faceswap then keeps legacy and 62.5
    (``_base/state.py`` ``_update_config``'s legacy defaults)."""
    crop: dict[str, Any] = {}
    centering = config.get("centering", "legacy")
    if centering in ("legacy", "face", "head"):
        crop["centering"] = centering
    coverage = config.get("coverage", 62.5)
    if isinstance(coverage, (int, float)) and 0 < coverage <= 100:
        crop["coverage"] = round(float(coverage) / 100, 4)
    return crop


def _input_size(path: Path, encoder: KerasLayer) -> int:
    assert encoder.layers is not None
    for layer in encoder.layers.values():
        if layer.class_name == "InputLayer":
            shape = layer.config.get("batch_shape") or layer.config.get("batch_input_shape")
            if isinstance(shape, list) and len(shape) == 4 and shape[1] == shape[2] and \
                    shape[3] == 3:
                return int(shape[1])
            raise ModelImportError(path, f"encoder input {shape}: not a square BGR face")
    raise ModelImportError(path, "encoder has no input layer")

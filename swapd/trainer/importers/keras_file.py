"""A Keras 3 ``.keras`` file read without Keras: its layer graph (``config.json``) and its
weights (``model.weights.h5``, HDF5 read by h5py), nothing of it run or unpickled.

A ``.keras`` file is a zip of ``metadata.json``, ``config.json`` (the model's serialized
config: nested ``Functional`` models, each a list of layers with their config and inbound
nodes) and ``model.weights.h5``, where each layer's variables sit in a group whose ``vars``
subgroup carries the layer's name as an attribute and its arrays as ``vars/0``, ``vars/1``
(kernel, bias). faceswap adds ``optimizer.pt`` (a torch pickle of its optimizer's state): it
is not read (its moments belong to Keras' variables; the imported model starts a fresh
optimizer, as a swapd model does whose optimizer state was not saved).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from swapd.trainer.importers.common import ModelImportError

MAX_CONFIG_BYTES = 64 * 1024 * 1024
MAX_WEIGHTS_BYTES = 8 * 1024 ** 3  # far above any faceswap model (an Original is ~330 MB)


@dataclass
class KerasLayer:
    name: str
    class_name: str
    config: dict[str, Any]
    inbound: list[str]  # the layers feeding it (first call)
    layers: dict[str, KerasLayer] | None = None  # a nested model's own layers
    outputs: list[str] | None = None  # a nested model's output layers


@dataclass
class KerasFile:
    path: Path
    model: KerasLayer  # the top model
    weights: dict[tuple[str, ...], list[np.ndarray]]  # (model, ..., layer) -> variables


def _layer(path: Path, raw: Any) -> KerasLayer:
    if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
        raise ModelImportError(path, "config.json: a layer is not a dict with a config")
    config = raw["config"]
    name = str(config.get("name", raw.get("name", "")))
    inbound: list[str] = []
    for node in raw.get("inbound_nodes") or []:
        for arg in node.get("args", []) if isinstance(node, dict) else []:
            for tensor in arg if isinstance(arg, list) else [arg]:
                history = (tensor.get("config", {}).get("keras_history")
                           if isinstance(tensor, dict) else None)
                if history:
                    inbound.append(str(history[0]))
        break  # a shared layer's first call is enough to place it
    layer = KerasLayer(name, str(raw.get("class_name")), config, inbound)
    if layer.class_name in ("Functional", "Model"):
        layer.layers = {}
        for sub in config.get("layers", []):
            child = _layer(path, sub)
            layer.layers[child.name] = child
        outputs = config.get("output_layers", [])
        if outputs and isinstance(outputs[0], str):  # a single output: [name, 0, 0]
            outputs = [outputs]
        layer.outputs = [str(o[0]) for o in outputs]
    return layer


def _weights(path: Path, data: bytes) -> dict[tuple[str, ...], list[np.ndarray]]:
    try:
        import h5py
    except ImportError:  # pragma: no cover - the interop extra
        raise ModelImportError(path, "reading faceswap models needs h5py (pip install "
                                     "'swapd[interop]')") from None
    found: dict[tuple[str, ...], list[np.ndarray]] = {}

    def walk(group: Any, names: tuple[str, ...]) -> None:
        for key in group:
            item = group[key]
            if not isinstance(item, h5py.Group):
                continue
            if key == "vars":
                name = item.attrs.get("name")
                name = name.decode() if isinstance(name, bytes) else str(name)
                arrays = [np.asarray(item[k], dtype=np.float32)
                          for k in sorted(item, key=lambda k: int(k) if k.isdigit() else -1)
                          if isinstance(item[k], h5py.Dataset)]
                if arrays:
                    found[names + (name,)] = arrays
                continue
            inner = item.get("vars")
            label = inner.attrs.get("name") if isinstance(inner, h5py.Group) else None
            if label is not None and key != "layers" and "layers" in item:  # a nested model
                walk(item, names + ((label.decode() if isinstance(label, bytes)
                                     else str(label)),))
            else:
                walk(item, names)

    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            walk(h5, ())
    except ModelImportError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError for a bad file
        raise ModelImportError(path, f"model.weights.h5 is truncated or corrupt ({exc})") \
            from None
    return found


def read_keras(path: Path) -> KerasFile:
    """The graph and weights of the ``.keras`` file at ``path``."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = {info.filename: info for info in zf.infolist()}
            for want in ("config.json", "model.weights.h5"):
                if want not in names:
                    raise ModelImportError(path, f"not a Keras 3 .keras file (no {want}; "
                                                 "faceswap saves .keras since its Keras 3 "
                                                 "port: open the model in faceswap once)")
            if names["config.json"].file_size > MAX_CONFIG_BYTES:
                raise ModelImportError(path, "config.json is implausibly large")
            if names["model.weights.h5"].file_size > MAX_WEIGHTS_BYTES:
                raise ModelImportError(path, "model.weights.h5 is implausibly large")
            config = json.loads(zf.read("config.json"))
            data = zf.read("model.weights.h5")
    except ModelImportError:
        raise
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise ModelImportError(path, f"truncated or not a .keras (zip) file ({exc})") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # json, a member's CRC
        raise ModelImportError(path, f"corrupt .keras file ({exc})") from None
    except OSError as exc:
        raise ModelImportError(path, f"cannot read ({exc})") from None
    model = _layer(path, config)
    if model.layers is None:
        raise ModelImportError(path, "config.json holds no functional model")
    return KerasFile(path, model, _weights(path, data))


def chain(path: Path, model: KerasLayer, output: str) -> list[KerasLayer]:
    """The layers from ``model``'s input to its layer ``output``, in order: the graph must be
    a plain chain (faceswap's Original and Lightweight are; a branching one is refused)."""
    assert model.layers is not None
    layers, order = model.layers, []
    name: str | None = output
    while name is not None:
        layer = layers.get(name)
        if layer is None:
            raise ModelImportError(path, f"{model.name}: layer {name!r} is missing")
        if layer.class_name == "InputLayer":
            break
        order.append(layer)
        if len(layer.inbound) != 1:
            raise ModelImportError(path, f"{model.name}: layer {name!r} has "
                                         f"{len(layer.inbound)} inputs (not a chain)")
        name = layer.inbound[0]
        if len(order) > 1000:
            raise ModelImportError(path, f"{model.name}: layer graph loops")
    return order[::-1]

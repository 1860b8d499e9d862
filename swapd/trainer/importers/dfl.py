"""DeepFaceLab's SAEHD model folder (its ``*_SAEHD_*.npy`` weight files and
``*_SAEHD_data.dat``) as swapd's ``saehd``, df or liae with the u, d, t letters.

DeepFaceLab (``core/leras/layers/Saveable.py``) saves each model as ``pickle.dumps({variable
name: array})``, and its options and iteration (``models/ModelBase.py``) as a pickled dict:
both are read by swapd's restricted unpickler, which builds plain data and numeric arrays and
refuses anything else before it is looked up.

The networks (``core/leras/archis/DeepFakeArchi.py``) are swapd's layer for layer. Conv
kernels are (kh, kw, in, out), Dense (in, out): transposed for torch. leras' flatten and
reshape_4D order features (c, h, w) in either data format, as torch does; its depth_to_space
reads channels (row, column, colour), torch's PixelShuffle (colour, row, column): the conv of
each Upscale has its output channels permuted (the "d" output's four convs are already
interleaved so by swapd's DoubledOutput). leras pads "SAME" symmetrically, as swapd's SAEHD
does. Sides: swapd's A is DeepFaceLab's dst, B its src.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swapd.faces.safe_pickle import safe_unpickle
from swapd.trainer.importers.common import Imported, ModelImportError

MAX_FILE_BYTES = 4 * 1024 ** 3
MAX_ARRAY_BYTES = 2 * 1024 ** 3
FACE_TYPES = ("h", "mf", "f", "wf", "head")


def _unpickle(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ModelImportError(path, "implausibly large for a DeepFaceLab model file")
        return safe_unpickle(path.read_bytes(), max_array_bytes=MAX_ARRAY_BYTES)
    except ModelImportError:
        raise
    except pickle.UnpicklingError as exc:
        raise ModelImportError(path, f"hostile or broken pickle: {exc}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError, RecursionError) as exc:
        raise ModelImportError(path, f"truncated or corrupt pickle ({type(exc).__name__}: "
                                     f"{exc})") from None
    except OSError as exc:
        raise ModelImportError(path, f"cannot read ({exc})") from None


def _weights(path: Path) -> dict[str, np.ndarray]:
    data = _unpickle(path)
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, np.ndarray) for k, v in data.items()):
        raise ModelImportError(path, "not a DeepFaceLab weight file (a dict of named arrays)")
    return {k: v.astype(np.float32) for k, v in data.items()}


def _prefix(source: Path) -> tuple[Path, str]:
    """(folder, model prefix such as "new_SAEHD") of a model folder or one of its files."""
    folder = source.parent if source.is_file() else source
    if source.is_file():
        # "<name>_<model class>_<file>": the class is the last word before the model's file
        # name; only SAEHD is imported, so look for it.
        head, found, _ = source.name.rpartition("_SAEHD_")
        candidates = {f"{head}_SAEHD"} if found else set()
        if not found:
            raise ModelImportError(source, "not a DeepFaceLab SAEHD model file "
                                           "(<name>_SAEHD_<part>.npy)")
    else:
        candidates = ({p.name[: -len("_data.dat")] for p in folder.glob("*_data.dat")}
                      | {p.name[: -len("_encoder.npy")] for p in folder.glob("*_encoder.npy")})
    if len(candidates) != 1:
        raise ModelImportError(source, f"{len(candidates)} DeepFaceLab models here "
                                       f"({', '.join(sorted(candidates)) or 'none'}): give "
                                       "one model's file")
    prefix = candidates.pop()
    if not prefix.endswith("_SAEHD"):
        raise ModelImportError(source, f"{prefix}: swapd imports DeepFaceLab's SAEHD models "
                                       "only")
    return folder, prefix


def _options(folder: Path, prefix: str, archi: str | None) -> tuple[dict[str, Any], int]:
    data_file = folder / f"{prefix}_data.dat"
    if not data_file.is_file():
        if archi is None:
            raise ModelImportError(data_file, "missing: give --archi (df, liae-ud, ...) "
                                              "to import the weights without it")
        return {"archi": archi}, 0
    data = _unpickle(data_file)
    options = data.get("options") if isinstance(data, dict) else None
    if not isinstance(options, dict):
        raise ModelImportError(data_file, "no options (not a DeepFaceLab model data file)")
    iteration = data.get("iter", 0)
    if archi is not None and options.get("archi") != archi:
        raise ModelImportError(data_file, f"archi {options.get('archi')!r}, not {archi!r}")
    return options, int(iteration) if isinstance(iteration, (int, np.integer)) else 0


def _shape(path: Path, weights: dict[str, np.ndarray], key: str) -> tuple[int, ...]:
    if key not in weights:
        raise ModelImportError(path, f"no {key!r}: not this archi's weights")
    return tuple(weights[key].shape)


def held_shape(array: np.ndarray) -> tuple[int, ...]:
    """An array's shape as DeepFaceLab stores it (torch's layout transposed back)."""
    return tuple(array.shape[::-1]) if array.ndim == 2 else (
        tuple(array.shape[2:]) + tuple(array.shape[1::-1]) if array.ndim == 4
        else tuple(array.shape))


def _conv(w: np.ndarray, shuffle: bool = False) -> np.ndarray:
    out = w.transpose(3, 2, 0, 1) if w.ndim == 4 else w
    if shuffle:  # depth_to_space's channel (s, c) is PixelShuffle's (c, s)
        n = out.shape[0] // 4
        out = out[[s * n + c for c in range(n) for s in range(4)]]
    return out


def _mapping(kind: str, opts: str) -> dict[str, list[tuple[str, str, bool]]]:
    """For each DFL model file: (DFL layer name, swapd module, feeds a depth_to_space)."""
    if "t" in opts:
        enc = [("down1/conv1", "encoder.0.0", False), ("res1/conv1", "encoder.1.conv1", False),
               ("res1/conv2", "encoder.1.conv2", False)]
        enc += [(f"down{i}/conv1", f"encoder.{i}.0", False) for i in (2, 3, 4, 5)]
        enc += [("res5/conv1", "encoder.6.conv1", False), ("res5/conv2", "encoder.6.conv2",
                                                             False)]
    else:
        enc = [(f"down1/downs_{i}/conv1", f"encoder.{i}.0", False) for i in range(4)]

    def inter(module: str) -> list[tuple[str, str, bool]]:
        rows = [("dense1", f"{module}.0", False), ("dense2", f"{module}.1", False)]
        return rows + ([] if "t" in opts else [("upscale1/conv1", f"{module}.3.0", True)])

    def decoder(module: str) -> list[tuple[str, str, bool]]:
        steps = 4 if "t" in opts else 3
        rows = []
        for i in range(steps):
            rows += [(f"upscale{i}/conv1", f"{module}.face.{2 * i}.0", True),
                     (f"res{i}/conv1", f"{module}.face.{2 * i + 1}.conv1", False),
                     (f"res{i}/conv2", f"{module}.face.{2 * i + 1}.conv2", False)]
        head = f"{module}.face.{2 * steps}"
        if "d" in opts:
            rows += [(name, f"{head}.convs.{k}", False) for k, name in
                     enumerate(("out_conv", "out_conv1", "out_conv2", "out_conv3"))]
        else:
            rows.append(("out_conv", f"{head}.0", False))
        mask_steps = steps + ("d" in opts)
        rows += [(f"upscalem{i}/conv1", f"{module}.mask.{i}.0", True)
                 for i in range(mask_steps)]
        return rows + [("out_convm", f"{module}.mask.{mask_steps}", False)]

    if kind == "df":
        return {"encoder": enc, "inter": inter("inter"),
                "decoder_dst": decoder("decoder_a"), "decoder_src": decoder("decoder_b")}
    return {"encoder": enc, "inter_AB": inter("inter_ab"), "inter_B": inter("inter_b"),
            "decoder": decoder("decoder_shared")}


def read_dfl(source: Path, archi: str | None = None) -> Imported:
    folder, prefix = _prefix(source)
    options, iteration = _options(folder, prefix, archi)
    archi_name = str(options.get("archi", ""))
    kind, _, opts = archi_name.partition("-")
    if kind not in ("df", "liae") or any(c not in "udt" for c in opts):
        raise ModelImportError(folder / f"{prefix}_data.dat",
                               f"archi {archi_name!r}: swapd implements df and liae with the "
                               "letters u, d, t (not c)")
    mapping = _mapping(kind, opts)
    files = {name: folder / f"{prefix}_{name}.npy" for name in mapping}
    for path in files.values():
        if not path.is_file():
            raise ModelImportError(path, f"missing: a SAEHD {kind} model has "
                                         f"{', '.join(p.name for p in files.values())}")
    weights = {name: _weights(path) for name, path in files.items()}
    # The sizes, from the weights themselves (the options file may be absent).
    enc_file, enc = files["encoder"], weights["encoder"]
    first = "down1/conv1" if "t" in opts else "down1/downs_0/conv1"
    e_dims = _shape(enc_file, enc, f"{first}/weight:0")[3]
    inter_name = "inter" if kind == "df" else "inter_AB"
    flat, ae_dims = _shape(files[inter_name], weights[inter_name], "dense1/weight:0")
    dec_name = "decoder_src" if kind == "df" else "decoder"
    dec = weights[dec_name]
    d_dims = _shape(files[dec_name], dec, "upscale0/conv1/weight:0")[3] // 32
    d_mask = _shape(files[dec_name], dec, "upscalem0/conv1/weight:0")[3] // 32
    cells = flat // (8 * e_dims) if e_dims else 0
    side = int(round(cells ** 0.5))
    resolution = side * (32 if "t" in opts else 16)
    if side * side * 8 * e_dims != flat:
        raise ModelImportError(files[inter_name], f"dense1 takes {flat} features, which no "
                                                  f"resolution gives with e_dims {e_dims}")
    found = {"resolution": resolution, "ae_dims": ae_dims, "e_dims": e_dims,
             "d_dims": d_dims, "d_mask_dims": d_mask}
    for key, value in found.items():  # the options file, where there is one, decides
        # (A df's decoders are checked one by one below: the odd one is named there.)
        if (isinstance(options.get(key), int) and options[key] != value
                and not (key in ("d_dims", "d_mask_dims") and kind == "df")):
            raise ModelImportError(folder / f"{prefix}_data.dat",
                                   f"{key} is {options[key]} but the weights have {value}")
        found[key] = options.get(key, value)
    resolution, ae_dims, e_dims, d_dims, d_mask = found.values()
    face_type = options.get("face_type", "f")
    if face_type not in FACE_TYPES:
        raise ModelImportError(folder / f"{prefix}_data.dat", f"face type {face_type!r}: "
                                                              f"swapd has {FACE_TYPES}")
    swapd_options = {"input_size": resolution, "archi": archi_name, "ae_dims": ae_dims,
                     "e_dims": e_dims, "d_dims": d_dims, "d_mask_dims": d_mask,
                     "face_type": face_type, "learn_mask": True}
    from swapd.trainer.models import build_model

    try:
        expected = build_model("saehd", swapd_options).state_dict()
    except ValueError as exc:  # pydantic's: sizes swapd's SAEHD does not take
        raise ModelImportError(folder / f"{prefix}_data.dat",
                               f"options swapd's saehd does not take ({exc})".replace(
                                   "\n", " ")) from None
    state: dict[str, torch.Tensor] = {}
    for name, rows in mapping.items():
        path, held = files[name], dict(weights[name])
        for dfl_name, module, shuffle in rows:
            for part in ("weight", "bias"):
                key = f"{dfl_name}/{part}:0"
                if key not in held:
                    raise ModelImportError(path, f"no {key!r}: not a SAEHD {archi_name} "
                                                 "weight file")
                array = held.pop(key)
                if part == "weight":
                    array = array.T if dfl_name.startswith("dense") else _conv(array, shuffle)
                elif shuffle:
                    n = array.shape[0] // 4
                    array = array[[s * n + c for c in range(n) for s in range(4)]]
                want = tuple(expected[f"{module}.{part}"].shape)
                if tuple(array.shape) != want:
                    raise ModelImportError(path, f"{key} has the shape {held_shape(array)}, "
                                                 f"not SAEHD {archi_name}'s with these "
                                                 f"options")
                state[f"{module}.{part}"] = torch.from_numpy(np.ascontiguousarray(array))
        if held:
            raise ModelImportError(path, f"weights SAEHD {archi_name} lacks: "
                                         f"{', '.join(sorted(held)[:3])}")
    return Imported("saehd", swapd_options, state, iteration,
                    {"tool": "deepfacelab", "model": prefix,
                     "options": {k: v for k, v in options.items()
                                 if isinstance(v, (str, int, float, bool))}})

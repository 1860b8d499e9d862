"""DeepFaceLab's SAEHD forward pass in numpy, and its model folder as DeepFaceLab writes it:
the reference `swapd model import --from dfl` is checked against (DFL runs on TensorFlow 1,
which is not installed here).

Re-derived line by line, not vendored (DeepFaceLab is GPL-3.0), from DeepFaceLab at 46fc2397:

- `core/leras/archis/DeepFakeArchi.py`: Downscale (5x5 stride-2 conv, leaky 0.1),
  DownscaleBlock (ch * min(2**i, 8)), Upscale (3x3 conv to 4x, leaky 0.1, depth_to_space 2),
  ResidualBlock (conv, leaky 0.2, conv, leaky(0.2) of input + x), Encoder ('t': down1, res1,
  down2-5, res5; else down1 = DownscaleBlock of 4; flatten; 'u': pixel_norm), Inter (dense1,
  dense2, reshape_4D to lowest_dense_res, upscale1 unless 't'), Decoder (upscale0-2 with
  res0-2, 't' adds upscale3/res3; out_conv 1x1, 'd': out_conv1-3 3x3 and depth_to_space of
  the four; the mask: upscalem0-2, 't' upscalem3, 'd' one more, out_convm 1x1; sigmoids).
- `core/leras/layers/Conv2D.py` ("SAME" = symmetric padding of (k - 1) // 2, then a VALID
  conv; weight (k, k, in, out), bias), `layers/Dense.py` (weight (in, out), bias).
- `core/leras/ops/__init__.py` for NHWC: flatten (transpose to NCHW first), reshape_4D
  (reshape to (c, h, w), transpose to NHWC), depth_to_space (reshape (h, w, s, s, oc),
  transpose (0, 1, 3, 2, 4, 5)), pixel_norm (x * rsqrt(mean(x^2) + 1e-6)).
- `models/Model_SAEHD/Model.py`: which models a df and a liae hold, their names and files,
  the codes each side decodes (liae: src concat(AB, AB), dst concat(B, AB), dst>src
  concat(AB of dst, AB of dst)).
- `core/leras/models/ModelBase.py` `_build_sub` and `layers/Saveable.py` `save_weights`: a
  variable's name is its attribute path ("down1/downs_0/conv1/weight:0", lists as name_i)
  and a model file is pickle.dumps({name: array}, 4); `models/ModelBase.py`: files are
  `<name>_SAEHD_<file>`, `<name>_SAEHD_data.dat` pickles {'iter', 'options', ...}.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

Weights = dict[str, np.ndarray]


# --- leras ops, NHWC -------------------------------------------------------------------------


def conv2d(x: np.ndarray, w: Weights, name: str, strides: int = 1) -> np.ndarray:
    weight, bias = w[f"{name}/weight:0"], w[f"{name}/bias:0"]
    k = weight.shape[0]
    pad = ((k - 1) * 1 + 1) // 2  # Conv2D's "SAME"
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    # tf.nn.conv2d(..., "VALID"): out[y, x] = sum over (i, j) of in[y*s + i, x*s + j] @ w[i, j]
    oh, ow = (x.shape[1] - k) // strides + 1, (x.shape[2] - k) // strides + 1
    out = np.zeros((x.shape[0], oh, ow, weight.shape[3]), x.dtype)
    for i in range(k):
        for j in range(k):
            out += x[:, i:i + (oh - 1) * strides + 1:strides,
                     j:j + (ow - 1) * strides + 1:strides] @ weight[i, j]
    return out + bias


def dense(x: np.ndarray, w: Weights, name: str) -> np.ndarray:
    return x @ w[f"{name}/weight:0"] + w[f"{name}/bias:0"]


def leaky(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x >= 0, x, x * alpha)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def flatten(x: np.ndarray) -> np.ndarray:
    x = x.transpose(0, 3, 1, 2)
    return x.reshape(-1, int(np.prod(x.shape[1:])))


def reshape_4d(x: np.ndarray, w: int, h: int, c: int) -> np.ndarray:
    return x.reshape(-1, c, h, w).transpose(0, 2, 3, 1)


def depth_to_space(x: np.ndarray, size: int) -> np.ndarray:
    b, h, w, c = x.shape
    oc = c // (size * size)
    x = x.reshape(-1, h, w, size, size, oc).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h * size, w * size, oc)


def pixel_norm(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + 1e-06)


# --- DeepFakeArchi ---------------------------------------------------------------------------


def downscale(x: np.ndarray, w: Weights, name: str) -> np.ndarray:
    return leaky(conv2d(x, w, f"{name}/conv1", strides=2), 0.1)


def upscale(x: np.ndarray, w: Weights, name: str) -> np.ndarray:
    return depth_to_space(leaky(conv2d(x, w, f"{name}/conv1"), 0.1), 2)


def residual(inp: np.ndarray, w: Weights, name: str) -> np.ndarray:
    x = leaky(conv2d(inp, w, f"{name}/conv1"), 0.2)
    x = conv2d(x, w, f"{name}/conv2")
    return leaky(inp + x, 0.2)


def encoder(x: np.ndarray, w: Weights, opts: str) -> np.ndarray:
    if "t" in opts:
        x = downscale(x, w, "down1")
        x = residual(x, w, "res1")
        for i in (2, 3, 4, 5):
            x = downscale(x, w, f"down{i}")
        x = residual(x, w, "res5")
    else:
        for i in range(4):
            x = downscale(x, w, f"down1/downs_{i}")
    x = flatten(x)
    return pixel_norm(x) if "u" in opts else x


def inter(x: np.ndarray, w: Weights, opts: str, resolution: int, ae_out_ch: int
          ) -> np.ndarray:
    lowest = resolution // (32 if "d" in opts else 16)
    x = dense(dense(x, w, "dense1"), w, "dense2")
    x = reshape_4d(x, lowest, lowest, ae_out_ch)
    return x if "t" in opts else upscale(x, w, "upscale1")


def decoder(z: np.ndarray, w: Weights, opts: str) -> tuple[np.ndarray, np.ndarray]:
    x = z
    for i in range(4 if "t" in opts else 3):
        x = residual(upscale(x, w, f"upscale{i}"), w, f"res{i}")
    if "d" in opts:
        x = sigmoid(depth_to_space(np.concatenate(
            [conv2d(x, w, n) for n in ("out_conv", "out_conv1", "out_conv2", "out_conv3")],
            -1), 2))
    else:
        x = sigmoid(conv2d(x, w, "out_conv"))
    m = z
    for i in range(3 + ("t" in opts) + ("d" in opts)):
        m = upscale(m, w, f"upscalem{i}")
    return x, sigmoid(conv2d(m, w, "out_convm"))


# --- the weights each model holds, as leras names them --------------------------------------


def _conv(d: dict[str, tuple[int, ...]], name: str, k: int, c_in: int, c_out: int) -> None:
    d[f"{name}/weight:0"], d[f"{name}/bias:0"] = (k, k, c_in, c_out), (c_out,)


def shapes(archi: str, resolution: int, ae: int, e: int, dd: int, dm: int
           ) -> dict[str, dict[str, tuple[int, ...]]]:
    """Each model file's {variable name: shape} for ``archi`` ("df-ud", "liae", ...)."""
    kind, _, opts = archi.partition("-")
    enc: dict[str, tuple[int, ...]] = {}
    if "t" in opts:
        _conv(enc, "down1/conv1", 5, 3, e)
        _conv(enc, "res1/conv1", 3, e, e)
        _conv(enc, "res1/conv2", 3, e, e)
        for i, (a, b) in zip((2, 3, 4, 5), ((e, 2 * e), (2 * e, 4 * e), (4 * e, 8 * e),
                                            (8 * e, 8 * e)), strict=True):
            _conv(enc, f"down{i}/conv1", 5, a, b)
        _conv(enc, "res5/conv1", 3, 8 * e, 8 * e)
        _conv(enc, "res5/conv2", 3, 8 * e, 8 * e)
        flat = 8 * e * (resolution // 32) ** 2
    else:
        last = 3
        for i in range(4):
            _conv(enc, f"down1/downs_{i}/conv1", 5, last, e * min(2 ** i, 8))
            last = e * min(2 ** i, 8)
        flat = 8 * e * (resolution // 16) ** 2
    lowest = resolution // (32 if "d" in opts else 16)
    ae_out = ae if kind == "df" else ae * 2

    def inter_shapes() -> dict[str, tuple[int, ...]]:
        d = {"dense1/weight:0": (flat, ae), "dense1/bias:0": (ae,),
             "dense2/weight:0": (ae, lowest * lowest * ae_out),
             "dense2/bias:0": (lowest * lowest * ae_out,)}
        if "t" not in opts:
            _conv(d, "upscale1/conv1", 3, ae_out, ae_out * 4)
        return d

    def decoder_shapes(c_in: int) -> dict[str, tuple[int, ...]]:
        d: dict[str, tuple[int, ...]] = {}
        steps = [8, 8, 4, 2] if "t" in opts else [8, 4, 2]
        last = c_in
        for i, s in enumerate(steps):
            _conv(d, f"upscale{i}/conv1", 3, last, dd * s * 4)
            _conv(d, f"res{i}/conv1", 3, dd * s, dd * s)
            _conv(d, f"res{i}/conv2", 3, dd * s, dd * s)
            last = dd * s
        _conv(d, "out_conv", 1, dd * 2, 3)
        if "d" in opts:
            for n in (1, 2, 3):
                _conv(d, f"out_conv{n}", 3, dd * 2, 3)
        last = c_in
        for i, s in enumerate([*steps, 1] if "d" in opts else steps):
            _conv(d, f"upscalem{i}/conv1", 3, last, dm * s * 4)
            last = dm * s
        _conv(d, "out_convm", 1, last, 1)
        return d

    if kind == "df":
        return {"encoder": enc, "inter": inter_shapes(),
                "decoder_src": decoder_shapes(ae), "decoder_dst": decoder_shapes(ae)}
    return {"encoder": enc, "inter_AB": inter_shapes(), "inter_B": inter_shapes(),
            "decoder": decoder_shapes(ae * 4)}


def random_weights(layout: dict[str, dict[str, tuple[int, ...]]], seed: int = 0
                   ) -> dict[str, Weights]:
    """He-like random weights and non-zero biases (a zero bias hides a bias laid out wrong)."""
    rng = np.random.default_rng(seed)
    out: dict[str, Weights] = {}
    for model, names in layout.items():
        out[model] = {}
        for name, shape in names.items():
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            scale = np.sqrt(2 / fan_in) if len(shape) > 1 else 0.05
            out[model][name] = (rng.standard_normal(shape) * scale).astype(np.float32)
    return out


def predict(weights: dict[str, Weights], archi: str, resolution: int, ae: int, x: np.ndarray
            ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """SAEHD's src>src, dst>dst and dst>src (face, mask) of the NHWC BGR batch ``x``, in
    float64, as Model_SAEHD's graph computes them."""
    kind, _, opts = archi.partition("-")
    x = x.astype(np.float64)
    w = {m: {k: v.astype(np.float64) for k, v in d.items()} for m, d in weights.items()}
    code = encoder(x, w["encoder"], opts)
    if kind == "df":
        z = inter(code, w["inter"], opts, resolution, ae)
        return {"src_src": decoder(z, w["decoder_src"], opts),
                "dst_dst": decoder(z, w["decoder_dst"], opts),
                "src_dst": decoder(z, w["decoder_src"], opts)}
    ab = inter(code, w["inter_AB"], opts, resolution, ae * 2)
    b = inter(code, w["inter_B"], opts, resolution, ae * 2)
    return {"src_src": decoder(np.concatenate([ab, ab], -1), w["decoder"], opts),
            "dst_dst": decoder(np.concatenate([b, ab], -1), w["decoder"], opts),
            "src_dst": decoder(np.concatenate([ab, ab], -1), w["decoder"], opts)}


def save_folder(folder: Path, weights: dict[str, Weights], options: dict[str, Any],
                iteration: int, name: str = "new") -> Path:
    """The model folder as DeepFaceLab's ModelBase.save writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"{name}_SAEHD"
    for model, d in weights.items():
        (folder / f"{prefix}_{model}.npy").write_bytes(pickle.dumps(d, 4))
    # sample_for_preview: ModelBase keeps generate_next_samples()'s batches, a list per
    # generator of arrays (numpy scalars in the losses too): the unpickler builds them all.
    size = int(options.get("resolution", 64))
    preview = [[np.zeros((2, size, size, 3), np.float32), np.ones((2, size, size, 1),
                                                                  np.float32)]] * 2
    data = {"iter": iteration, "options": options,
            "loss_history": [[np.float32(0.5), np.float32(0.4)]],
            "sample_for_preview": preview, "choosed_gpu_indexes": None}
    (folder / f"{prefix}_data.dat").write_bytes(pickle.dumps(data))
    return folder


def saehd_options(archi: str, resolution: int, ae: int, e: int, dd: int, dm: int,
                  face_type: str = "wf") -> dict[str, Any]:
    """The keys Model_SAEHD's on_initialize_options stores that the import reads, and some
    it does not."""
    return {"resolution": resolution, "face_type": face_type, "models_opt_on_gpu": True,
            "archi": archi, "ae_dims": ae, "e_dims": e, "d_dims": dd, "d_mask_dims": dm,
            "masked_training": True, "eyes_mouth_prio": False, "uniform_yaw": False,
            "adabelief": True, "lr_dropout": "n", "random_warp": True, "gan_power": 0.0,
            "pretrain": False, "batch_size": 8}

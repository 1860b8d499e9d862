"""DeepFaceLab's own SAEHD code builds, saves and runs a model; the fixture `swapd model
import --from dfl` is checked against in tests/test_upstream_interop.py.

DeepFaceLab runs on TensorFlow 1, which is not installed here. This script puts a small
eager stand-in for the TensorFlow calls SAEHD makes in its place (``tf.variable_scope``,
``get_variable``, ``pad``, ``nn.conv2d`` VALID, ``reshape``, ``transpose``, ``concat``,
``matmul``, ``nn.leaky_relu``, ``nn.sigmoid``, ``square``, ``reduce_mean``, ``rsqrt``: each
a line of numpy with TensorFlow's documented NHWC meaning) and then runs DeepFaceLab's own
Python: leras' ``nn.initialize`` (NHWC, as DeepFaceLab runs on a CPU), its layers
(``Conv2D``, ``Dense``), ops (``flatten``, ``reshape_4D``, ``depth_to_space``,
``pixel_norm``), ``ModelBase`` (which names every variable) and ``DeepFakeArchi``; the models
are made with the arguments and names ``models/Model_SAEHD/Model.py`` gives them, saved by
leras' own ``Saveable.save_weights`` (the ``.npy`` files), and run on a batch as
Model_SAEHD's graph runs them (src>src, dst>dst, dst>src). Anything the stand-in lacks is a
MagicMock, which fails loudly in the numbers rather than passing.

Usage (a DeepFaceLab checkout first on the path, cwd inside it):
``upstream_dfl_model_check.py ARCHI OUT_DIR``.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import sys
import types
from pathlib import Path
from unittest import mock

import numpy as np

RNG = np.random.default_rng(11)


class _Shape(tuple):
    def as_list(self) -> list[int]:
        return list(self)


class Tensor(np.ndarray):
    """An eager tensor: an array whose shape answers ``as_list()`` as TF's does."""

    @property
    def shape(self) -> _Shape:  # type: ignore[override]
        return _Shape(super().shape)


def _t(x: object) -> Tensor:
    return np.asarray(x, dtype=np.float64).view(Tensor)


def _fake_tensorflow() -> types.ModuleType:
    tf = types.ModuleType("tensorflow")
    scopes: list[str] = []
    tf.version = types.SimpleNamespace(VERSION="1.15.0")  # type: ignore[attr-defined]
    tf.float32, tf.float16 = np.float32, np.float16  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def variable_scope(name: str):  # type: ignore[no-untyped-def]
        scopes.append(name)
        try:
            yield
        finally:
            scopes.pop()

    def get_variable(name: str, shape: tuple[int, ...], dtype: object = None,
                     initializer: object = None, trainable: bool = True) -> Tensor:
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 0
        scale = np.sqrt(2 / fan_in) if fan_in else 0.05  # biases too: zeros would hide them
        # float32, as DeepFaceLab's variables (nn.floatx) and so its saved files are
        var = (RNG.standard_normal(shape) * scale).astype(np.float32).view(Tensor)
        var.name = "/".join([*scopes, name]) + ":0"  # type: ignore[attr-defined]
        return var

    def conv2d(x, w, strides, padding, dilations=None, data_format="NHWC"):  # type: ignore[no-untyped-def]
        assert padding == "VALID" and data_format == "NHWC" and list(dilations) == [1, 1, 1, 1]
        s, k = strides[1], w.shape[0]
        oh, ow = (x.shape[1] - k) // s + 1, (x.shape[2] - k) // s + 1
        out = np.zeros((x.shape[0], oh, ow, w.shape[3]))
        for i in range(k):
            for j in range(k):
                out += np.asarray(x)[:, i:i + (oh - 1) * s + 1:s, j:j + (ow - 1) * s + 1:s] \
                    @ np.asarray(w)[i, j]
        return _t(out)

    def reduce_mean(x, axis=None, keepdims=False):  # type: ignore[no-untyped-def]
        return _t(np.mean(np.asarray(x), axis=axis, keepdims=keepdims))

    tf.variable_scope = variable_scope  # type: ignore[attr-defined]
    tf.get_variable = get_variable  # type: ignore[attr-defined]
    tf.device = lambda name: contextlib.nullcontext()  # type: ignore[attr-defined]
    tf.pad = lambda x, p, mode="CONSTANT": _t(np.pad(np.asarray(x), p))  # type: ignore[attr-defined]
    tf.reshape = lambda x, shape: _t(np.reshape(np.asarray(x), shape))  # type: ignore[attr-defined]
    tf.transpose = lambda x, perm: _t(np.transpose(np.asarray(x), perm))  # type: ignore[attr-defined]
    tf.concat = lambda xs, axis: _t(np.concatenate([np.asarray(x) for x in xs], axis))  # type: ignore[attr-defined]
    tf.add = lambda a, b: _t(np.asarray(a) + np.asarray(b))  # type: ignore[attr-defined]
    tf.matmul = lambda a, b: _t(np.asarray(a) @ np.asarray(b))  # type: ignore[attr-defined]
    tf.square = lambda x: _t(np.square(np.asarray(x)))  # type: ignore[attr-defined]
    tf.rsqrt = lambda x: _t(1 / np.sqrt(np.asarray(x)))  # type: ignore[attr-defined]
    tf.reduce_mean = reduce_mean  # type: ignore[attr-defined]
    tf.cast = lambda x, dtype: x  # type: ignore[attr-defined]
    tf.constant = lambda value, dtype=None: _t(value)  # type: ignore[attr-defined]
    tf.nn = types.SimpleNamespace(  # type: ignore[attr-defined]
        conv2d=conv2d,
        leaky_relu=lambda x, alpha=0.2: _t(np.where(np.asarray(x) >= 0, x, np.asarray(x) * alpha)),
        sigmoid=lambda x: _t(1 / (1 + np.exp(-np.asarray(x)))))
    tf.initializers = mock.MagicMock()  # type: ignore[attr-defined]
    tf.ConfigProto = lambda **kwargs: mock.MagicMock()  # type: ignore[attr-defined]
    # A session hands back plain numpy arrays (what save_weights pickles).
    tf.Session = lambda config=None: types.SimpleNamespace(  # type: ignore[attr-defined]
        run=lambda fetches, feed_dict=None: np.array(fetches))
    return tf


def run(archi: str, out: Path) -> dict[str, object]:
    sys.modules["tensorflow"] = _fake_tensorflow()
    for name in ("tensorflow.python", "tensorflow.python.ops", "tensorflow.python.framework",
                 "colorama"):  # (colorama: the console colours of its prompts)
        sys.modules[name] = mock.MagicMock()
    from core.leras import nn

    nn.initialize(device_config=nn.DeviceConfig.CPU(), data_format="NHWC")

    def batch_set_value(tuples):  # type: ignore[no-untyped-def]  # leras' assign, eagerly
        for var, value in tuples:
            var[...] = np.asarray(value).reshape(var.shape)

    nn.batch_set_value = batch_set_value
    resolution, ae_dims, e_dims, d_dims, d_mask_dims = 64, 32, 16, 16, 16
    archi_type, _, archi_opts = archi.partition("-")
    # models/Model_SAEHD/Model.py, on_initialize: the same classes, arguments and names.
    model_archi = nn.DeepFakeArchi(resolution, use_fp16=False, opts=archi_opts or None)
    encoder = model_archi.Encoder(in_ch=3, e_ch=e_dims, name="encoder")
    encoder_out_ch = encoder.get_out_ch() * encoder.get_out_res(resolution) ** 2
    if archi_type == "df":
        inter = model_archi.Inter(in_ch=encoder_out_ch, ae_ch=ae_dims, ae_out_ch=ae_dims,
                                  name="inter")
        inter_out_ch = inter.get_out_ch()
        decoder_src = model_archi.Decoder(in_ch=inter_out_ch, d_ch=d_dims,
                                          d_mask_ch=d_mask_dims, name="decoder_src")
        decoder_dst = model_archi.Decoder(in_ch=inter_out_ch, d_ch=d_dims,
                                          d_mask_ch=d_mask_dims, name="decoder_dst")
        files = [[encoder, "encoder.npy"], [inter, "inter.npy"],
                 [decoder_src, "decoder_src.npy"], [decoder_dst, "decoder_dst.npy"]]
    else:
        inter_ab = model_archi.Inter(in_ch=encoder_out_ch, ae_ch=ae_dims,
                                     ae_out_ch=ae_dims * 2, name="inter_AB")
        inter_b = model_archi.Inter(in_ch=encoder_out_ch, ae_ch=ae_dims, ae_out_ch=ae_dims * 2,
                                    name="inter_B")
        inters_out_ch = inter_ab.get_out_ch() * 2
        decoder = model_archi.Decoder(in_ch=inters_out_ch, d_ch=d_dims, d_mask_ch=d_mask_dims,
                                      name="decoder")
        files = [[encoder, "encoder.npy"], [inter_ab, "inter_AB.npy"],
                 [inter_b, "inter_B.npy"], [decoder, "decoder.npy"]]
    out.mkdir(parents=True, exist_ok=True)
    for model, filename in files:  # Model_SAEHD.onSave, ModelBase.get_strpath_storage_for_file
        model.save_weights(str(out / f"new_SAEHD_{filename}"))
    options = {"resolution": resolution, "face_type": "wf", "archi": archi,
               "ae_dims": ae_dims, "e_dims": e_dims, "d_dims": d_dims,
               "d_mask_dims": d_mask_dims}
    # models/ModelBase.py save: model_data pickled as it is.
    (out / "new_SAEHD_data.dat").write_bytes(pickle.dumps({
        "iter": 321, "options": options, "loss_history": [],
        "sample_for_preview": None, "choosed_gpu_indexes": None}))
    x = _t(np.random.default_rng(3).random((2, resolution, resolution, 3)))
    # Model_SAEHD's graph (on_initialize, "if 'df' in archi_type" / "elif 'liae'").
    if archi_type == "df":
        src_code = inter(encoder(x))
        dst_code = src_code
        src_src = decoder_src(src_code)
        dst_dst = decoder_dst(dst_code)
        src_dst = decoder_src(dst_code)
    else:
        code = encoder(x)
        src_ab = inter_ab(code)
        src_code = nn.tf.concat([src_ab, src_ab], nn.conv2d_ch_axis)
        dst_b, dst_ab = inter_b(code), inter_ab(code)
        dst_code = nn.tf.concat([dst_b, dst_ab], nn.conv2d_ch_axis)
        src_dst_code = nn.tf.concat([dst_ab, dst_ab], nn.conv2d_ch_axis)
        src_src, dst_dst, src_dst = decoder(src_code), decoder(dst_code), decoder(src_dst_code)
    np.save(out / "input.npy", np.asarray(x, dtype=np.float32))
    for name, (face, mask) in (("src_src", src_src), ("dst_dst", dst_dst),
                               ("src_dst", src_dst)):
        np.save(out / f"{name}.npy", np.concatenate([np.asarray(face), np.asarray(mask)], -1))
    names = sorted(pickle.loads((out / "new_SAEHD_encoder.npy").read_bytes()))
    return {"files": sorted(p.name for p in out.glob("new_SAEHD_*")), "encoder_names": names,
            "std": float(np.asarray(src_dst[0]).std())}


if __name__ == "__main__":
    print("RESULT " + json.dumps(run(sys.argv[1], Path(sys.argv[2]))))

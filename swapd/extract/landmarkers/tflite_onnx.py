"""A small TFLite -> ONNX converter for the face mesh model (run once, at setup).

MediaPipe's ``face_landmark.tflite`` (the 468-point face mesh) is a plain convolutional network:
CONV_2D, DEPTHWISE_CONV_2D, PRELU, ADD, MAX_POOL_2D, PAD, and DEQUANTIZE of its float16
weights. This converts exactly that set of operators into an ONNX graph (NCHW inside, NHWC
input as the TFLite model takes it), so the model runs on onnxruntime, which swapd already
uses, instead of a second runtime. Why our own: ``tflite2onnx`` 0.4.1, the registry's
converter, fails on this model (its layout propagation raises IndexError); and these seven
operators are a page of code. Any other operator is refused by name, so a changed model
fails at setup, not silently at run time. The model file is parsed with the ``tflite``
package (the TFLite flatbuffer schema, pure Python, Apache-2.0).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# TFLite's fused activation codes (schema ActivationFunctionType) -> ONNX op (None: none).
_ACTIVATIONS = {0: None, 1: "Relu", 3: "Clip6"}
_PADDING_SAME = 0  # schema Padding: SAME = 0, VALID = 1


class ConversionError(RuntimeError):
    """The TFLite model holds something this converter does not handle."""


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding (the larger half after), as explicit (begin, end)."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class _Graph:
    def __init__(self, model: object) -> None:
        import tflite  # setup-time only: the converter runs once, from `swapd faces setup`

        self.tflite = tflite
        self.model = model
        self.graph = model.Subgraphs(0)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.consts: dict[int, np.ndarray] = {}  # tensor index -> value (weights, folded)
        names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        self.op_names = names
        self.counter = 0

    def tensor(self, index: int) -> object:
        return self.graph.Tensors(index)

    def name(self, index: int) -> str:
        return f"t{index}"

    def shape(self, index: int) -> list[int]:
        return [int(v) for v in self.tensor(index).ShapeAsNumpy()]

    def const(self, index: int) -> np.ndarray | None:
        if index in self.consts:
            return self.consts[index]
        tensor = self.tensor(index)
        data = self.model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data.size == 0:
            return None
        dtype = {0: np.float32, 1: np.float16, 2: np.int32}.get(tensor.Type())
        if dtype is None:
            raise ConversionError(f"tensor {tensor.Name()!r}: unsupported type {tensor.Type()}")
        value = np.frombuffer(data.tobytes(), dtype=dtype).reshape(self.shape(index))
        self.consts[index] = value
        return value

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}_{self.counter}"

    def initializer(self, value: np.ndarray, stem: str) -> str:
        name = self.fresh(stem)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def activation(self, code: int, source: str, out: str) -> None:
        if code not in _ACTIVATIONS:
            raise ConversionError(f"unsupported fused activation {code}")
        kind = _ACTIVATIONS[code]
        if kind is None:
            self.nodes.append(helper.make_node("Identity", [source], [out]))
        elif kind == "Relu":
            self.nodes.append(helper.make_node("Relu", [source], [out]))
        else:
            lo = self.initializer(np.array(0.0, np.float32), "zero")
            hi = self.initializer(np.array(6.0, np.float32), "six")
            self.nodes.append(helper.make_node("Clip", [source, lo, hi], [out]))

    def convert_op(self, op: object) -> None:
        code_entry = self.model.OperatorCodes(op.OpcodeIndex())
        code = max(code_entry.BuiltinCode(), code_entry.DeprecatedBuiltinCode())
        kind = self.op_names.get(code, str(code))
        ins = [int(i) for i in op.InputsAsNumpy()]
        out = int(op.OutputsAsNumpy()[0])
        handler = getattr(self, f"op_{kind.lower()}", None)
        if handler is None:
            raise ConversionError(f"operator {kind} is not supported by swapd's converter")
        handler(op, ins, out)

    def _options(self, op: object, cls: type) -> object:
        table = op.BuiltinOptions()
        options = cls()
        options.Init(table.Bytes, table.Pos)
        return options

    def op_dequantize(self, op: object, ins: list[int], out: int) -> None:
        value = self.const(ins[0])
        if value is None:
            raise ConversionError("DEQUANTIZE of a non-constant tensor")
        self.consts[out] = value.astype(np.float32)  # folded: float16 weights -> float32

    def _conv_pads(self, x: int, kernel: tuple[int, int], stride: tuple[int, int],
                   padding: int, dilation: tuple[int, int]) -> list[int]:
        _, h, w, _ = self.shape(x)
        if padding != _PADDING_SAME:
            return [0, 0, 0, 0]
        top, bottom = _same_pads(h, kernel[0], stride[0], dilation[0])
        left, right = _same_pads(w, kernel[1], stride[1], dilation[1])
        return [top, left, bottom, right]

    def op_conv_2d(self, op: object, ins: list[int], out: int, depthwise: bool = False) -> None:
        tfl = self.tflite
        options = self._options(op, tfl.DepthwiseConv2DOptions if depthwise
                                else tfl.Conv2DOptions)
        weights, bias = self.const(ins[1]), self.const(ins[2]) if len(ins) > 2 else None
        if weights is None:
            raise ConversionError("convolution with non-constant weights")
        channels = self.shape(ins[0])[3]
        if depthwise:  # (1, KH, KW, C*M) -> (C*M, 1, KH, KW), one group per input channel
            kernel = weights.transpose(3, 0, 1, 2)
            group = channels
        else:  # (O, KH, KW, I) -> (O, I, KH, KW)
            kernel = weights.transpose(0, 3, 1, 2)
            group = 1
        stride = (options.StrideH(), options.StrideW())
        dilation = (options.DilationHFactor(), options.DilationWFactor())
        pads = self._conv_pads(ins[0], kernel.shape[2:], stride, options.Padding(), dilation)
        inputs = [self.name(ins[0]), self.initializer(np.ascontiguousarray(kernel), "w")]
        if bias is not None:
            inputs.append(self.initializer(bias.astype(np.float32), "b"))
        conv = self.fresh("conv")
        self.nodes.append(helper.make_node("Conv", inputs, [conv], strides=list(stride),
                                           dilations=list(dilation), pads=pads, group=group,
                                           kernel_shape=list(kernel.shape[2:])))
        self.activation(options.FusedActivationFunction(), conv, self.name(out))

    def op_depthwise_conv_2d(self, op: object, ins: list[int], out: int) -> None:
        self.op_conv_2d(op, ins, out, depthwise=True)

    def op_prelu(self, op: object, ins: list[int], out: int) -> None:
        alpha = self.const(ins[1])
        if alpha is None:
            raise ConversionError("PRELU with a non-constant slope")
        # NHWC slope (..., C) -> NCHW (C, 1, 1), broadcast over height and width.
        slope = alpha.reshape(-1)[:, None, None].astype(np.float32)
        self.nodes.append(helper.make_node("PRelu", [self.name(ins[0]),
                                                     self.initializer(slope, "alpha")],
                                           [self.name(out)]))

    def op_add(self, op: object, ins: list[int], out: int) -> None:
        options = self._options(op, self.tflite.AddOptions)
        if any(self.const(i) is not None for i in ins):
            raise ConversionError("ADD of a constant")
        added = self.fresh("add")
        self.nodes.append(helper.make_node("Add", [self.name(i) for i in ins], [added]))
        self.activation(options.FusedActivationFunction(), added, self.name(out))

    def op_max_pool_2d(self, op: object, ins: list[int], out: int) -> None:
        options = self._options(op, self.tflite.Pool2DOptions)
        kernel = (options.FilterHeight(), options.FilterWidth())
        stride = (options.StrideH(), options.StrideW())
        pads = self._conv_pads(ins[0], kernel, stride, options.Padding(), (1, 1))
        if any(pads):
            raise ConversionError("MAX_POOL_2D with SAME padding that pads")
        pooled = self.fresh("pool")
        self.nodes.append(helper.make_node("MaxPool", [self.name(ins[0])], [pooled],
                                           kernel_shape=list(kernel), strides=list(stride)))
        self.activation(options.FusedActivationFunction(), pooled, self.name(out))

    def op_pad(self, op: object, ins: list[int], out: int) -> None:
        paddings = self.const(ins[1])
        if paddings is None:
            raise ConversionError("PAD with non-constant paddings")
        nchw = paddings[[0, 3, 1, 2]]  # NHWC rows -> NCHW
        pads = np.concatenate([nchw[:, 0], nchw[:, 1]]).astype(np.int64)
        self.nodes.append(helper.make_node("Pad", [self.name(ins[0]),
                                                   self.initializer(pads, "pads")],
                                           [self.name(out)], mode="constant"))


def convert(tflite_path: Path, onnx_path: Path) -> None:
    """Convert ``tflite_path`` (a single-subgraph float model of the operators above) to ONNX.

    The ONNX model keeps the TFLite input (name, NHWC shape) and outputs (names, shapes)."""
    import tflite

    data = Path(tflite_path).read_bytes()
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise ConversionError(f"{tflite_path}: expected one subgraph, "
                              f"found {model.SubgraphsLength()}")
    g = _Graph(model)
    graph = g.graph
    (x,) = [int(i) for i in graph.InputsAsNumpy()]
    in_name = graph.Tensors(x).Name().decode()
    g.nodes.append(helper.make_node("Transpose", [in_name], [g.name(x)], perm=[0, 3, 1, 2]))
    for i in range(graph.OperatorsLength()):
        g.convert_op(graph.Operators(i))
    outputs = []
    for index in (int(i) for i in graph.OutputsAsNumpy()):
        out_name = graph.Tensors(index).Name().decode()
        shape = g.shape(index)
        g.nodes.append(helper.make_node("Transpose", [g.name(index)], [out_name],
                                        perm=[0, 2, 3, 1]))
        outputs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, shape))
    inputs = [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, g.shape(x))]
    onnx_graph = helper.make_graph(g.nodes, Path(tflite_path).stem, inputs, outputs,
                                   g.initializers)
    model_proto = helper.make_model(onnx_graph, producer_name="swapd",
                                    opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model_proto)
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model_proto, str(onnx_path))

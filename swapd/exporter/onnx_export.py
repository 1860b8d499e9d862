"""Export a trained swap path (encoder + one decoder) to ONNX, checked against torch.

The ONNX model takes input ``face``: float32 NCHW BGR in [0, 1] at ``input_size`` (any
batch size) and gives output ``swapped`` in the same layout, and, when the model learned a
mask, output ``mask`` (N, 1, H, W) in [0, 1]. A grayscale model's export still takes and gives
BGR: the graph converts to gray on the way in and repeats the channel on the way out, so the
merger needs to know nothing about it. Its metadata_props say how the input crop is made
(``input_size``, ``coverage``; see :func:`swapd.trainer.data.crop_for_model`), which model
made it, and that swapd did.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from swapd import __version__
from swapd.errors import FileProblem
from swapd.fsutil import atomic_path

INPUT_NAME = "face"
OUTPUT_NAME = "swapped"
MASK_OUTPUT_NAME = "mask"
# ITU-R BT.601 luma in BGR order: what cv2.cvtColor(..., COLOR_BGR2GRAY) computes.
GRAY_WEIGHTS = (0.114, 0.587, 0.299)
DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-3
PRODUCER = "swapd"


class ExportError(FileProblem, RuntimeError):
    """An export that failed, did not match torch, or a file that is not a swapd export."""


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely onnxruntime matched torch."""

    path: Path
    max_abs_diff: float
    input_size: int
    opset: int
    provider: str = "CPUExecutionProvider"


class SwapPath(nn.Module):
    """A swap model's path to one side (``model(face, side)``) as a single-input module for
    export: only the layers that path runs end up in the graph. BGR in, BGR out (a grayscale
    model's channel converted both ways), plus the learned mask as a second output."""

    def __init__(self, model: nn.Module, side: str) -> None:
        super().__init__()
        self.model = model
        self.side = side
        self.grayscale = getattr(model, "image_channels", 3) == 1
        self.learns_mask = bool(getattr(model, "learns_mask", False))
        self.register_buffer("gray_weights", torch.tensor(GRAY_WEIGHTS).view(1, 3, 1, 1),
                             persistent=False)

    @property
    def output_names(self) -> list[str]:
        return [OUTPUT_NAME, MASK_OUTPUT_NAME] if self.learns_mask else [OUTPUT_NAME]

    def forward(self, face: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if self.grayscale:
            face = (face * self.gray_weights).sum(dim=1, keepdim=True)
        out = self.model(face, self.side)
        channels = 1 if self.grayscale else 3
        swapped = out[:, :channels]
        if self.grayscale:
            swapped = swapped.expand(-1, 3, -1, -1)
        if self.learns_mask:
            return swapped, out[:, channels:channels + 1]
        return swapped


def onnx_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, CPU always."""
    available = ort.get_available_providers()
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in wanted if p in available] or ["CPUExecutionProvider"]


def _onnx_bytes(module: SwapPath, input_size: int, opset: int) -> bytes:
    buf = io.BytesIO()
    names = module.output_names
    dummy = torch.zeros(1, 3, input_size, input_size)
    # The legacy TorchScript exporter is chosen on purpose (the dynamo one needs onnxscript);
    # its deprecation notices are noise for swapd's users.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (dummy,),
            buf,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *names]},
            opset_version=opset,
            dynamo=False,
        )
    return buf.getvalue()


def _with_metadata(data: bytes, metadata: dict[str, str]) -> bytes:
    proto = onnx.load_from_string(data)
    proto.producer_name = PRODUCER
    proto.producer_version = __version__
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _parity(session: ort.InferenceSession, module: SwapPath, faces: np.ndarray) -> float:
    """The largest difference between onnxruntime and torch over every output."""
    with torch.no_grad():
        expected = module(torch.from_numpy(faces))
    if isinstance(expected, Tensor):
        expected = (expected,)
    got = session.run(module.output_names, {INPUT_NAME: faces})
    worst = 0.0
    for name, ours, theirs in zip(module.output_names, got, expected, strict=True):
        if ours.shape != tuple(theirs.shape):
            raise ValueError(f"onnxruntime output {name!r} shape {ours.shape} != torch "
                             f"{tuple(theirs.shape)}")
        worst = max(worst, float(np.max(np.abs(ours - theirs.numpy()))))
    return worst


def export_swap_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    input_size: int,
    side_to: str = "b",
    *,
    faces: np.ndarray | None = None,
    coverage: float = 0.875,
    model_name: str = "unknown",
    metadata: dict[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportReport:
    """Export ``model``'s path to ``side_to`` (``model(x, side_to)``) to ``path``, verified.

    ``faces``: float32 NCHW BGR [0, 1] crops used for the parity check (pass real face
    crops, 3-channel even for a grayscale model; without them a seeded random batch is used).
    The file only appears at ``path`` once onnxruntime's output matches torch's within
    ``tolerance``; otherwise :class:`ExportError` is raised and any earlier file at ``path`` is
    left untouched.
    """
    target = Path(path)
    if side_to not in ("a", "b"):
        raise ValueError(f"side_to must be 'a' or 'b', got {side_to!r}")
    # A CPU float32 copy in eval mode, so exporting never disturbs a model mid-training.
    module = (
        SwapPath(copy.deepcopy(model), side_to)
        .to("cpu", torch.float32, memory_format=torch.contiguous_format)
        .eval()
    )
    if faces is None:
        faces = np.random.default_rng(0).random((4, 3, input_size, input_size), np.float32)
    faces = np.ascontiguousarray(faces, dtype=np.float32)
    if faces.ndim != 4 or faces.shape[1:] != (3, input_size, input_size):
        raise ValueError(f"faces must be Nx3x{input_size}x{input_size}, got {faces.shape}")
    info = {
        "producer": PRODUCER,
        "swapd_version": __version__,
        "model": model_name,
        "side_to": side_to,
        "input_size": str(input_size),
        "coverage": repr(float(coverage)),
        "layout": "NCHW",
        "channels": "BGR",
        "grayscale": "1" if module.grayscale else "0",
        "learned_mask": "1" if module.learns_mask else "0",
        "range": "0..1",
        "synthetic_media": "outputs of this model are synthetic media",
    }
    info.update({k: str(v) for k, v in (metadata or {}).items()})
    try:
        data = _with_metadata(_onnx_bytes(module, input_size, opset), info)
    except Exception as exc:
        raise ExportError(target, f"ONNX export failed: {exc}") from exc
    providers = onnx_providers()
    try:
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
            session = ort.InferenceSession(str(tmp), providers=providers)
            diff = _parity(session, module, faces)
            del session  # release the file before it is renamed (Windows)
            if not diff <= tolerance:  # also catches NaN
                raise ExportError(
                    target, f"onnxruntime differs from torch by {diff:.3g} (limit {tolerance})"
                )
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(target, f"parity check failed: {exc}") from exc
    return ExportReport(target, diff, input_size, opset, providers[0])


def read_export_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The swapd metadata of an exported model (``input_size`` int, ``coverage`` float, ...)."""
    p = Path(path)
    if not p.is_file():
        raise ExportError(p, "no such file")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise ExportError(p, f"not a readable ONNX model ({exc})") from exc
    info: dict[str, Any] = {prop.key: prop.value for prop in proto.metadata_props}
    if info.get("producer") != PRODUCER:
        raise ExportError(p, "not a swapd export (no swapd metadata)")
    try:
        info["input_size"] = int(info["input_size"])
        info["coverage"] = float(info["coverage"])
    except (KeyError, ValueError) as exc:
        raise ExportError(p, f"bad swapd metadata ({exc})") from exc
    return info

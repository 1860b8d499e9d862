"""The exported swap model, run by onnxruntime (its session comes from :mod:`swapd.runtime`).

The exported model (see ``swapd.exporter.onnx_export``) takes input ``face``, NCHW float32 BGR in
[0, 1] with a dynamic batch, and returns ``swapped`` in the same form; its metadata_props carry
``input_size``, ``coverage``, ``centering`` and ``model``; a model that learned its mask also
returns ``mask`` (N, 1, H, W) in [0, 1].  A ``.dfm``-style export (DeepFaceLive:
NHWC input ``in_face:0``, outputs ``out_celeb_face:0`` and its learned mask
``out_celeb_face_mask:0``) runs too: the layout is read from the graph.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from swapd.errors import FileProblem
from swapd.runtime import create_session

log = logging.getLogger(__name__)

DEFAULT_COVERAGE = 0.875  # faceswap's default, used only when a model does not say
_OUTPUT_NAMES = ("swapped", "out_celeb_face:0")
_MASK_OUTPUT = "mask"
# The learned masks of a .dfm (DeepFaceLive): the swapped face's ("out_celeb_face_mask:0")
# and the destination's reconstruction's ("out_face_mask:0", "dst_mask" in a swapd export).
_DFM_MASK_OUTPUT = "out_celeb_face_mask:0"
_DFM_DST_MASK_OUTPUT = "out_face_mask:0"
_DST_MASK_OUTPUT = "dst_mask"
_CENTERINGS = ("legacy", "face", "head")


class ModelLoadError(FileProblem, ValueError):
    """An ONNX swap model is missing, unreadable or not shaped like a swap model."""


@dataclass(frozen=True)
class ModelInfo:
    """What the merger needs to know about an exported model."""

    input_size: int
    coverage: float
    centering: str
    model: str
    channels_last: bool
    grayscale: bool = False  # the model draws gray faces (swapd's export says so)


def _model_info(path: Path, session: ort.InferenceSession) -> ModelInfo:
    # The ONNX metadata_props, as onnxruntime read them (no second parse of a large file; the
    # exporter's read_export_info would also pull in torch and rejects non-swapd models).
    meta = dict(session.get_modelmeta().custom_metadata_map)
    inp = session.get_inputs()[0]
    shape = list(inp.shape)
    if len(shape) != 4:
        raise ModelLoadError(path, f"input {inp.name!r} has shape {shape}, expected 4 dimensions")
    channels_last = shape[3] == 3 and shape[1] != 3
    spatial = shape[1] if channels_last else shape[2]
    try:
        size = int(meta.get("input_size") or spatial)
        coverage = float(meta["coverage"]) if "coverage" in meta else DEFAULT_COVERAGE
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(path, f"bad input_size/coverage metadata ({exc})") from exc
    if "coverage" not in meta:
        log.warning("%s has no coverage metadata; assuming %.3f", path, DEFAULT_COVERAGE)
    centering = meta.get("centering", "face")
    if centering not in _CENTERINGS:
        raise ModelLoadError(path, f"unknown centering {centering!r} (expected {_CENTERINGS})")
    if not 0.0 < coverage <= 1.0 or size < 8:
        raise ModelLoadError(path, f"implausible input_size {size} / coverage {coverage}")
    return ModelInfo(size, coverage, centering, meta.get("model", "unknown"), channels_last,
                     meta.get("grayscale") == "1")


class SwapSession:
    """An exported swap model, ready to turn crops of face A into face B."""

    def __init__(self, onnx_path: str | os.PathLike[str], device: str = "auto",
                 threads: int | None = None) -> None:
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise ModelLoadError(self.path, "model file does not exist")
        try:
            self.session = create_session(self.path, device, threads)
        except Exception as exc:
            raise ModelLoadError(self.path, f"onnxruntime cannot load it ({exc})") from exc
        self.info = _model_info(self.path, self.session)
        self.input_name = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = next((n for n in _OUTPUT_NAMES if n in outputs), outputs[0])
        self.mask_name = _MASK_OUTPUT if _MASK_OUTPUT in outputs else None
        self.dst_mask_name = _DST_MASK_OUTPUT if _DST_MASK_OUTPUT in outputs else None
        meta = self.session.get_modelmeta().custom_metadata_map
        if _DFM_MASK_OUTPUT in outputs and meta.get("learned_mask") != "0":
            # A .dfm's masks are learned, except in swapd's export of a model that learned
            # none (there they are the mean face's outline, which the merger draws itself).
            self.mask_name = _DFM_MASK_OUTPUT
            if _DFM_DST_MASK_OUTPUT in outputs:
                self.dst_mask_name = _DFM_DST_MASK_OUTPUT
        batch = self.session.get_inputs()[0].shape[0]
        self.max_batch = batch if isinstance(batch, int) and batch > 0 else None

    @property
    def providers(self) -> list[str]:
        """The providers onnxruntime actually uses, best first."""
        return self.session.get_providers()

    @property
    def input_size(self) -> int:
        return self.info.input_size

    @property
    def coverage(self) -> float:
        return self.info.coverage

    @property
    def centering(self) -> str:
        return self.info.centering

    @property
    def learned_mask(self) -> bool:
        """Whether the model gives its own mask with each face."""
        return self.mask_name is not None

    def swap(self, crops: np.ndarray) -> np.ndarray:
        """Swap a batch of model crops: NHWC uint8 BGR in, NHWC uint8 BGR out."""
        return self.swap_with_masks(crops)[0]

    def swap_with_masks(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`swap`, and the model's learned masks (float32 NHW in [0, 1]) when it has
        them, else None."""
        faces, masks, _ = self.swap_all(crops)
        return faces, masks

    def swap_all(self, crops: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """:meth:`swap`, the swapped faces' learned masks and the destination's learned masks
        (float32 NHW in [0, 1]; None for a mask the model does not give)."""
        crops = np.asarray(crops)
        size = self.info.input_size
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
            raise ValueError(f"crops must be uint8 (N, {size}, {size}, 3), "
                             f"got {crops.dtype} {crops.shape}")
        mask_names = [n for n in (self.mask_name, self.dst_mask_name) if n is not None]
        empty = {n: np.zeros((len(crops), size, size), np.float32) for n in mask_names}
        if len(crops) == 0:
            return crops.copy(), empty.get(self.mask_name or ""), empty.get(
                self.dst_mask_name or "")
        x = crops.astype(np.float32) * np.float32(1.0 / 255.0)
        if not self.info.channels_last:
            x = x.transpose(0, 3, 1, 2)
        step = self.max_batch or len(x)
        names = [self.output_name, *mask_names]
        runs = [self.session.run(names, {self.input_name: np.ascontiguousarray(x[i:i + step])})
                for i in range(0, len(x), step)]
        y = np.concatenate([run[0] for run in runs])
        if not self.info.channels_last:
            y = y.transpose(0, 2, 3, 1)
        if y.shape != crops.shape:
            raise ValueError(f"{self.path}: model returned shape {y.shape} for input {crops.shape}")
        masks = {name: np.clip(np.concatenate([run[k + 1] for run in runs]).reshape(
            len(crops), size, size), 0.0, 1.0) for k, name in enumerate(mask_names)}
        faces = np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return faces, masks.get(self.mask_name or ""), masks.get(self.dst_mask_name or "")

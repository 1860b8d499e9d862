"""Export a swap model as DeepFaceLab's ``.dfm``: the ONNX form DeepFaceLive and facefusion's
deep swapper load.

The graph takes ``in_face:0``, float32 NHWC BGR in [0, 1] at the model's resolution (any batch),
and gives, in this order, ``out_face_mask:0`` (N, H, W, 1: the mask of the face as it is, the
A side's learned mask), ``out_celeb_face:0`` (N, H, W, 3: the swapped face) and
``out_celeb_face_mask:0`` (N, H, W, 1: the swapped face's learned mask); DeepFaceLab's own
export (SAEHD's ``export_dfm``) names and orders them so, and both loaders read them by
position. A model that learned no mask gives the mean face's outline as both masks. swapd has
no morphing model (DeepFaceLab's AMP), so there is no ``morph_value:0`` input.

The crop the model expects is swapd's (``coverage`` of an aligned face at ``centering``);
:func:`crop_match` says which DeepFaceLive aligner settings cut the same square and how far
DeepFaceLab's face types and facefusion's fixed ``dfl_whole_face`` crop are from it. All of it
goes into the file's metadata_props and the export's report.
"""

from __future__ import annotations

import copy
import io
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

from swapd.exporter.onnx_export import (
    DEFAULT_OPSET,
    PARITY_TOLERANCE,
    ExportError,
    SwapPath,
    _with_metadata,
    onnx_providers,
)
from swapd.faces.alignment import Centering, model_crop_matrix, transform_points, umeyama
from swapd.faces.dfl_align import DFL_WRITE_TYPES, MEAN_FACE_33, dfl_matrix
from swapd.faces.landmarks import MEAN_FACE_2D_68
from swapd.fsutil import atomic_path
from swapd.trainer.models.original import FaceAndMask

DFM_INPUT = "in_face:0"
DFM_OUTPUTS = ("out_face_mask:0", "out_celeb_face:0", "out_celeb_face_mask:0")
# DeepFaceLive's FaceAligner (apps/DeepFaceLive/backend/FaceAligner.py, fc7b787) moves every
# crop 0.08 of the face box up before its own y offset, and shows coverage in steps of 0.1 and
# the offsets in steps of 0.01.
_DFLIVE_Y_BIAS = -0.08
# facefusion's deep swapper (processors/modules/deep_swapper/core.py, 33cc6b40) cuts every .dfm
# crop with this five-point template (face_helper.py WARP_TEMPLATE_SET['dfl_whole_face']).
FACEFUSION_TEMPLATE = np.array([[0.35342266, 0.39285716], [0.62797622, 0.39285716],
                                [0.48660713, 0.54017860], [0.38839287, 0.68750011],
                                [0.59821427, 0.68750011]])
# A crop "fits" when the mean face's landmarks land within this share of the crop side.
FIT_TOLERANCE = 0.05


@dataclass(frozen=True)
class CropMatch:
    """How other tools must cut faces for a model trained on swapd's crop.

    ``deepfacelive_*``: DeepFaceLive's Face aligner settings (align mode "from points") that
    cut swapd's square; ``deepfacelive_error``: what rounding them to the UI's steps leaves.
    ``dfl_face_type``: the nearest of DeepFaceLab's face types, and its error. Errors are the
    largest landmark offset of the mean face between the two crops, in shares of the side."""

    deepfacelive_coverage: float
    deepfacelive_x_offset: float
    deepfacelive_y_offset: float
    deepfacelive_error: float
    dfl_face_type: str
    dfl_face_type_error: float
    facefusion_error: float

    @property
    def dfl_face_type_fits(self) -> bool:
        return self.dfl_face_type_error <= FIT_TOLERANCE

    @property
    def facefusion_fits(self) -> bool:
        return self.facefusion_error <= FIT_TOLERANCE

    def metadata(self) -> dict[str, str]:
        return {key: str(value) for key, value in asdict(self).items()}


def _five_points(landmarks68: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip, mouth corners: the 5 points facefusion derives from 68."""
    lm = landmarks68
    return np.array([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def _error(a: np.ndarray, b: np.ndarray, size: float) -> float:
    return round(float(np.abs(a - b).max() / size), 4)


def crop_match(input_size: int, coverage: float, centering: Centering) -> CropMatch:
    """The DeepFaceLive settings, DeepFaceLab face type and facefusion fit of swapd's crop."""
    size = float(input_size)
    frame = MEAN_FACE_2D_68 * 400.0 + 300.0  # the mean face, as if found in a frame
    ours = model_crop_matrix(frame, input_size, coverage, centering)
    in_crop = transform_points(frame, ours)
    # DeepFaceLive's unit box (umeyama onto its mean face) and swapd's square in it.
    box = _deepfacelive_box(frame)
    corners = transform_points(np.array([[0.0, 0.0], [size, 0.0], [size, size], [0.0, size]]),
                               np.linalg.inv(np.vstack([ours, [0, 0, 1]]))[:2])
    in_box = transform_points(corners, box)
    centre = in_box.mean(axis=0)
    side = float(np.linalg.norm(in_box[1] - in_box[0]))
    dflive = (round(side, 1), round(float(centre[0] - 0.5), 2),
              round(float(centre[1] - 0.5 - _DFLIVE_Y_BIAS), 2))
    theirs = _deepfacelive_cut(box, input_size, *dflive)
    errors = {face_type: _error(in_crop, transform_points(frame, dfl_matrix(frame, input_size,
                                                                          face_type)), size)
              for face_type in DFL_WRITE_TYPES}
    nearest = min(errors, key=errors.__getitem__)
    fused = _error(_five_points(in_crop), FACEFUSION_TEMPLATE * size, size)
    return CropMatch(*dflive, _error(in_crop, transform_points(frame, theirs), size), nearest,
                     errors[nearest], fused)


# FLandmarks2D.calc_cut's 68-point fit: brows and nose (17-35), eye corners, mouth corners,
# onto uni_landmarks_68, which is DeepFaceLab's 33-point mean face less six eye points.
_DFLIVE_POINTS = [*range(17, 36), 36, 39, 42, 45, 48, 54]
_DFLIVE_MEAN = MEAN_FACE_33[[*range(19), 19, 22, 25, 28, 31, 32]].astype(np.float64)


def _deepfacelive_box(landmarks68: np.ndarray) -> np.ndarray:
    """2x3 from frame pixels to DeepFaceLive's unit face box."""
    return umeyama(landmarks68[_DFLIVE_POINTS], _DFLIVE_MEAN)[:2]


def _deepfacelive_cut(box: np.ndarray, size: int, coverage: float, x_offset: float,
                      y_offset: float) -> np.ndarray:
    """FLandmarks2D.calc_cut (xlib/face/FLandmarks2D.py, fc7b787) from a frame->unit-box
    matrix: a square of ``coverage`` boxes around the box centre moved by the offsets."""
    inverse = np.linalg.inv(np.vstack([box, [0, 0, 1]]))[:2]
    g = transform_points(np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]], float), inverse)
    reach = float(np.linalg.norm(g[0] - g[4])) * coverage
    tb = (g[2] - g[0]) / np.linalg.norm(g[2] - g[0])
    bt = (g[1] - g[3]) / np.linalg.norm(g[1] - g[3])
    centre = g[4] + (g[1] - g[0]) * x_offset + (g[3] - g[0]) * (y_offset + _DFLIVE_Y_BIAS)
    square = np.float32([centre - tb * reach, centre + bt * reach, centre + tb * reach])
    return cv2.getAffineTransform(square, np.float32([(0, 0), (size, 0), (size, size)]))


def outline_mask(input_size: int, coverage: float, centering: Centering) -> np.ndarray:
    """The mean face's outline (its landmarks' hull) in the model crop, float32 (H, W) 0/1
    with anti-aliased edges: the masks of a model that learned none. DeepFaceLive and
    facefusion erode and blur masks themselves."""
    matrix = model_crop_matrix(MEAN_FACE_2D_68, input_size, coverage, centering)
    points = transform_points(MEAN_FACE_2D_68, matrix)
    mask = np.zeros((input_size, input_size), np.float32)
    hull = cv2.convexHull(np.round(points * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1.0, lineType=cv2.LINE_AA, shift=4)
    return mask


class DfmPath(nn.Module):
    """A swap model as DeepFaceLab's .dfm graph: NHWC in, (face mask, celeb, celeb mask).

    The A side runs only for its mask: a model whose sides draw from one code (faceswap's
    shape, DF) encodes once for both decoders, and of faceswap's decoder with a separate mask
    branch only that branch runs."""

    def __init__(self, model: nn.Module, outline: np.ndarray) -> None:
        super().__init__()
        self.model = model
        self.swap = SwapPath(model, "b")  # swapd's own export: its grayscale handling, names
        self.learns_mask = self.swap.learns_mask
        self.grayscale = self.swap.grayscale
        draws = getattr(model, "draws_from_one_code", None)
        self.one_code = bool(draws is not None and draws(model.options))
        self.register_buffer("outline", torch.from_numpy(outline)[None, :, :, None],
                             persistent=False)

    def forward(self, in_face: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        face = in_face.permute(0, 3, 1, 2)
        if not self.learns_mask:
            celeb = self.swap(face)
            mask = self.outline.expand(in_face.shape[0], -1, -1, -1)
            return mask, celeb.permute(0, 2, 3, 1).clamp(0.0, 1.0), mask
        if self.grayscale:
            face = (face * self.swap.gray_weights).sum(dim=1, keepdim=True)
        channels = 1 if self.grayscale else 3
        if self.one_code:
            code = self.model.encode(face)
            out_b = self.model.decode(code, "b")
            decoder_a = self.model.decoder("a")
            if isinstance(decoder_a, FaceAndMask):  # faceswap's separate mask branch: only it
                face_mask = decoder_a.mask(code)
            else:
                face_mask = decoder_a(code)[:, channels:channels + 1]
        else:
            out_b = self.model(face, "b")
            face_mask = self.model(face, "a")[:, channels:channels + 1]
        celeb = out_b[:, :channels]
        if self.grayscale:
            celeb = celeb.expand(-1, 3, -1, -1)
        celeb_mask = out_b[:, channels:channels + 1]
        to_nhwc = (0, 2, 3, 1)
        return (face_mask.permute(*to_nhwc).clamp(0.0, 1.0),
                celeb.permute(*to_nhwc).clamp(0.0, 1.0),
                celeb_mask.permute(*to_nhwc).clamp(0.0, 1.0))


@dataclass(frozen=True)
class DfmReport:
    """What a .dfm export wrote, how close onnxruntime came to torch, the crop it expects."""

    path: Path
    max_abs_diff: float
    input_size: int
    crop: CropMatch


def export_dfm(model: nn.Module, path: str | os.PathLike[str], input_size: int, *,
               coverage: float, centering: Centering, model_name: str = "unknown",
               faces: np.ndarray | None = None, metadata: dict[str, object] | None = None,
               opset: int = DEFAULT_OPSET, tolerance: float = PARITY_TOLERANCE) -> DfmReport:
    """Write ``model``'s A->B swap to ``path`` as a .dfm, checked against torch on ``faces``
    (float32 NCHW BGR [0, 1]; default a seeded random batch). Nothing appears at ``path``
    unless the check passes."""
    target = Path(path)
    module = DfmPath(copy.deepcopy(model).to("cpu", torch.float32),
                     outline_mask(input_size, coverage, centering)).eval()
    if faces is None:
        faces = np.random.default_rng(0).random((4, 3, input_size, input_size), np.float32)
    nhwc = np.ascontiguousarray(np.asarray(faces, np.float32).transpose(0, 2, 3, 1))
    crop = crop_match(input_size, coverage, centering)
    info = {"producer": "swapd", "format": "dfm", "model": model_name,
            "input_size": str(input_size), "coverage": repr(float(coverage)),
            "centering": centering, "learned_mask": "1" if module.learns_mask else "0",
            "synthetic_media": "outputs of this model are synthetic media", **crop.metadata()}
    info.update({k: str(v) for k, v in (metadata or {}).items()})
    try:
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(module, (torch.zeros(1, input_size, input_size, 3),), buf,
                              input_names=[DFM_INPUT], output_names=list(DFM_OUTPUTS),
                              dynamic_axes={n: {0: "batch"} for n in (DFM_INPUT, *DFM_OUTPUTS)},
                              opset_version=opset, dynamo=False)
        data = _with_metadata(buf.getvalue(), info)
    except Exception as exc:
        raise ExportError(target, f".dfm export failed: {exc}") from exc
    with torch.no_grad():
        expected = [t.numpy() for t in module(torch.from_numpy(nhwc))]
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
        session = ort.InferenceSession(str(tmp), providers=onnx_providers())
        got = session.run(list(DFM_OUTPUTS), {DFM_INPUT: nhwc})
        del session  # release the file before it is renamed (Windows)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(got, expected, strict=True))
        if not diff <= tolerance or math.isnan(diff):
            raise ExportError(target, f"onnxruntime differs from torch by {diff:.3g} "
                                      f"(limit {tolerance})")
    return DfmReport(target, diff, input_size, crop)

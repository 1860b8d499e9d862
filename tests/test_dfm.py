""".dfm export: loaded the way DeepFaceLive and facefusion load a model, and run in
onnxruntime against swapd's own export of the same weights.

The loaders are re-derived here from their sources (no DeepFaceLive or facefusion code runs):

- DeepFaceLive fc7b787, modelhub/DFLive/DFMModel.py ``DFMModel.__init__`` / ``convert``: the
  first input's name must hold ``in_face``; its height and width are ``shape[1:3]``; a second
  input must be ``morph_value``, more than two are refused; ``run(None, {'in_face:0': NHWC
  float32})`` unpacks ``out_face_mask, out_celeb, out_celeb_mask`` by position.
- facefusion 33cc6b40, facefusion/processors/modules/deep_swapper/core.py ``get_model_size``
  (``shape[1:3]`` of the input named ``in_face:0``) and ``forward`` (unpacks ``target mask,
  face, source mask`` by position).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from swapd.exporter.dfm_export import (
    DFM_INPUT,
    DFM_OUTPUTS,
    _deepfacelive_box,
    _deepfacelive_cut,
    crop_match,
    export_dfm,
    outline_mask,
)
from swapd.exporter.onnx_export import export_swap_model
from swapd.faces.alignment import model_crop_matrix, transform_points
from swapd.faces.landmarks import MEAN_FACE_2D_68
from swapd.merger.session import SwapSession
from swapd.trainer.checkpoint import save_checkpoint
from swapd.trainer.models import build_model

SIZE = 32
TINY = {"input_size": SIZE, "width": 0.125, "dense_dim": 32}


class DeepFaceLiveLoader:
    """DFMModel's checks and call, as DeepFaceLive fc7b787 makes them."""

    def __init__(self, path: Path) -> None:
        self.sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = self.sess.get_inputs()
        if len(inputs) == 0 or "in_face" not in inputs[0].name:
            raise ValueError(f"Invalid model {path}")
        self.height, self.width = inputs[0].shape[1:3]
        self.model_type = 1
        if len(inputs) == 2:
            if "morph_value" not in inputs[1].name:
                raise ValueError(f"Invalid model {path}")
            self.model_type = 2
        elif len(inputs) > 2:
            raise ValueError(f"Invalid model {path}")

    def convert(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out_face_mask, out_celeb, out_celeb_mask = self.sess.run(None, {"in_face:0": img})
        return out_celeb, out_celeb_mask, out_face_mask


def facefusion_forward(path: Path, crop: np.ndarray) -> tuple[np.ndarray, ...]:
    """deep_swapper's get_model_size and forward (facefusion 33cc6b40)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    size = next(i.shape[1:3] for i in sess.get_inputs() if i.name == "in_face:0")
    assert list(size) == list(crop.shape[1:3])
    inputs = {i.name: crop for i in sess.get_inputs() if i.name == "in_face:0"}
    target_mask, face, source_mask = sess.run(None, inputs)
    return face[0], source_mask[0], target_mask[0]


def faces(n: int, seed: int = 0) -> np.ndarray:
    """float32 NCHW crops: smooth blobs, not noise, so the model's output varies."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.4)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        colour = rng.uniform(0.2, 0.9, 3)
        out.append(np.stack([blob * c + 0.05 for c in colour]))
    return np.clip(np.stack(out), 0, 1).astype(np.float32)


@pytest.fixture(scope="module", params=[True, False], ids=["learned-mask", "no-mask"])
def exports(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, Path, bool]:
    torch.manual_seed(0)
    model = build_model("lightweight", {**TINY, "learn_mask": request.param}).eval()
    folder = tmp_path_factory.mktemp("dfm")
    crops = faces(4)
    onnx_path, dfm_path = folder / "a_to_b.onnx", folder / "a_to_b.dfm"
    export_swap_model(model, onnx_path, SIZE, faces=crops, coverage=0.875,
                      model_name="lightweight", metadata={"centering": "face"})
    report = export_dfm(model, dfm_path, SIZE, coverage=0.875, centering="face",
                        model_name="lightweight", faces=crops)
    assert report.max_abs_diff <= 1e-4
    return onnx_path, dfm_path, request.param


def test_deepfacelive_loads_it(exports: tuple[Path, Path, bool]) -> None:
    _, dfm_path, _ = exports
    loader = DeepFaceLiveLoader(dfm_path)
    assert (loader.height, loader.width, loader.model_type) == (SIZE, SIZE, 1)
    img = faces(2, seed=3).transpose(0, 2, 3, 1).copy()
    celeb, celeb_mask, face_mask = loader.convert(img)
    assert celeb.shape == (2, SIZE, SIZE, 3) and celeb.dtype == np.float32
    assert celeb_mask.shape == face_mask.shape == (2, SIZE, SIZE, 1)
    for out in (celeb, celeb_mask, face_mask):
        assert out.min() >= 0.0 and out.max() <= 1.0
    graph = onnx.load(str(dfm_path)).graph
    assert [i.name for i in graph.input] == [DFM_INPUT]
    assert [o.name for o in graph.output] == list(DFM_OUTPUTS)


def test_same_pixels_as_swapds_own_export(exports: tuple[Path, Path, bool]) -> None:
    """The same faces through both files: the same swapped face and learned mask (1e-5)."""
    onnx_path, dfm_path, learned = exports
    crops = faces(5, seed=7)
    ours = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = ours.run(None, {"face": crops})
    face, source_mask, target_mask = facefusion_forward(dfm_path, crops[:1].transpose(0, 2, 3, 1))
    np.testing.assert_allclose(face, np.clip(expected[0][0], 0, 1).transpose(1, 2, 0), atol=1e-5)
    celeb, celeb_mask, face_mask = DeepFaceLiveLoader(dfm_path).convert(
        np.ascontiguousarray(crops.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(celeb, np.clip(expected[0], 0, 1).transpose(0, 2, 3, 1),
                               atol=1e-5)
    if learned:
        np.testing.assert_allclose(celeb_mask, np.clip(expected[1], 0, 1).transpose(0, 2, 3, 1),
                                   atol=1e-5)
        np.testing.assert_allclose(source_mask, celeb_mask[0], atol=1e-5)
        assert np.abs(face_mask - celeb_mask).max() > 1e-3  # the A side's own mask, not a copy
    else:
        outline = outline_mask(SIZE, 0.875, "face")[None, :, :, None]
        for mask in (celeb_mask, face_mask):
            np.testing.assert_array_equal(mask, np.broadcast_to(outline, mask.shape))
        np.testing.assert_array_equal(target_mask, outline[0])


def test_swapds_merger_runs_its_dfm(exports: tuple[Path, Path, bool]) -> None:
    onnx_path, dfm_path, _ = exports
    crops = (faces(3, seed=5).transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
    from_dfm = SwapSession(dfm_path, device="cpu")
    assert (from_dfm.input_size, from_dfm.coverage, from_dfm.centering) == (SIZE, 0.875, "face")
    diff = from_dfm.swap(crops).astype(int) - SwapSession(onnx_path, "cpu").swap(crops)
    assert np.abs(diff).max() <= 1


def test_outline_mask_covers_the_mean_face() -> None:
    mask = outline_mask(64, 0.875, "face")
    points = transform_points(MEAN_FACE_2D_68, model_crop_matrix(MEAN_FACE_2D_68, 64, 0.875))
    inner = points[27:68]  # nose, eyes, mouth: well inside the outline
    assert all(mask[int(y), int(x)] == 1.0 for x, y in inner)
    assert mask[0, 0] == mask[-1, -1] == 0.0 and set(np.unique(mask)) >= {0.0, 1.0}


@pytest.mark.parametrize(("coverage", "centering"), [(0.875, "face"), (1.0, "face"),
                                                     (0.75, "legacy"), (0.875, "head")])
def test_crop_match_cuts_swapds_square_in_deepfacelive(coverage: float, centering: str) -> None:
    """DeepFaceLive's cut with the recorded settings lands the mean face where swapd's crop
    does, within what rounding to its UI steps costs (coverage in 0.1s)."""
    match = crop_match(128, coverage, centering)
    frame = MEAN_FACE_2D_68 * 250 + 90
    theirs = transform_points(frame, _deepfacelive_cut(
        _deepfacelive_box(frame), 128, match.deepfacelive_coverage,
        match.deepfacelive_x_offset, match.deepfacelive_y_offset))
    ours = transform_points(frame, model_crop_matrix(frame, 128, coverage, centering))
    assert np.abs(theirs - ours).max() / 128 <= 0.03
    assert match.deepfacelive_error <= 0.03


def test_crop_match_names_the_dfl_face_type() -> None:
    assert crop_match(128, 0.875, "face").dfl_face_type == "full_face"
    assert crop_match(128, 1.0, "face").dfl_face_type == "whole_face"
    assert crop_match(128, 1.0, "head").dfl_face_type == "head"
    assert not crop_match(128, 0.6, "legacy").dfl_face_type_fits


def test_cli_exports_a_checkpoint_as_dfm(tmp_path: Path) -> None:
    torch.manual_seed(1)
    options = {**TINY, "learn_mask": True}
    model = build_model("lightweight", options)
    model_dir = tmp_path / "model"
    save_checkpoint(model_dir / "model.pt", {
        "model": "lightweight", "model_options": model.options.model_dump(),
        "model_state": model.state_dict(), "iteration": 1234,
        "trainer_options": {"coverage": 1.0, "centering": "face"}})
    proc = subprocess.run([sys.executable, "-m", "swapd", "model", "export", str(model_dir),
                           "--format", "dfm"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = model_dir / "exports" / "a_to_b.dfm"
    assert f"exported {out}" in proc.stdout and "face coverage 1.9" in proc.stdout
    assert "whole_face" in proc.stdout
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["iteration"] == "1234" and meta["dfl_face_type"] == "whole_face"
    assert meta["deepfacelive_coverage"] == "1.9" and meta["coverage"] == "1.0"
    assert DeepFaceLiveLoader(out).model_type == 1


@pytest.mark.parametrize(("name", "options"), [
    ("lightweight", {**TINY, "learn_mask": True}),  # one code, a separate mask branch
    ("lightweight", {**TINY, "learn_mask": True, "mask_decoder": "shared", "grayscale": True}),
    pytest.param("saehd", {"archi": "liae-ud", "input_size": 64, "ae_dims": 32, "e_dims": 16,
                           "d_dims": 16, "d_mask_dims": 16},  # each side its own code
                 marks=pytest.mark.slow),
])
def test_face_mask_is_the_a_sides_own(name: str, options: dict, tmp_path: Path) -> None:
    """out_face_mask:0 is the mask the model draws for the face as it is (side A), computed
    the short way (one encoding, only the mask branch) and equal to the long way in torch."""
    torch.manual_seed(2)
    model = build_model(name, options).eval()
    size = int(options["input_size"])
    path = tmp_path / f"{name}.dfm"
    export_dfm(model, path, size, coverage=0.875, centering="face")
    x = np.random.default_rng(4).random((2, 3, size, size), np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {DFM_INPUT: np.ascontiguousarray(x.transpose(0, 2, 3, 1))})
    face = torch.from_numpy(x)
    if options.get("grayscale"):
        face = (face * torch.tensor([0.114, 0.587, 0.299]).view(1, 3, 1, 1)).sum(1, True)
    channels = 1 if options.get("grayscale") else 3
    with torch.no_grad():
        own = model(face, "a")[:, channels:].clamp(0, 1).numpy().transpose(0, 2, 3, 1)
        celeb = model(face, "b")[:, channels:].clamp(0, 1).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got[0], own, atol=1e-5)
    np.testing.assert_allclose(got[2], celeb, atol=1e-5)
    assert got[1].shape == (2, size, size, 3)

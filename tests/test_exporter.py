"""ONNX export: real onnxruntime sessions against torch, metadata, dynamic batch, failures."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from swapd.exporter.onnx_export import (
    ExportError,
    export_swap_model,
    read_export_info,
)
from swapd.trainer.data import crop_for_model, to_tensor_layout
from swapd.trainer.models import build_model

SIZE = 32
TINY = {"input_size": SIZE, "width": 0.125, "dense_dim": 32}


def face_crops(n: int, seed: int = 0) -> np.ndarray:
    """float32 NCHW model crops of cartoon faces (coloured ellipse, eyes, mouth)."""
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        img = np.full((48, 48, 3), rng.integers(20, 60), np.uint8)
        c = (24 + int(rng.integers(-2, 3)), 24 + int(rng.integers(-2, 3)))
        cv2.ellipse(img, c, (15, 20), 0, 0, 360, (80, 140, 220), -1)
        for dx in (-6, 6):
            cv2.circle(img, (c[0] + dx, c[1] - 5), 3, (200, 60, 20), -1)
        mouth = (7, int(rng.integers(1, 4)))
        cv2.ellipse(img, (c[0], c[1] + 9), mouth, 0, 0, 360, (40, 40, 160), -1)
        crops.append(crop_for_model(img, SIZE, 0.875))
    return to_tensor_layout(np.stack(crops))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("lightweight", TINY).eval()


@pytest.fixture(scope="module")
def exported(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "swap.onnx"
    report = export_swap_model(
        model, path, SIZE, faces=face_crops(6), coverage=0.8, model_name="lightweight"
    )
    assert report.path == path and report.input_size == SIZE and report.opset >= 13
    assert report.max_abs_diff <= 1e-3
    assert [p.name for p in path.parent.iterdir()] == ["swap.onnx"]  # no temp file left
    return path


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_torch_any_batch(
    model: torch.nn.Module, exported: Path, batch: int
) -> None:
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["face"]
    assert [o.name for o in session.get_outputs()] == ["swapped"]
    faces = face_crops(batch, seed=10 + batch)
    (got,) = session.run(["swapped"], {"face": faces})
    with torch.no_grad():
        expected = model.decoder_b(model.encoder(torch.from_numpy(faces))).numpy()
    assert got.shape == (batch, 3, SIZE, SIZE)
    assert np.abs(got - expected).max() <= 1e-3
    # and it really is the A->B path, not A->A
    with torch.no_grad():
        other = model(torch.from_numpy(faces), "a").numpy()
    assert np.abs(got - other).max() > 1e-3


def test_export_metadata(exported: Path) -> None:
    info = read_export_info(exported)
    assert info["input_size"] == SIZE and info["coverage"] == 0.8
    assert info["model"] == "lightweight" and info["producer"] == "swapd"
    assert info["side_to"] == "b" and info["channels"] == "BGR"
    assert onnx.load(str(exported)).producer_name == "swapd"


def test_export_side_a(model: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "to_a.onnx"
    export_swap_model(model, path, SIZE, side_to="a", faces=face_crops(2))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    faces = face_crops(2, seed=4)
    (got,) = session.run(None, {"face": faces})
    with torch.no_grad():
        expected = model(torch.from_numpy(faces), "a").numpy()
    assert np.abs(got - expected).max() <= 1e-3


def test_failed_parity_leaves_previous_export(model: torch.nn.Module, exported: Path) -> None:
    before = exported.read_bytes()
    with pytest.raises(ExportError, match="differs from torch") as err:
        # an impossible tolerance makes the parity check fail on a real comparison
        export_swap_model(model, exported, SIZE, faces=face_crops(2), tolerance=-1.0)
    assert err.value.path == exported
    assert exported.read_bytes() == before
    assert [p.name for p in exported.parent.iterdir()] == ["swap.onnx"]


def test_read_export_info_rejects_other_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx at all")
    with pytest.raises(ExportError, match="junk.onnx"):
        read_export_info(junk)
    with pytest.raises(ExportError, match="no such file"):
        read_export_info(tmp_path / "missing.onnx")

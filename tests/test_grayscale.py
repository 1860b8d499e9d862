"""Grayscale training: one channel from grayscale or colour faces, previews, tracker,
export (BGR in and out) and merging."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from swapd.demo.identity import DEMO_A
from swapd.demo.painter import render_face
from swapd.exporter.checkpoint_export import export_trainer
from swapd.exporter.onnx_export import read_export_info
from swapd.merger.merge import MergeOptions, Merger
from swapd.trainer.data import FaceSet, to_tensor_layout
from swapd.trainer.loop import Trainer
from swapd.trainer.model_io import ModelIO
from swapd.trainer.models import build_model
from swapd.trainer.options import TrainerOptions
from tests.support import TINY

GRAY = {**TINY, "grayscale": True}


def _options() -> TrainerOptions:
    return TrainerOptions(learning_rate=1e-3, seed=3, preview_faces=2)


@pytest.mark.parametrize("name", ["original", "lightweight", "iae"])
def test_every_model_takes_and_draws_one_channel(name: str) -> None:
    model = build_model(name, GRAY)
    assert model.image_channels == 1
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 1
    with torch.no_grad():
        assert model(torch.rand(2, 1, 32, 32), "a").shape == (2, 1, 32, 32)


def test_grayscale_trains_on_colour_faces_converted_on_load(synthetic_sets: dict[str, Path],
                                                            tmp_path: Path) -> None:
    with Trainer("lightweight", GRAY, _options(), synthetic_sets["alice"],
                 synthetic_sets["bob"], tmp_path / "m", batch_size=4) as trainer:
        io = ModelIO(trainer)
        faces = trainer.set_a.faces
        assert faces.shape[-1] == 1  # a third of the colour cache
        # converted as OpenCV converts BGR to gray (then cropped: within a level or two)
        colour = FaceSet(synthetic_sets["alice"], 32, trainer.options.coverage,
                         centering=trainer.options.centering)
        converted = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in colour.faces])
        assert colour.paths == trainer.set_a.paths
        assert np.abs(converted.astype(int) - faces[..., 0]).mean() < 1.5
        stats = [trainer.step() for _ in range(3)]
        assert all(np.isfinite([s.loss_a, s.loss_b]).all() for s in stats)
        grid = trainer.preview()
        assert grid.ndim == 3 and grid.shape[2] == 3
        drawn = trainer.preview_columns()[2]  # A>B
        assert drawn.shape[-1] == 1
        taken = io.snapshot(tracker_faces=2)
        assert len(taken.tracked) == 4
        recon = cv2.imread(str(taken.snapshot.folder / "tracker" / taken.tracked[0].recon),
                           cv2.IMREAD_UNCHANGED)
        assert recon is not None and recon.shape[:2] == (32, 32)

        report = export_trainer(trainer, tmp_path / "gray.onnx")
        assert report.max_abs_diff <= 1e-3
        assert read_export_info(report.path)["grayscale"] == "1"
        session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape[1] == 3  # the merger's BGR, as for colour
        bgr = np.repeat(faces[:2], 3, axis=-1)
        (out,) = session.run(["swapped"], {"face": to_tensor_layout(bgr)})
        assert out.shape == (2, 3, 32, 32)
        assert np.array_equal(out[:, 0], out[:, 1]) and np.array_equal(out[:, 1], out[:, 2])
        with torch.no_grad():
            expected = trainer.model(torch.from_numpy(to_tensor_layout(faces[:2])), "b")
        assert np.abs(out[:, :1] - expected.numpy()).max() <= 1e-3

    shot = render_face(DEMO_A, frame_size=(256, 256), centre=(128, 128), face_height_px=140,
                       background=4)
    src = tmp_path / "colour.png"
    cv2.imwrite(str(src), shot.image)
    merged = Merger(report.path, MergeOptions(colour_match=False)).merge_file(
        src, tmp_path / "out")
    image = cv2.imread(str(merged.output_path)).astype(int)
    nose = shot.landmarks[30].astype(int)
    patch = image[nose[1] - 8: nose[1] + 8, nose[0] - 8: nose[0] + 8]
    # the swapped face is gray: its channels agree (up to the watermark's small changes)
    assert np.abs(patch[..., 0] - patch[..., 2]).mean() < 6
    original = shot.image[nose[1] - 8: nose[1] + 8, nose[0] - 8: nose[0] + 8].astype(int)
    assert np.abs(original[..., 0] - original[..., 2]).mean() > 20  # a coloured face before


def test_grayscale_and_colour_models_train_on_grayscale_files(faces: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    gray_sets = []
    for folder in faces:
        out = tmp_path / "gray" / folder.name
        out.mkdir(parents=True)
        for path in sorted(folder.iterdir()):
            cv2.imwrite(str(out / path.name), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
        gray_sets.append(out)
    for model_options, channels in ((GRAY, 1), (TINY, 3)):
        with Trainer("lightweight", model_options, _options(), gray_sets[0], gray_sets[1],
                     tmp_path / f"m{channels}", batch_size=4) as trainer:
            assert len(trainer.set_a) == 12 and trainer.set_a.faces.shape[-1] == channels
            assert np.isfinite(trainer.step().loss_a)

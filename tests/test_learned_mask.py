"""Learned masks: trained against the landmark face mask, shown in the preview, exported as a
second ONNX output and used by the merger to blend."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from swapd.demo.identity import DEMO_A
from swapd.demo.painter import render_face
from swapd.exporter.checkpoint_export import export_trainer
from swapd.exporter.onnx_export import read_export_info
from swapd.merger.blend import feather
from swapd.merger.merge import MergeOptions, Merger
from swapd.merger.session import SwapSession
from swapd.trainer.checkpoint import load_checkpoint
from swapd.trainer.data import to_tensor_layout
from swapd.trainer.loop import Trainer
from swapd.trainer.model_io import ModelIO
from swapd.trainer.options import TrainerOptions
from tests.support import TINY

MASKED = {**TINY, "learn_mask": True}


def _mask_error(trainer: Trainer) -> float:
    """Mean squared error of the learned mask against the landmark mask, preview faces."""
    _, learned = trainer.predict_with_mask(trainer._preview_a, "a")
    assert learned is not None
    truth = trainer._preview_mask_a.astype(np.float32) / 255
    return float(np.mean((learned.astype(np.float32) / 255 - truth) ** 2))


@pytest.mark.parametrize("mask_decoder", ["separate", "shared"])
def test_learned_mask_trains_toward_the_face_mask_and_is_shown(
        synthetic_sets: dict[str, Path], tmp_path: Path, mask_decoder: str) -> None:
    options = TrainerOptions(learning_rate=1e-3, seed=3, preview_faces=2, mask_loss_weight=2.0)
    model_options = {**MASKED, "mask_decoder": mask_decoder}
    with Trainer("lightweight", model_options, options, synthetic_sets["alice"],
                 synthetic_sets["bob"], tmp_path / "m", batch_size=8) as trainer:
        io = ModelIO(trainer)
        assert trainer.model.learns_mask
        before = _mask_error(trainer)
        stats = [trainer.step() for _ in range(40)]
        after = _mask_error(trainer)
        assert after < before * 0.6, (before, after)
        # the mask's loss is its own component, and part of the side's loss
        first, last = stats[0].components_a, stats[-1].components_a
        assert "mask" in first and last["mask"] < first["mask"]
        assert abs(sum(last.values()) - stats[-1].loss_a) < 1e-4
        # the preview blends the faces the model draws onto their sources by its own mask
        source = trainer._preview_a
        face, learned = trainer.predict_with_mask(source, "b")
        shown = trainer.preview_columns()[2]  # A>B
        assert int(learned.max()) - int(learned.min()) > 150  # a face, not a flat mask
        alpha = learned[..., None].astype(np.float32) / 255
        expected = face * alpha + source * (1 - alpha)
        assert np.abs(shown - expected).max() <= 0.5 + 1e-3
        io.save()
        iteration = trainer.iteration
    # the mask decoder's weights are in the checkpoint (a shared one: the face decoder's last
    # conv draws one channel more) and a resume carries on
    weights = load_checkpoint(tmp_path / "m" / "model.pt")["model_state"]
    assert any(".mask." in key for key in weights) == (mask_decoder == "separate")
    last_conv = [w for key, w in weights.items() if key.startswith("decoder_a.")][-1]
    assert last_conv.shape == ((1,) if mask_decoder == "separate" else (4,))  # its bias
    with Trainer("lightweight", model_options, options, synthetic_sets["alice"],
                 synthetic_sets["bob"], tmp_path / "m", batch_size=8) as resumed:
        assert resumed.iteration == iteration
        assert abs(_mask_error(resumed) - after) < 1e-6


@pytest.mark.parametrize("mask_decoder", ["separate", "shared"])
def test_learned_mask_is_exported_beside_the_face(synthetic_sets: dict[str, Path],
                                                  tmp_path: Path, mask_decoder: str) -> None:
    options = TrainerOptions(learning_rate=1e-3, seed=3, preview_faces=2)
    with Trainer("lightweight", {**MASKED, "mask_decoder": mask_decoder}, options,
                 synthetic_sets["alice"], synthetic_sets["bob"], tmp_path / "m",
                 batch_size=4) as trainer:
        trainer.step()
        report = export_trainer(trainer, tmp_path / "swap.onnx")
        crops = trainer.set_a.faces[:3]
        with torch.no_grad():
            expected = trainer.model(torch.from_numpy(to_tensor_layout(crops)), "b").numpy()
    assert report.max_abs_diff <= 1e-3
    assert read_export_info(report.path)["learned_mask"] == "1"
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["swapped", "mask"]
    face, mask = session.run(None, {"face": to_tensor_layout(crops)})
    assert np.abs(face - expected[:, :3]).max() <= 1e-3
    assert np.abs(mask - expected[:, 3:]).max() <= 1e-3
    swap = SwapSession(report.path, device="cpu")
    faces, masks = swap.swap_with_masks(crops)
    assert swap.learned_mask and faces.shape == crops.shape
    assert masks is not None and masks.shape == crops.shape[:3]
    assert np.abs(masks - mask[:, 0]).max() < 1e-6


class _InvertLeftHalf(nn.Module):
    """A 'swap' drawing 1 - x, with a learned mask that keeps only the crop's left half."""

    def __init__(self, size: int) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, size, size)
        mask[..., : size // 2] = 1
        self.register_buffer("keep", mask)

    def forward(self, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 1 - face, self.keep.expand(face.shape[0], -1, -1, -1)


def _export_half(path: Path, size: int) -> Path:
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(_InvertLeftHalf(size).eval(), torch.rand(1, 3, size, size), str(path),
                          input_names=["face"], output_names=["swapped", "mask"],
                          dynamic_axes={n: {0: "batch"} for n in ("face", "swapped", "mask")},
                          opset_version=17, dynamo=False)
    proto = onnx.load(str(path))
    for key, value in {"input_size": str(size), "coverage": "0.875", "centering": "face",
                       "model": "half"}.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


def test_merger_blends_with_the_learned_mask(tmp_path: Path) -> None:
    model = _export_half(tmp_path / "half.onnx", 64)
    shot = render_face(DEMO_A, frame_size=(320, 320), centre=(160, 160), face_height_px=150,
                       background=4)
    src = tmp_path / "face.png"
    cv2.imwrite(str(src), shot.image)
    options = MergeOptions(colour_match=False)
    out = cv2.imread(str(Merger(model, options).merge_file(src, tmp_path / "out").output_path))
    diff = np.abs(out.astype(int) - shot.image).sum(axis=2)
    # The face's left half (in the picture: the crop is upright here) is replaced, the right
    # half kept (up to the watermark), though the mean-face mask would cover both.
    landmarks = shot.landmarks
    nose_x = landmarks[30, 0]
    rows = slice(int(landmarks[27, 1]), int(landmarks[8, 1]) - 10)
    left = diff[rows, int(landmarks[0, 0]) + 10: int(nose_x) - 15]
    right = diff[rows, int(nose_x) + 15: int(landmarks[16, 0]) - 10]
    assert left.mean() > 100 and right.mean() < 12, (left.mean(), right.mean())
    # with learned masks off, the mean face's mask is used and both halves change
    plain = MergeOptions(colour_match=False, learned_mask=False)
    out = cv2.imread(str(Merger(model, plain).merge_file(src, tmp_path / "plain").output_path))
    diff = np.abs(out.astype(int) - shot.image).sum(axis=2)
    assert diff[rows, int(nose_x) + 15: int(landmarks[16, 0]) - 10].mean() > 40


def test_feather_softens_a_mask_inside_its_edge() -> None:
    mask = np.zeros((64, 64), np.float32)
    mask[8:56, 8:56] = 1
    soft = feather(mask, erode=0.05, blur=0.05)
    assert mask[8, 8] == 1  # the caller's mask is left as it was
    assert soft[32, 32] > 0.99 and soft[9, 32] < 0.2 and soft[0].max() == 0
    assert 0 < soft[12, 32] < 1


def test_faces_without_landmarks_do_not_teach_the_mask(synthetic_sets: dict[str, Path],
                                                       faces: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    """Plain faces with no landmark found get an all-face mask for the penalized loss; the
    learned mask must not learn that square from them."""
    options = TrainerOptions(learning_rate=1e-3, seed=3, preview_faces=2)
    with Trainer("lightweight", MASKED, options, synthetic_sets["alice"], faces[1],
                 tmp_path / "m", batch_size=4, landmarks=lambda *_: None) as trainer:
        assert trainer.set_b.without_landmarks == len(trainer.set_b)
        assert trainer.set_a.without_landmarks == 0
        batch = trainer.loader.get()
        assert batch.mask_known_a.tolist() == [1.0] * 4
        assert batch.mask_known_b.tolist() == [0.0] * 4
        for _ in range(3):
            stats = trainer.step()
            assert stats.components_a["mask"] > 0 and stats.components_b["mask"] == 0


def test_mask_decoder_belongs_to_the_faceswap_shaped_models() -> None:
    from swapd.trainer.models import build_model
    from swapd.trainer.options import OptionsError, validate_model_options

    sizes = {}
    for name in ("original", "lightweight", "iae"):
        for decoder in ("separate", "shared"):
            options = validate_model_options(name, {**MASKED, "mask_decoder": decoder})
            model = build_model(name, options)
            with torch.no_grad():
                out = model(torch.rand(2, 3, 32, 32), "b")
            assert out.shape == (2, 4, 32, 32)  # the face, then its mask
            face_decoder = getattr(model, "decoder_a", None) or model.decoder_shared
            sizes[name, decoder] = sum(p.numel() for p in face_decoder.parameters())
        # a shared mask costs one output channel of the last conv, not a second decoder
        assert sizes[name, "shared"] < 0.6 * sizes[name, "separate"]
    with pytest.raises(OptionsError, match="set learn_mask = true"):
        validate_model_options("lightweight", {**TINY, "mask_decoder": "shared"})
    for name in ("dfl_sae", "saehd"):  # their mask decoders are their own
        with pytest.raises(OptionsError, match="mask_decoder"):
            validate_model_options(name, {"learn_mask": True, "mask_decoder": "shared"})

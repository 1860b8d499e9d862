"""Trainer core: registry, options, data, augmentation, checkpoints, the loop, previews."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from swapd.demo.face_sets import write_face_set
from swapd.demo.identity import DEMO_A
from swapd.exporter.checkpoint_export import export_trainer
from swapd.exporter.onnx_export import read_export_info
from swapd.faces.dfl_jpg import DFLMeta, encode_dfl_jpg
from swapd.faces.faceswap_png import read_aligned_png, write_aligned_png
from swapd.faces.validate import FaceLayout
from swapd.trainer.augment import Augmenter, AugmentSettings
from swapd.trainer.batches import BatchLoader
from swapd.trainer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from swapd.trainer.data import (
    YAW_BAND_DEGREES,
    FaceSet,
    FoundLandmarks,
    crop_for_model,
    to_tensor_layout,
)
from swapd.trainer.divergence import NonFiniteLossError, OutputCollapsedError
from swapd.trainer.loop import Trainer
from swapd.trainer.model_io import ModelIO
from swapd.trainer.models import build_model, list_models, model_options_class
from swapd.trainer.options import OptionsError, TrainerOptions, split_options
from swapd.trainer.preview import COLUMNS, header_height
from tests.support import TINY, draw_face, make_trainer, write_faces

if TYPE_CHECKING:
    from swapd.daemon.train_worker import TrainingRun
    from swapd.state import StateStore
    from swapd.workspace import Workspace


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


# -- registry and options ---------------------------------------------------------------


def test_registry_lists_and_builds_models() -> None:
    assert {"original", "lightweight", "iae"} <= set(list_models())
    model = build_model("lightweight", TINY)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32), "b")
    assert out.shape == (2, 3, 32, 32)
    assert float(out.min()) >= 0 and float(out.max()) <= 1  # sigmoid output
    assert model_options_class("original")().lowmem is False


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("original", {}, 82_062_470),
        ("original", {"lowmem": True}, 60_565_126),
        ("lightweight", {}, 51_066_374),
        ("iae", {}, 117_816_003),
    ],
)
def test_full_size_parameter_counts(name: str, options: dict, expected: int) -> None:
    with torch.device("meta"):
        model = build_model(name, options)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_split_options_routes_keys() -> None:
    trainer, model = split_options("original", {"loss": "mae", "width": 0.5, "lowmem": True})
    assert trainer.loss == "mae" and trainer.learning_rate == 5e-5
    assert model.width == 0.5 and model.lowmem is True and model.input_size == 64


def test_split_options_names_unknown_key() -> None:
    with pytest.raises(OptionsError) as err:
        split_options("lightweight", {"eye_multiplierr": 3, "loss": "ssim"})
    msg = str(err.value)
    assert "eye_multiplierr" in msg and "unknown option" in msg
    assert "learning_rate" in msg and "input_size" in msg  # lists what is accepted


def test_split_options_names_bad_value() -> None:
    with pytest.raises(OptionsError) as err:
        split_options("lightweight", {"input_size": 70, "loss": "huber"})
    msg = str(err.value)
    assert "input_size" in msg and "multiple of 16" in msg
    assert "loss" in msg and "huber" in msg


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(OptionsError) as err:
        split_options("villian", {})
    assert "villian" in str(err.value)
    assert "lightweight" in str(err.value) and "original" in str(err.value)


# -- data and augmentation ------------------------------------------------------------


def test_crop_for_model_centre_crop() -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    img[4:60, 4:60] = 255  # the central 56 px = coverage 0.875
    crop = crop_for_model(img, 28, 0.875)
    assert crop.shape == (28, 28, 3) and crop.dtype == np.uint8
    assert crop.min() == 255
    with pytest.raises(ValueError, match="not square"):
        crop_for_model(np.zeros((64, 60, 3), np.uint8), 32, 0.875)


def test_faceset_skips_bad_files_and_refreshes(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    paths = write_faces(folder, "a", 3)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "empty.jpg").write_bytes(b"")
    cv2.imwrite(str(folder / "wide.png"), np.zeros((40, 50, 3), np.uint8))
    (folder / "notes.txt").write_text("not an image, ignored")
    face_set = FaceSet(folder, 32, 0.875)
    assert len(face_set) == 3 and face_set.faces.shape == (3, 32, 32, 3)
    assert set(face_set.skipped) == {
        folder / "broken.png",
        folder / "empty.jpg",
        folder / "wide.png",
    }
    assert "not square" in face_set.skipped[folder / "wide.png"]
    assert "empty" in face_set.skipped[folder / "empty.jpg"]

    write_faces(tmp_path / "more", "a", 2, seed=9)
    (tmp_path / "more" / "a_000.png").rename(folder / "new.png")
    paths[0].unlink()
    assert face_set.refresh() == (1, 1)
    assert folder / "new.png" in face_set.paths and paths[0] not in face_set.paths
    assert face_set.refresh() == (0, 0)


def test_augmenter_identity_without_noise_and_warps_with_it() -> None:
    rng = np.random.default_rng(0)
    faces = np.stack([draw_face("a", rng, 32) for _ in range(6)])
    still = AugmentSettings(warp=True, flip=False, rotation_deg=0, zoom=0, shift=0, warp_noise=0,
                           colour=False, clahe=0)
    inputs, targets, _ = Augmenter(32, still)(faces, rng)
    assert np.abs(inputs.astype(int) - faces).max() <= 1  # noise-free warp = identity
    assert np.array_equal(targets, faces)
    inputs, targets, _ = Augmenter(32)(faces, rng)
    assert inputs.shape == targets.shape == faces.shape
    assert np.abs(inputs.astype(int) - targets).mean() > 1  # warp changes the input only


def test_batch_loader_shapes_and_close(faces: tuple[Path, Path]) -> None:
    set_a, set_b = FaceSet(faces[0], 32), FaceSet(faces[1], 32)
    loader = BatchLoader(set_a, set_b, 5, AugmentSettings(), seed=1)
    batch = loader.get()
    for arr in (batch.input_a, batch.target_a, batch.mask_a, batch.input_b, batch.target_b,
                batch.mask_b):
        assert arr.shape == (5, 3, 32, 32) and arr.dtype == np.float32
        assert arr.min() >= 0 and arr.max() <= 1
    # These plain PNGs carry no landmarks: every pixel counts as face, no eyes or mouth known.
    assert (batch.mask_a[:, 0] == 1).all() and (batch.mask_a[:, 1:] == 0).all()
    loader.close()
    assert not any(t.is_alive() for t in loader._threads)


def test_batch_loader_workers_build_batches_side_by_side(faces: tuple[Path, Path]) -> None:
    set_a, set_b = FaceSet(faces[0], 32), FaceSet(faces[1], 32)
    one = BatchLoader(set_a, set_b, 4, AugmentSettings(), seed=[1, 0])
    again = BatchLoader(set_a, set_b, 4, AugmentSettings(), seed=[1, 0])
    try:  # one worker: the same seed gives the same batches
        assert np.array_equal(one.get().input_a, again.get().input_a)
    finally:
        one.close()
        again.close()
    loader = BatchLoader(set_a, set_b, 4, AugmentSettings(), seed=[1, 0], workers=3)
    again = BatchLoader(set_a, set_b, 4, AugmentSettings(), seed=[1, 0], workers=3)
    try:
        assert len(loader._threads) == 3
        batches = [loader.get() for _ in range(12)]
        assert all(b.input_a.shape == (4, 3, 32, 32) for b in batches)
        # Each worker draws its own stream: no two batches are the same...
        assert len({b.input_a.tobytes() for b in batches}) == 12
        # ...and read in turn, the order is the seed's, however the threads race.
        assert all(np.array_equal(b.input_a, again.get().input_a) for b in batches)
    finally:
        loader.close()
        again.close()
    assert not any(t.is_alive() for t in loader._threads)

    # Two processes of a DDP group, two workers each: at every step their shares make up
    # the global batch one process draws.
    still = AugmentSettings(warp=False, flip=False, rotation_deg=0, zoom=0, shift=0,
                            colour=False, clahe=0)
    whole = BatchLoader(set_a, set_b, 4, still, seed=[2, 0], workers=2)
    halves = [BatchLoader(set_a, set_b, 4, still, seed=[2, 0], workers=2, shard=(r, 2))
              for r in (0, 1)]
    try:
        for _ in range(6):
            joined = np.concatenate([half.get().target_a for half in halves])
            assert np.array_equal(joined, whole.get().target_a)
    finally:
        for each in (whole, *halves):
            each.close()


# -- checkpoints ------------------------------------------------------------------------


def test_checkpoint_roundtrip_and_corruption(tmp_path: Path) -> None:
    path = tmp_path / "m" / "model.pt"
    state = {"model": "x", "model_options": {}, "model_state": {"w": torch.ones(3)}, "iteration": 7}
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["iteration"] == 7 and torch.equal(loaded["model_state"]["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp files left

    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert err.value.path == path and str(path) in str(err.value)

    path.write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match="model.pt"):
        load_checkpoint(path)


# -- the training loop -------------------------------------------------------------------


def test_training_lowers_loss_and_resumes(faces: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    with make_trainer(faces, model_dir) as trainer:
        io = ModelIO(trainer)
        losses = [trainer.step() for _ in range(40)]
        assert trainer.iteration == 40 and losses[-1].iteration == 40
        assert losses[0].examples == 8 and losses[0].seconds > 0
        first = np.mean([s.loss_a + s.loss_b for s in losses[:5]])
        last = np.mean([s.loss_a + s.loss_b for s in losses[-5:]])
        assert last < 0.8 * first
        io.save()
        saved = weights(trainer)
        saved_opt = trainer.optimizer.state_dict()["state"][0]["exp_avg"].clone()

    with make_trainer(faces, model_dir) as resumed:
        resumed_io = ModelIO(resumed)
        assert resumed.iteration == 40
        for key, value in weights(resumed).items():
            assert torch.equal(value, saved[key]), key
        assert torch.equal(resumed.optimizer.state_dict()["state"][0]["exp_avg"], saved_opt)
        assert resumed.step().iteration == 41
        resumed_io.save()
    history = load_checkpoint(model_dir / "model.pt")["history"]["sessions"]
    assert [s["iterations"] for s in history] == [40, 1]


def test_resume_rejects_different_architecture(faces: tuple[Path, Path], tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "m") as trainer:
        io = ModelIO(trainer)
        io.save()
    options = TrainerOptions()
    with pytest.raises(OptionsError, match="dense_dim"):
        Trainer("lightweight", {**TINY, "dense_dim": 64}, options, *faces, tmp_path / "m")


def test_a_new_model_starts_from_another_models_weights(faces: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "pretrained") as pretrained:
        pretrained_io = ModelIO(pretrained)
        for _ in range(3):
            pretrained.step()
        pretrained_io.save()
        start = weights(pretrained)
    start_path = tmp_path / "pretrained" / "model.pt"

    options = TrainerOptions(learning_rate=1e-3, seed=3, preview_faces=3)
    with Trainer("lightweight", TINY, options, *faces, tmp_path / "new", batch_size=4,
                 start_from=start_path) as trainer:
        io = ModelIO(trainer)
        for key, value in weights(trainer).items():
            assert torch.equal(value, start[key]), key
        # The weights only: its own iteration count and a fresh optimizer.
        assert trainer.iteration == 0 and not trainer.optimizer.state
        assert trainer.started_from == {"path": str(start_path), "iteration": 3}
        trainer.step()
        io.save()
        trained = weights(trainer)
    assert load_checkpoint(tmp_path / "new" / "model.pt")["started_from"]["iteration"] == 3

    # Weights kept in half precision (as benchmarks/pretrain_pool.py writes them) load too.
    half = tmp_path / "half.pt"
    state = load_checkpoint(start_path)
    save_checkpoint(half, {**{k: v for k, v in state.items() if k not in ("format", "version")},
                           "model_state": {k: v.half() for k, v in start.items()}})
    with Trainer("lightweight", TINY, options, *faces, tmp_path / "from_half", batch_size=4,
                 start_from=half) as from_half:
        for key, value in weights(from_half).items():
            assert value.dtype == torch.float32 and torch.equal(value, start[key].half().float())
        from_half.step()

    # Once the model has its own checkpoint, it resumes from that: start_from is not used.
    with Trainer("lightweight", TINY, options, *faces, tmp_path / "new", batch_size=4,
                 start_from=start_path) as resumed:
        assert resumed.iteration == 1 and resumed.started_from["path"] == str(start_path)
        for key, value in weights(resumed).items():
            assert torch.equal(value, trained[key]), key


def test_start_from_refuses_another_model_and_names_the_file(faces: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "pretrained") as pretrained:
        pretrained_io = ModelIO(pretrained)
        pretrained_io.save()
    start_path = tmp_path / "pretrained" / "model.pt"
    options = TrainerOptions()
    with pytest.raises(OptionsError, match="dense_dim") as err:
        Trainer("lightweight", {**TINY, "dense_dim": 64}, options, *faces, tmp_path / "a",
                start_from=start_path)
    assert str(start_path) in str(err.value)
    with pytest.raises(OptionsError, match="holds a 'lightweight' model"):
        Trainer("original", TINY, options, *faces, tmp_path / "b", start_from=start_path)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(CheckpointError) as caught:
        Trainer("lightweight", TINY, options, *faces, tmp_path / "c", start_from=broken)
    assert caught.value.path == broken


def test_corrupt_checkpoint_names_file(faces: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "model.pt").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(CheckpointError) as err:
        make_trainer(faces, model_dir)
    assert err.value.path == model_dir / "model.pt"


def test_nan_loss_raises_and_leaves_weights(faces: tuple[Path, Path], tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "m") as trainer:
        trainer.step()
        with torch.no_grad():
            trainer.model.decoder_a[-2].bias[0] = float("nan")  # poisons side A's output
        before = weights(trainer)
        steps_before = trainer.optimizer.state_dict()["state"][0]["step"].clone()
        with pytest.raises(NonFiniteLossError) as err:
            trainer.step()
        assert err.value.iteration == 2
        assert trainer.iteration == 1
        for key, value in weights(trainer).items():
            torch.testing.assert_close(value, before[key], rtol=0, atol=0, equal_nan=True)
        assert torch.equal(trainer.optimizer.state_dict()["state"][0]["step"], steps_before)


def test_nan_rolls_back_to_the_checkpoint_with_a_lower_rate(faces: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "m", nan_max_rollbacks=1) as trainer:
        io = ModelIO(trainer)
        trainer.step()
        trainer.step()
        io.save()
        saved = weights(trainer)
        trainer.step()
        with torch.no_grad():
            trainer.model.decoder_a[-2].bias[0] = float("nan")
        with pytest.raises(NonFiniteLossError) as err:
            trainer.step()
        record = io.roll_back(err.value)
        assert record is not None and record["failed_at"] == 4 and record["back_to"] == 2
        assert trainer.iteration == 2 and trainer.lr_scale == 0.5
        for key, value in weights(trainer).items():
            torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
        stats = trainer.step()  # training goes on, at half the learning rate
        assert np.isfinite([stats.loss_a, stats.loss_b]).all() and stats.iteration == 3
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-3)
        io.save()
        with torch.no_grad():
            trainer.model.decoder_a[-2].bias[0] = float("nan")
        with pytest.raises(NonFiniteLossError) as again:
            trainer.step()
        assert io.roll_back(again.value) is None  # one rollback per session allowed
    state = load_checkpoint(tmp_path / "m" / "model.pt")
    assert state["lr_scale"] == 0.5 and state["rollbacks"][0]["back_to"] == 2
    with make_trainer(faces, tmp_path / "m", on_nan="stop") as trainer:
        io = ModelIO(trainer)
        assert trainer.lr_scale == 0.5  # kept across sessions
        with torch.no_grad():
            trainer.model.decoder_a[-2].bias[0] = float("nan")
        with pytest.raises(NonFiniteLossError) as err:
            trainer.step()
        assert io.roll_back(err.value) is None


def flatten_outputs(trainer: Trainer) -> None:
    """A collapse as lr 3e-3 gave the demo: each decoder's sigmoid saturated, flat colour out,
    and a finite loss."""
    with torch.no_grad():
        for decoder in (trainer.model.decoder_a, trainer.model.decoder_b):
            decoder[-2].weight.zero_()
            decoder[-2].bias.fill_(20.0)


def test_a_model_whose_faces_went_flat_is_not_saved_and_rolls_back(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "m") as trainer:
        io = ModelIO(trainer)
        assert trainer.output_spread() < 0.05  # untrained: flat too, which must not count
        io.save()
        assert not trainer.drew_faces
        for _ in range(15):  # 10 steps draw faces (spread 0.65 with this seed)
            trainer.step()
        io.save()
        assert trainer.drew_faces
        saved = weights(trainer)
        stamp = (tmp_path / "m" / "model.pt").stat().st_mtime_ns
        trainer.step()
        flatten_outputs(trainer)
        stats = trainer.step()
        assert np.isfinite([stats.loss_a, stats.loss_b]).all()  # no NaN to catch
        with pytest.raises(OutputCollapsedError, match="went flat at iteration 17") as err:
            io.save()
        assert (tmp_path / "m" / "model.pt").stat().st_mtime_ns == stamp
        record = io.roll_back(err.value)
        assert record is not None and record["reason"] == "flat output"
        assert (record["failed_at"], record["back_to"]) == (17, 15)
        assert record["output_spread"] < 0.05 and trainer.lr_scale == 0.5
        for key, value in weights(trainer).items():
            torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
        trainer.step()
        io.save()
    # The checkpoint remembers that the model drew faces: a collapse right after a resume counts.
    with make_trainer(faces, tmp_path / "m", collapse_guard=True) as resumed:
        resumed_io = ModelIO(resumed)
        assert resumed.drew_faces
        flatten_outputs(resumed)
        with pytest.raises(OutputCollapsedError):
            resumed_io.save()
    with make_trainer(faces, tmp_path / "m", on_nan="stop") as stopping:
        stopping_io = ModelIO(stopping)
        flatten_outputs(stopping)
        with pytest.raises(OutputCollapsedError) as err:
            stopping_io.save()
        assert stopping_io.roll_back(err.value) is None  # on_nan = "stop" stops here too
    with make_trainer(faces, tmp_path / "m", collapse_guard=False) as unguarded:
        unguarded_io = ModelIO(unguarded)
        flatten_outputs(unguarded)
        unguarded_io.save()  # the option turns the guard off


def test_preview_grid_layout(faces: tuple[Path, Path], tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "m", penalized_mask_loss=False) as trainer:
        grid = trainer.preview()
        cell = 64  # 32 px crops are shown upscaled to 64 px cells
        head = header_height(cell)
        assert grid.shape == (head + 3 * cell, len(COLUMNS) * cell, 3)
        assert grid.dtype == np.uint8
        assert COLUMNS == ("A", "A>A", "A>B", "B", "B>B", "B>A")
        # column A / B hold the unaugmented preview faces, upscaled
        a0 = cv2.resize(trainer._preview_a[0], (cell, cell), interpolation=cv2.INTER_NEAREST)
        b0 = cv2.resize(trainer._preview_b[0], (cell, cell), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(grid[head : head + cell, 0:cell], a0)
        assert np.array_equal(grid[head : head + cell, 3 * cell : 4 * cell], b0)
        assert grid[:head].std() > 0  # headers are drawn
        path = trainer.write_preview(tmp_path / "previews" / "p.png")
        assert np.array_equal(cv2.imread(str(path)), grid)


def test_preview_tints_what_the_mask_leaves_out_and_keeps_a_timelapse(
        synthetic_sets: dict[str, Path], tmp_path: Path) -> None:
    options = TrainerOptions(learning_rate=1e-3, seed=3, preview_faces=2, timelapse=True)
    with Trainer("lightweight", TINY, options, synthetic_sets["alice"], synthetic_sets["bob"],
                 tmp_path / "m", batch_size=4) as trainer:
        face, mask = trainer._preview_a[0], trainer._preview_mask_a[0]
        assert 0 < (mask > 127).mean() < 1  # a face mask from the landmarks
        shown = trainer.preview_columns()[0][0].astype(int)
        inside, outside = mask == 255, mask == 0
        assert np.array_equal(shown[inside], face[inside])  # the face itself untouched
        redder = shown[outside][:, 2] - face[outside][:, 2].astype(int)
        bluer = shown[outside][:, 0] - face[outside][:, 0].astype(int)
        assert (redder >= 0).all() and (bluer <= 0).all() and redder.mean() > 20
        previews = tmp_path / "m" / "previews"
        trainer.write_preview(previews / "latest.png")
        trainer.step()
        trainer.write_preview(previews / "latest.png")
    assert sorted(p.name for p in (previews / "timelapse").iterdir()) == [
        "00000000.png", "00000001.png"]


def test_refresh_faces_during_training(faces: tuple[Path, Path], tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "m") as trainer:
        trainer.step()
        write_faces(tmp_path / "extra", "b", 2, seed=5)
        for i, path in enumerate(sorted((tmp_path / "extra").iterdir())):
            path.rename(faces[1] / f"new_{i}.png")
        sorted(faces[0].iterdir())[0].unlink()
        assert trainer.refresh_faces() == (2, 1)
        assert len(trainer.set_a) == 11 and len(trainer.set_b) == 14
        assert trainer.step().iteration == 2


def test_trainer_exports_a_to_b(faces: tuple[Path, Path], tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "m") as trainer:
        trainer.step()
        report = export_trainer(trainer, tmp_path / "exports" / "swap.onnx")
        assert report.max_abs_diff <= 1e-3 and report.input_size == 32
        info = read_export_info(report.path)
        assert info["coverage"] == 0.875 and info["model"] == "lightweight"
        assert info["iteration"] == "1"
        crops = to_tensor_layout(trainer.set_a.faces[:2])
        session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
        (got,) = session.run(["swapped"], {"face": crops})
        with torch.no_grad():
            expected = trainer.model(torch.from_numpy(crops), "b").numpy()
        assert np.abs(got - expected).max() <= 1e-3


def test_iae_trains_swaps_and_exports(faces: tuple[Path, Path], tmp_path: Path) -> None:
    options = TrainerOptions(learning_rate=1e-3, seed=3, preview_faces=3)
    with Trainer("iae", TINY, options, faces[0], faces[1], tmp_path / "m", 4) as trainer:
        shared_before = trainer.model.inter_both[0].weight.detach().clone()
        only_a_before = trainer.model.inter_a[0].weight.detach().clone()
        losses = [trainer.step() for _ in range(3)]
        assert all(np.isfinite([s.loss_a, s.loss_b]).all() for s in losses)
        # both sides train the shared block; each side its own
        assert not torch.equal(trainer.model.inter_both[0].weight, shared_before)
        assert not torch.equal(trainer.model.inter_a[0].weight, only_a_before)
        crops = trainer.set_a.faces[:2]
        assert not np.array_equal(trainer.predict(crops, "a"), trainer.predict(crops, "b"))
        report = export_trainer(trainer, tmp_path / "iae.onnx")
        assert report.max_abs_diff <= 1e-3
        assert read_export_info(report.path)["model"] == "iae"


def test_cuda_options_fall_back_cleanly(faces: tuple[Path, Path], tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "m", device="cuda", mixed_precision=True) as trainer:
        assert trainer.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
        stats = trainer.step()
        assert np.isfinite(stats.loss_a) and np.isfinite(stats.loss_b)
        assert trainer.preview().dtype == np.uint8


def test_colour_jitter_changes_the_input_only() -> None:
    rng = np.random.default_rng(3)
    faces = rng.integers(40, 215, size=(6, 32, 32, 3), dtype=np.uint8)
    still = AugmentSettings(warp=False, flip=False, rotation_deg=0, zoom=0, shift=0, colour=True,
                            clahe=0)
    inputs, targets, _ = Augmenter(32, still)(faces, np.random.default_rng(0))
    assert np.array_equal(targets, faces)  # targets keep the identity's true colours
    mean_shift = np.abs(inputs.astype(np.float32).mean(axis=(1, 2))
                        - faces.astype(np.float32).mean(axis=(1, 2)))
    assert (mean_shift.max(axis=1) > 2).all()  # every input's colour moved
    for face, jittered in zip(faces, inputs, strict=True):  # ...but not its structure
        corr = np.corrcoef(face[..., 1].ravel(), jittered[..., 1].ravel())[0, 1]
        assert corr > 0.9


def test_clahe_equalises_a_share_of_the_inputs_only() -> None:
    rng = np.random.default_rng(4)
    # Low-contrast faces: CLAHE spreads their lightness.
    faces = (np.stack([draw_face("a", rng, 64) for _ in range(40)]) // 4 + 96).astype(np.uint8)
    still = dict(warp=False, flip=False, rotation_deg=0, zoom=0, shift=0, colour=False)
    inputs, targets, _ = Augmenter(64, AugmentSettings(**still, clahe=1.0))(faces, rng)
    assert np.array_equal(targets, faces)
    spread = inputs.reshape(40, -1).std(axis=1) / faces.reshape(40, -1).std(axis=1)
    assert (spread > 1.01).all() and spread.mean() > 1.05, spread
    inputs, _, _ = Augmenter(64, AugmentSettings(**still, clahe=0.5))(faces, rng)
    changed = (inputs != faces).reshape(40, -1).any(axis=1)
    assert 10 <= changed.sum() <= 30  # about half
    grey = faces[..., :1]
    inputs, targets, _ = Augmenter(64, AugmentSettings(**still, clahe=1.0))(grey, rng)
    assert inputs.shape == grey.shape and not np.array_equal(inputs, grey)


def test_augmentation_options_reach_the_augmenter(faces: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    trainer = make_trainer(faces, tmp_path / "m", rotation=0, zoom=0.1, shift=0, clahe=0.25,
                           clahe_max_grid=2)
    try:
        settings = trainer.loader._augmenter.settings
        assert (settings.rotation_deg, settings.zoom, settings.shift) == (0, 0.1, 0)
        assert (settings.clahe, settings.clahe_max_grid) == (0.25, 2)
    finally:
        trainer.close()


def tiny_job_run(faces: tuple[Path, Path], tmp_path: Path, name: str, save_every: int,
                 options: str = "") -> tuple[Workspace, Path, StateStore, TrainingRun]:
    """A workspace with the two face sets and the tiny job ``name`` (TINY_JOB, with the TOML
    lines ``options`` added to its [train.options]), its state store and its worker's
    TrainingRun: (workspace, job file, store, run)."""
    from swapd.config import load_job_file
    from swapd.daemon.train_worker import TrainingRun
    from swapd.state import StateStore
    from swapd.workspace import Workspace
    from tests.support import TINY_JOB

    ws = Workspace.open(tmp_path / "ws")
    shutil.copytree(faces[0], ws.face_set("alice"))
    shutil.copytree(faces[1], ws.face_set("bob"))
    job_path = ws.jobs / f"{name}.toml"
    job = TINY_JOB.format(iterations=100, save_every=save_every)
    job_path.write_text(job.replace("[train.options]\n", f"[train.options]\n{options}"))
    store = StateStore(ws.state_db)
    store.upsert_job(name, str(job_path), "train", "training")
    return ws, job_path, store, TrainingRun(ws, name, load_job_file(job_path), store)


def test_training_worker_rolls_back_and_rewrites_its_history(faces: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    ws, _, store, run = tiny_job_run(faces, tmp_path, "nan", save_every=2)
    try:
        for _ in range(3):
            run.driver.step()  # saves at iteration 2
        run.hooks.flush()
        with torch.no_grad():
            run.trainer.model.decoder_a[-2].bias[0] = float("nan")
        run.driver.step()  # refused, rolled back to iteration 2: the worker goes on
        assert run.trainer.iteration == 2 and run.trainer.lr_scale == 0.5
        assert [row[0] for row in store.losses("nan")] == [1, 2]  # iteration 3 was undone
        assert any("rolled back to the checkpoint at 2" in e[3] for e in store.events())
        run.driver.step()
        assert run.trainer.iteration == 3
        # A collapse the loss does not show is caught at the next save, and rolled back too.
        while not run.trainer.drew_faces and run.trainer.iteration < 40:
            run.driver.step()
        assert run.trainer.drew_faces
        saved_at = run.trainer.iteration  # an even one: saves come every 2 iterations
        flatten_outputs(run.trainer)
        run.driver.step()
        run.driver.step()  # the save at saved_at + 2 is refused
        assert run.trainer.iteration == saved_at and run.trainer.lr_scale == 0.25
        assert any(f"flat output at iteration {saved_at + 2}: rolled back to the checkpoint at "
                   f"{saved_at}" in e[3] for e in store.events())
        run.hooks.flush()
        assert max(row[0] for row in store.losses("nan")) == saved_at
        # Stopping with flat faces: the exit's save is refused, the last checkpoint stays.
        run.driver.step()
        flatten_outputs(run.trainer)
        assert run.driver.save("exit") is False
        assert load_checkpoint(ws.model_dir("nan") / "model.pt")["iteration"] == saved_at
        assert any(f"the checkpoint at {saved_at} stays" in e[3] for e in store.events())
    finally:
        run.close()
        store.close()


def test_a_job_starts_from_a_pretrained_model_and_a_wrong_one_is_its_error(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    from swapd.config import load_job_file
    from swapd.daemon.train_worker import TrainingRun
    from tests.support import TINY_JOB

    ws, job_path, store, run = tiny_job_run(faces, tmp_path, "pre", save_every=2)
    run.driver.step()
    run.driver.step()  # saves (save_every = 2)
    run.close()
    pretrained = ws.root / "pretrained" / "pre.pt"
    pretrained.parent.mkdir()
    shutil.copyfile(ws.model_dir("pre") / "model.pt", pretrained)

    job_path = ws.jobs / "new.toml"
    job_path.write_text(TINY_JOB.format(iterations=100, save_every=2).replace(
        "[train.options]", 'start_from = "pretrained/pre.pt"\n\n[train.options]'))
    run = TrainingRun(ws, "new", load_job_file(job_path), store)
    try:
        assert run.trainer.iteration == 0
        assert run.trainer.started_from == {"path": str(pretrained), "iteration": 2}
        start = load_checkpoint(pretrained)["model_state"]
        for key, value in weights(run.trainer).items():
            assert torch.equal(value, start[key]), key
    finally:
        run.close()
    # Another model's options: the job's error names the pretrained file and the option.
    job_path.write_text(job_path.read_text().replace("dense_dim = 64", "dense_dim = 32"))
    shutil.rmtree(ws.model_dir("new"))
    with pytest.raises(OptionsError, match=r"pre\.pt: model options dense_dim differ"):
        TrainingRun(ws, "new", load_job_file(job_path), store)

    # A broken pretrained file is the job's error (no retries), naming the file.
    from swapd.daemon.train_worker import run as run_worker
    from swapd.daemon.workers import EXIT_BAD_INPUT, EXIT_BUSY
    from swapd.fsutil import FolderLock
    from swapd.trainer.checkpoint import LOCK_NAME

    pretrained.write_bytes(b"PK\x03\x04 truncated zip")
    job_path.write_text(job_path.read_text().replace("dense_dim = 32", "dense_dim = 64"))
    store.upsert_job("new", str(job_path), "train", "queued", "lightweight", 100,
                     load_job_file(job_path).model_dump())
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert run_worker(ws, "new") == EXIT_BAD_INPUT
        # A model folder another trainer holds is no bad input: the worker says so (EXIT_BUSY,
        # no traceback), to be tried again.
        held = FolderLock(ws.model_dir("pre") / LOCK_NAME)
        assert held.acquire()
        try:
            store.upsert_job("pre", str(ws.jobs / "pre.toml"), "train", "queued", "lightweight",
                             100, load_job_file(ws.jobs / "pre.toml").model_dump())
            assert run_worker(ws, "pre") == EXIT_BUSY
            assert "in use by another process" in (store.job("pre").error or "")
        finally:
            held.release()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    row = store.job("new")
    store.close()
    assert row is not None and row.state == "error"
    assert f"{pretrained}: truncated or corrupt checkpoint" in (row.error or "")


def test_the_export_control_saves_first_and_never_exports_a_flat_model(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    ws, _, store, run = tiny_job_run(faces, tmp_path, "ctl", save_every=1000)  # saves on request
    export = ws.exports_dir("ctl") / "a_to_b.onnx"
    try:
        for _ in range(15):
            run.driver.step()
        store.request_control("ctl", "export")
        store.request_control("ctl", "stop")
        assert run.driver.train().end == "stopped"
        assert load_checkpoint(ws.model_dir("ctl") / "model.pt")["iteration"] == 15
        assert export.is_file() and run.trainer.drew_faces
        exported = export.stat().st_mtime_ns

        flatten_outputs(run.trainer)
        run.driver.step()  # iteration 16, flat, not saved
        store.request_control("ctl", "export")
        store.request_control("ctl", "stop")
        run.driver.train()
        assert export.stat().st_mtime_ns == exported  # refused, rolled back: nothing exported
        assert run.trainer.iteration == 15
        assert any("flat output at iteration 16" in e[3] for e in store.events())
    finally:
        run.close()
        store.close()


def test_faceswap_faces_train_with_masks_from_found_landmarks(tmp_path: Path) -> None:
    """faceswap's PNGs hold frame landmarks only: the trainer's masks come from landmarks the
    detector places (or the face index's, when it has them), not from an all-face guess."""
    # Head-centred, as faceswap stores faces; the swapd-written originals know their landmarks.
    originals = write_face_set(tmp_path / "swapd", DEMO_A, 4, seed=5, size=128,
                               centering="head")
    folder = tmp_path / "faceswap"
    folder.mkdir()
    truth = {}
    for png in originals:
        image, meta = read_aligned_png(png)
        assert meta is not None and meta.swapd is not None
        truth[png.name] = np.array(meta.swapd["aligned_landmarks"])
        meta.swapd = None  # as faceswap writes it
        write_aligned_png(folder / png.name, image, meta)
    wanted = FaceSet(tmp_path / "swapd", 64, 0.875).masks

    assert FaceSet(folder, 64, 0.875).without_landmarks == 4  # no source: all-face masks

    found = FaceSet(folder, 64, 0.875, find_landmarks=FoundLandmarks())
    assert found.without_landmarks == 0
    face_found, face_wanted = found.masks[..., 0] > 127, wanted[..., 0] > 127
    iou = (face_found & face_wanted).sum() / (face_found | face_wanted).sum()
    print(f"face masks from detected landmarks vs ground truth: IoU {iou:.3f}")
    assert iou > 0.85

    def index(held: Path) -> dict[str, tuple[tuple[int, int], FaceLayout]]:
        """The face index's rows of these files, as if ingest had placed their landmarks."""
        return {path.name: ((path.stat().st_mtime_ns, path.stat().st_size),
                            FaceLayout(truth[path.name], "head")) for path in held.iterdir()}

    indexed = FaceSet(folder, 64, 0.875, index=index,
                      find_landmarks=FoundLandmarks(detector="no-such-plugin"))
    assert indexed.without_landmarks == 0
    np.testing.assert_array_equal(indexed.masks, wanted)


def test_deepfacelab_faces_are_cut_from_their_own_landmarks(tmp_path: Path) -> None:
    """A DFL face's crop follows its 68 landmarks, whatever padding and scale its face type
    used: the same face cut by DFL differently trains on the same pixels as swapd's cut."""
    originals = write_face_set(tmp_path / "swapd", DEMO_A, 3, seed=6, size=256, centering="face")
    reference = FaceSet(tmp_path / "swapd", 64, 0.875)
    folder = tmp_path / "dfl"
    folder.mkdir()
    angle, scale, shift = np.radians(6.0), 0.82, np.array([9.0, -7.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([128.0, 128.0])
    similarity = np.hstack([rotation, (centre - rotation @ centre + shift)[:, None]])
    for png in originals:
        image, meta = read_aligned_png(png)
        assert meta is not None and meta.swapd is not None
        warped = cv2.warpAffine(image, similarity, (256, 256), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT)
        points = np.asarray(meta.swapd["aligned_landmarks"]) @ rotation.T + similarity[:, 2]
        (folder / f"{png.stem}.jpg").write_bytes(encode_dfl_jpg(warped, DFLMeta(
            face_type="whole_face", landmarks=points.astype(np.float32)), quality=98))
    dfl = FaceSet(folder, 64, 0.875)
    assert dfl.without_landmarks == 0
    # Interpolating twice and the JPEG cost a little; a crop off by a few pixels costs far more.
    diff = np.abs(dfl.faces.astype(int) - reference.faces.astype(int)).mean()
    face_dfl, face_ref = dfl.masks[..., 0] > 127, reference.masks[..., 0] > 127
    iou = (face_dfl & face_ref).sum() / (face_dfl | face_ref).sum()
    print(f"DFL crop vs swapd's: mean abs difference {diff:.2f} levels, face mask IoU {iou:.3f}")
    assert diff < 5 and iou > 0.97


def test_training_with_other_losses_and_extras(faces: tuple[Path, Path], tmp_path: Path) -> None:
    trainer = make_trainer(faces, tmp_path / "m", loss="ffl",
                           extra_losses={"gmsd": 0.5, "pixel_gradient_diff": 1.0, "logcosh": 1.0})
    try:
        losses = [trainer.step() for _ in range(4)]
    finally:
        trainer.close()
    assert all(np.isfinite([s.loss_a, s.loss_b]).all() for s in losses)


@pytest.mark.parametrize(("policy", "periodic", "last"),
                         [("always", True, True), ("exit", False, True), ("never", False, False)])
def test_optimizer_state_is_saved_by_policy(faces: tuple[Path, Path], tmp_path: Path,
                                            policy: str, periodic: bool, last: bool) -> None:
    trainer = make_trainer(faces, tmp_path / "m", save_optimizer=policy)
    io = ModelIO(trainer)
    try:
        trainer.step()
        path = io.save()
        assert ("optimizer_state" in load_checkpoint(path)) is periodic
        small = path.stat().st_size
        trainer.step()
        io.save(final=True)
        assert ("optimizer_state" in load_checkpoint(path)) is last
        assert (path.stat().st_size > 1.5 * small) is (last and not periodic)
    finally:
        trainer.close()
    resumed = make_trainer(faces, tmp_path / "m", save_optimizer=policy)
    try:
        assert resumed.iteration == 2
        assert bool(resumed.optimizer.state) is last  # Adam's moments came back, or start afresh
        resumed.step()
    finally:
        resumed.close()


def test_backup_keeps_the_lowest_average_and_restore_brings_it_back(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    trainer = make_trainer(faces, model_dir)
    io = ModelIO(trainer)
    averages = {}
    try:
        for scale in (1.0, 1.0, 300.0):  # the third stretch trains far too fast: worse loss
            trainer.lr_scale = scale
            stats = [trainer.step() for _ in range(4)]
            averages[trainer.iteration] = np.mean([(s.loss_a + s.loss_b) / 2 for s in stats])
            io.save()
    finally:
        trainer.close()
    best = min(averages, key=averages.__getitem__)
    assert best != 12, averages  # the worse stretch did not replace the backup
    info = json.loads((model_dir / "backup" / "backup.json").read_text())
    assert info["iteration"] == best
    assert info["average_loss"] == pytest.approx(averages[best], rel=1e-5)
    assert load_checkpoint(model_dir / "backup" / "model.pt")["iteration"] == best
    assert load_checkpoint(model_dir / "model.pt")["iteration"] == 12

    result = subprocess.run([sys.executable, "-m", "swapd", "model", "restore", str(model_dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"iteration {best}" in result.stdout
    assert load_checkpoint(model_dir / "model.pt")["iteration"] == best
    [replaced] = (model_dir / "replaced").glob("model-12-*.pt")
    assert load_checkpoint(replaced)["iteration"] == 12
    resumed = make_trainer(faces, model_dir)
    resumed_io = ModelIO(resumed)
    try:
        assert resumed.iteration == best and resumed_io.backup == info
    finally:
        resumed.close()

    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-m", "swapd", "model", "restore", str(empty)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no backup to restore" in result.stderr


def test_uniform_yaw_draws_rare_angles_as_often_as_frontal_ones(tmp_path: Path) -> None:
    paths = write_face_set(tmp_path / "all", DEMO_A, 60, seed=8, size=96)
    folder = tmp_path / "skewed"
    folder.mkdir()
    rare = []
    for path in paths:  # keep every near-frontal face and only three turned ones
        _, meta = read_aligned_png(path)
        assert meta is not None and meta.swapd is not None
        yaw = meta.swapd["pose"][0]
        if abs(yaw) < 12 or (abs(yaw) > 22 and len(rare) < 3):
            shutil.copy(path, folder / path.name)
            if abs(yaw) > 22:
                rare.append(folder / path.name)
    assert len(rare) == 3
    shares = {}
    for uniform in (False, True):
        face_set = FaceSet(folder, 32, 0.875, uniform_yaw=uniform)
        rows = [face_set.paths.index(path) for path in rare]
        faces, _ = face_set.sample(np.random.default_rng(0), 4000)
        # Which drawn faces are the turned ones (each crop is unique in this set).
        is_rare = (faces[:, None] == face_set.faces[rows][None]).all(axis=(2, 3, 4)).any(axis=1)
        shares[uniform] = float(is_rare.mean())
    weights = face_set.arrays.weights
    bands = [int(np.floor(face_set._entries[path].yaw / YAW_BAND_DEGREES))  # type: ignore[operator]
             for path in face_set.paths]
    per_band = {band: weights[[i for i, b in enumerate(bands) if b == band]].sum()
                for band in set(bands)}
    expected = float(weights[rows].sum())
    print(f"turned faces drawn: {shares[False]:.1%} plainly, {shares[True]:.1%} by yaw band "
          f"(expected {expected:.1%}; 3 of {len(face_set)} faces, {len(per_band)} bands)")
    assert np.allclose(list(per_band.values()), 1 / len(per_band))  # every band alike
    assert abs(shares[True] - expected) < 0.03
    assert shares[False] < 0.15 and shares[True] > 2 * shares[False]


def test_rollback_without_saved_optimizer_state_starts_it_afresh(faces: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    trainer = make_trainer(faces, tmp_path / "m", save_optimizer="never")
    io = ModelIO(trainer)
    try:
        trainer.step()
        io.save()
        for _ in range(3):
            trainer.step()
        assert trainer.optimizer.state  # the diverging run's moments
        with torch.no_grad():
            trainer.model.decoder_a[-2].bias[0] = float("nan")
        with pytest.raises(NonFiniteLossError) as failure:
            trainer.step()
        assert io.roll_back(failure.value) is not None
        assert trainer.iteration == 1 and not trainer.optimizer.state  # none carried over
        trainer.step()
    finally:
        trainer.close()


def test_a_failed_backup_copy_is_not_counted_and_restore_survives_a_broken_checkpoint(
        faces: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import swapd.trainer.model_io as model_io

    model_dir = tmp_path / "m"
    trainer = make_trainer(faces, model_dir)
    io = ModelIO(trainer)
    try:
        trainer.step()
        io.save()  # the first backup
        first = json.loads((model_dir / "backup" / "backup.json").read_text())

        def disk_full(*args: object, **kwargs: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(model_io, "keep_backup", disk_full)
        trainer.step()
        trainer.losses_since_save = [first["average_loss"] / 2]  # surely a new best
        with pytest.raises(OSError):
            io.save()
        assert io.backup == first  # the copy failed: the old backup still counts
    finally:
        trainer.close()
    monkeypatch.undo()

    (model_dir / "model.pt").write_bytes(b"PK\x03\x04 cut short")  # a broken checkpoint
    result = subprocess.run([sys.executable, "-m", "swapd", "model", "restore", str(model_dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(model_dir / "model.pt")["iteration"] == first["iteration"]
    [kept] = (model_dir / "replaced").glob("model-unreadable-*.pt")
    assert kept.read_bytes() == b"PK\x03\x04 cut short"  # set aside, not lost


def test_this_sessions_optimizer_options_survive_resume_and_rollback(faces: tuple[Path, Path],
                                                                    tmp_path: Path) -> None:
    first = make_trainer(faces, tmp_path / "m", optimizer="adamw", weight_decay=0.1)
    first_io = ModelIO(first)
    try:
        first.step()
        first_io.save()
    finally:
        first.close()
    trainer = make_trainer(faces, tmp_path / "m", optimizer="adamw", weight_decay=0.2, beta1=0.3)
    io = ModelIO(trainer)
    try:
        def settings() -> tuple:
            group = trainer.optimizer.param_groups[0]
            return group["betas"][0], group["weight_decay"]

        assert settings() == (0.3, 0.2)  # resumed with this session's options
        trainer.step()
        with torch.no_grad():
            trainer.model.decoder_a[-2].bias[0] = float("nan")
        with pytest.raises(NonFiniteLossError) as failure:
            trainer.step()
        assert io.roll_back(failure.value) is not None
        assert settings() == (0.3, 0.2)  # ...and after rolling back to the old checkpoint
    finally:
        trainer.close()


def test_a_model_saved_before_newer_options_existed_resumes_with_its_backup(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    """A checkpoint and backup written before learn_mask, grayscale, mask_decoder and
    mask_loss_weight existed: the model resumes (the missing options are their defaults, the
    architecture it was built with) and a worse save does not push its best backup aside."""
    model_dir = tmp_path / "m"
    with make_trainer(faces, model_dir) as trainer:
        io = ModelIO(trainer)
        for _ in range(3):
            trainer.step()
        io.save()
    state = load_checkpoint(model_dir / "model.pt")
    for key in ("learn_mask", "grayscale", "mask_decoder"):
        del state["model_options"][key]
    save_checkpoint(model_dir / "model.pt", state)
    info_path = model_dir / "backup" / "backup.json"
    info = json.loads(info_path.read_text())
    assert "mask_loss_weight" not in info["loss_settings"]  # only for models with a mask
    del info["loss_settings"]["mask_dilation"]  # as if written before the option existed
    info_path.write_text(json.dumps(info))

    with make_trainer(faces, model_dir) as resumed:
        resumed_io = ModelIO(resumed)
        assert resumed.iteration == 3
        resumed.lr_scale = 300.0  # far too fast: a worse average than the backup's
        for _ in range(3):
            resumed.step()
        resumed_io.save()
    assert sorted(p.name for p in (model_dir / "backup").iterdir()) == ["backup.json",
                                                                       "model.pt"]
    assert json.loads(info_path.read_text())["iteration"] == 3

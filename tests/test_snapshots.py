"""Snapshots: taken every N iterations by `swapd train` and by the training worker, kept by
policy, listed, and restored; real checkpoints on disk, real processes."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from swapd.exporter.onnx_export import read_export_info
from swapd.merger.session import SwapSession
from swapd.state import StateStore
from swapd.trainer.checkpoint import ModelBusyError, load_checkpoint
from swapd.trainer.data import to_tensor_layout
from swapd.trainer.model_io import ModelIO
from swapd.trainer.options import OptionsError
from swapd.trainer.snapshots import list_snapshots, prune_snapshots, take_snapshot, to_keep
from swapd.trainer.tracker import pick_even_over_yaw, read_tracked, track
from tests.support import make_trainer
from tests.test_train_cli import TINY, swapd


def test_policies_choose_which_snapshots_stay() -> None:
    every_1000 = list(range(1000, 20_001, 1000))
    assert to_keep(every_1000, "all", 3) == set(every_1000)
    assert to_keep(every_1000, "last", 3) == {18_000, 19_000, 20_000}
    # Thinned: the newest three, and the first of each span 512-1023, 1024-2047, 2048-4095...
    assert to_keep(every_1000, "thinned", 3) == {18_000, 19_000, 20_000, 17_000, 9000, 5000,
                                                 3000, 2000, 1000}
    # Applied after every snapshot or once, the same snapshots stay.
    kept: set[int] = set()
    for end in range(1, len(every_1000) + 1):
        kept = to_keep(sorted(kept | {every_1000[end - 1]}), "thinned", 3)
    assert kept == to_keep(every_1000, "thinned", 3)
    assert to_keep([], "thinned", 3) == set()


def test_interrupted_snapshots_are_cleared_once_a_newer_one_is_complete(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"a checkpoint")
    (tmp_path / "snapshots" / "00000003").mkdir(parents=True)  # killed while copying
    (tmp_path / "snapshots" / "00000003" / "model.pt").write_bytes(b"a chec")
    (tmp_path / "snapshots" / "00000009").mkdir()  # newer: may be being written right now
    take_snapshot(checkpoint, 5, {})
    assert prune_snapshots(tmp_path, "all", 10) == []
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["00000005",
                                                                          "00000009"]


def test_train_keeps_snapshots_that_list_and_restore(synthetic_sets: dict[str, Path],
                                                     tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    common = ["train", "--model", "lightweight", "-A", str(synthetic_sets["alice"]), "-B",
              str(synthetic_sets["bob"]), "--model-dir", str(model_dir), "--batch-size", "4",
              "--save-every", "3", "--snapshot-every", "2", "--snapshot-policy", "last",
              "--snapshot-keep", "2", *TINY]
    result = swapd(*common, "--iterations", "6")
    assert result.returncode == 0, result.stderr
    assert [s.iteration for s in list_snapshots(model_dir)] == [4, 6]  # 2 was pruned
    for snap in list_snapshots(model_dir):
        assert load_checkpoint(snap.checkpoint)["iteration"] == snap.iteration
        tracked = read_tracked(snap.folder)  # every face of both sets, with its images
        assert len(tracked) == len(list(synthetic_sets["alice"].glob("*.png"))) + len(
            list(synthetic_sets["bob"].glob("*.png")))
        assert all((snap.folder / "tracker" / t.recon).is_file() for t in tracked)
    (model_dir / "snapshots" / "00000008").mkdir()  # an interrupted snapshot: no info file

    listing = swapd("model", "snapshots", str(model_dir), "--json")
    assert listing.returncode == 0, listing.stderr
    info = json.loads(listing.stdout)
    assert [s["iteration"] for s in info["snapshots"]] == [4, 6]
    assert all(s["average_loss"] > 0 for s in info["snapshots"])
    assert info["backup"]["iteration"] in (3, 4, 6)

    restored = swapd("model", "restore", str(model_dir), "--snapshot", "4")
    assert restored.returncode == 0, restored.stderr
    assert load_checkpoint(model_dir / "model.pt")["iteration"] == 4
    [replaced] = (model_dir / "replaced").glob("model-6-*.pt")
    assert load_checkpoint(replaced)["iteration"] == 6
    # Going back to 4 set the later snapshot aside (not deleted), out of the policy's way.
    assert [s.iteration for s in list_snapshots(model_dir)] == [4]
    [aside] = (model_dir / "snapshots").glob("abandoned-*")
    assert load_checkpoint(aside / "00000006" / "model.pt")["iteration"] == 6
    missing = swapd("model", "restore", str(model_dir), "--snapshot", "5")
    assert missing.returncode == 2 and "no snapshot at iteration 5 (have: 4)" in missing.stderr

    # A snapshot exports on its own (parity checked on the A faces), beside the other exports.
    exported = swapd("model", "export", str(model_dir), "--snapshot", "4", "--faces",
                     str(synthetic_sets["alice"]))
    assert exported.returncode == 0, exported.stderr
    onnx_path = model_dir / "exports" / "a_to_b_4.onnx"
    assert read_export_info(onnx_path)["iteration"] == "4"
    session = SwapSession(onnx_path)
    swapped = session.swap(np.zeros((2, 32, 32, 3), np.uint8))
    assert swapped.shape == (2, 32, 32, 3)
    current = swapd("model", "export", str(model_dir))  # the checkpoint, random faces
    assert current.returncode == 0, current.stderr
    assert read_export_info(model_dir / "exports" / "a_to_b.onnx")["iteration"] == "4"

    resumed = swapd(*common, "--iterations", "5")
    assert resumed.returncode == 0, resumed.stderr
    assert "at iteration 5" in resumed.stdout


def test_the_training_worker_takes_snapshots(faces: tuple[Path, Path], tmp_path: Path) -> None:
    from swapd.config import load_job_file
    from swapd.daemon.train_worker import TrainingRun
    from swapd.state import StateStore
    from swapd.workspace import Workspace
    from tests.support import TINY_JOB

    ws = Workspace.open(tmp_path / "ws")
    shutil.copytree(faces[0], ws.face_set("alice"))
    shutil.copytree(faces[1], ws.face_set("bob"))
    job_path = ws.jobs / "snaps.toml"
    job_path.write_text(TINY_JOB.format(iterations=100, save_every=2).replace(
        "save_every = 2", "save_every = 2\nsnapshot_every = 2\nsnapshot_policy = \"thinned\"\n"
        "snapshot_keep = 1"))
    store = StateStore(ws.state_db)
    store.upsert_job("snaps", str(job_path), "train", "training")
    run = TrainingRun(ws, "snaps", load_job_file(job_path), store)
    assert run.trainer.lr_schedule_end == 100  # the job's target: where a cosine would end
    try:
        for _ in range(12):
            run.driver.step()
    finally:
        run.close()
    # Snapshots at 2, 4, ..., 12; thinned keeping one: 12, and the first of 2-3, 4-7, 8-15.
    assert [s.iteration for s in list_snapshots(ws.model_dir("snaps"))] == [2, 4, 8, 12]
    assert sum("snapshot at iteration" in e[3] for e in store.events()) == 6
    # The tracker rows follow the snapshots kept; every face of both sets, at each.
    sides = {(row["iteration"], row["side"]): row["faces"]
             for row in store.tracker_snapshots("snaps")}
    counts = {"a": len(list(faces[0].glob("*.png"))), "b": len(list(faces[1].glob("*.png")))}
    assert sides == {(i, side): counts[side] for i in (2, 4, 8, 12) for side in "ab"}
    worst = store.tracked_faces("snaps", 12, "a", order="loss", limit=3)
    assert len(worst) == 3 and worst[0]["loss"] >= worst[1]["loss"] >= worst[2]["loss"] > 0
    folder = ws.model_dir("snaps") / "snapshots" / "00000012" / "tracker"
    image = cv2.imread(str(folder / worst[0]["recon"]))
    assert image is not None and image.shape == (32, 32, 3)
    assert cv2.imread(str(folder / worst[0]["swap"])) is not None
    assert all(row["swap"] is None for row in store.tracked_faces("snaps", 12, "b"))
    timeline = store.face_timeline("snaps", "a", worst[0]["face"])
    assert [row["iteration"] for row in timeline] == [2, 4, 8, 12]
    # Every iteration's loss went to the database with its components, which add up to it.
    losses = list(store.iter_losses("snaps"))
    assert [row[0] for row in losses] == list(range(1, 13))
    _, _, loss_a, _, parts = losses[-1]
    assert set(parts["a"]) == {"ssim", "mae", "eyes", "mouth"}
    assert sum(parts["a"].values()) == pytest.approx(loss_a, rel=1e-4)
    store.close()


def test_tracker_losses_are_the_training_loss_face_by_face(faces: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    trainer = make_trainer(faces, tmp_path / "m")
    try:
        trainer.step()
        crops, masks = trainer.set_a.faces[:6], trainer.set_a.masks[:6]
        outputs, losses = trainer.evaluate(crops, masks, "a")
        assert outputs.shape == crops.shape and losses.shape == (6,)
        with torch.no_grad():
            trainer.model.eval()
            inputs = torch.from_numpy(to_tensor_layout(crops))
            with trainer.precision.autocast():  # as training runs the model (bf16 or not)
                output = trainer.model(inputs, "a")
            batch_loss = trainer._loss_fn(output.float(), inputs,
                                          torch.from_numpy(to_tensor_layout(masks)))
        assert losses.mean() == pytest.approx(float(batch_loss), rel=1e-4)
    finally:
        trainer.close()


def test_tracked_faces_are_picked_evenly_over_yaw() -> None:
    yaws = np.array([0.0, 1, 2, 3, 4, 5, 30, np.nan, -30, -29])
    assert sorted(yaws[pick_even_over_yaw(yaws, 3)]) == [-30, 2, 30]  # the ends, the middle
    assert np.isnan(yaws[pick_even_over_yaw(yaws, 10)]).sum() == 1
    few_known = np.array([1.0, np.nan, np.nan])
    assert np.isnan(few_known[pick_even_over_yaw(few_known, 2)]).sum() == 1
    assert list(pick_even_over_yaw(yaws, 0)) == list(range(10))


# -- the model folder under changes: review regressions -------------------------------------


def test_a_backup_under_other_loss_settings_is_set_aside_not_compared(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    with make_trainer(faces, model_dir) as trainer:
        io = ModelIO(trainer)
        trainer.step()
        io.save()
    first = json.loads((model_dir / "backup" / "backup.json").read_text())
    # MSE alone gives far smaller numbers than SSIM + MAE: they must not be compared.
    with make_trainer(faces, model_dir, loss="mse", extra_losses={}) as trainer:
        io = ModelIO(trainer)
        trainer.step()
        io.save()
    now = json.loads((model_dir / "backup" / "backup.json").read_text())
    assert now["iteration"] == 2 and now["loss_settings"]["loss"] == "mse"
    [aside] = (model_dir / "backup").glob("superseded-*")
    assert json.loads((aside / "backup.json").read_text()) == first
    assert load_checkpoint(aside / "model.pt")["iteration"] == 1


def test_one_trainer_per_model_folder_and_no_restore_under_it(faces: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    trainer = make_trainer(faces, model_dir)
    io = ModelIO(trainer)
    try:
        trainer.step()
        io.save()
        with pytest.raises(ModelBusyError, match="another trainer"):
            make_trainer(faces, model_dir)
        refused = swapd("model", "restore", str(model_dir))
        assert refused.returncode == 2 and "stop it first" in refused.stderr
    finally:
        trainer.close()
    assert swapd("model", "restore", str(model_dir)).returncode == 0  # free again


def test_restoring_twice_keeps_both_replaced_checkpoints(faces: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    for _ in range(2):  # train from the backup to iteration 3 again, then go back again
        trainer = make_trainer(faces, model_dir)
        io = ModelIO(trainer)
        try:
            while trainer.iteration < 3:
                trainer.step()
                io.save()
        finally:
            trainer.close()
        assert swapd("model", "restore", str(model_dir)).returncode == 0
    assert len(list((model_dir / "replaced").glob("model-3-*.pt"))) == 2


def test_the_snapshot_just_taken_is_never_pruned(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"a checkpoint")
    for iteration in (4, 3):  # 3 taken after going back from 4
        take_snapshot(checkpoint, iteration, {})
    assert prune_snapshots(tmp_path, "last", 1, just_taken=3) == []
    assert prune_snapshots(tmp_path, "last", 1) == [3]


def test_stale_temp_files_of_interrupted_copies_are_cleared(faces: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    stale = [model_dir / ".model.pt.abc.tmp", model_dir / "backup" / ".model.pt.x1.tmp",
             model_dir / "replaced" / ".model.pt.x2.tmp",
             model_dir / "snapshots" / "00000002" / ".model.pt.x3.tmp"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a checkpoint")
    make_trainer(faces, model_dir).close()
    assert not any(path.exists() for path in stale)


def test_losses_that_cannot_work_at_the_model_size_fail_when_the_trainer_is_made(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match="ms_ssim needs faces larger than 32 px"):
        make_trainer(faces, tmp_path / "m", loss="ms_ssim")  # the tiny model is 32 px


def test_tracker_rows_for_faces_of_the_same_stem_and_a_loss_that_is_not_finite(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    folder = tmp_path / "a"
    shutil.copytree(faces[0], folder)
    first = sorted(folder.glob("*.png"))[0]
    cv2.imwrite(str(first.with_suffix(".jpg")), cv2.imread(str(first)))  # a.png and a.jpg
    trainer = make_trainer((folder, faces[1]), tmp_path / "m")
    try:
        tracked = track(trainer, (trainer.set_a, trainer.set_b), tmp_path / "snap", cap=0)
    finally:
        trainer.close()
    images = [t.recon for t in tracked if t.side == "a"]
    assert len(images) == len(set(images)) == len(list(folder.iterdir()))
    assert all((tmp_path / "snap" / "tracker" / image).is_file() for image in images)

    store = StateStore(tmp_path / "state.db")
    store.add_tracked_faces("j", 5, [replace(tracked[0], loss=None), *tracked[1:]])
    worst = store.tracked_faces("j", 5, tracked[0].side, limit=1000)
    assert worst[-1]["loss"] is None  # stored, and listed after every finite loss
    store.close()


def test_model_snapshots_of_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    result = swapd("model", "snapshots", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "no such model folder" in result.stderr

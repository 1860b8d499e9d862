"""Snapshots: taken every N iterations by `swapd train` and by the training worker, kept by
policy, listed, and restored; real checkpoints on disk, real processes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from swapd.trainer.checkpoint import load_checkpoint
from swapd.trainer.snapshots import list_snapshots, to_keep
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
    assert load_checkpoint(model_dir / "replaced" / "model-6.pt")["iteration"] == 6
    missing = swapd("model", "restore", str(model_dir), "--snapshot", "5")
    assert missing.returncode == 2 and "no snapshot at iteration 5 (have: 4, 6)" in missing.stderr

    resumed = swapd(*common, "--iterations", "5")
    assert resumed.returncode == 0, resumed.stderr
    assert "at iteration 5" in resumed.stdout


def test_the_training_worker_takes_snapshots(faces: tuple[Path, Path], tmp_path: Path) -> None:
    from swapd.config import load_job_file
    from swapd.daemon.state import StateStore
    from swapd.daemon.train_worker import TrainingRun
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
    try:
        for _ in range(12):
            run.step()
    finally:
        run.close()
    # Snapshots at 2, 4, ..., 12; thinned keeping one: 12, and the first of 2-3, 4-7, 8-15.
    assert [s.iteration for s in list_snapshots(ws.model_dir("snaps"))] == [2, 4, 8, 12]
    assert sum("snapshot at iteration" in e[3] for e in store.events()) == 6
    store.close()

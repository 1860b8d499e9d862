"""`swapd model compare`: two snapshots' tracker data side by side, run as a real process."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from swapd.trainer.loop import Trainer
from swapd.trainer.model_io import ModelIO
from swapd.trainer.options import TrainerOptions
from swapd.trainer.tracker import read_tracked
from tests.support import TINY
from tests.test_train_cli import swapd


def test_compare_reports_each_faces_change_and_draws_them(synthetic_sets: dict[str, Path],
                                                          tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    options = TrainerOptions(learning_rate=1e-3, seed=3, preview_faces=2)
    with Trainer("lightweight", TINY, options, synthetic_sets["alice"], synthetic_sets["bob"],
                 model_dir, batch_size=8) as trainer:
        io = ModelIO(trainer)
        trainer.step()
        early = io.snapshot(tracker_faces=6)
        for _ in range(25):
            trainer.step()
        late = io.snapshot(tracker_faces=6)
        trainer.step()
        untracked = io.snapshot(tracker=False).snapshot.iteration

    image = tmp_path / "compare.png"
    result = swapd("model", "compare", str(model_dir), "1", "26", "--json", "--top", "3",
                   "--image", str(image))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["first"], report["second"]) == (1, 26)
    before = {(f.side, f.face): f.loss for f in read_tracked(early.snapshot.folder)}
    after = {(f.side, f.face): f.loss for f in read_tracked(late.snapshot.folder)}
    shown = 0
    for side in report["sides"]:
        keys = [k for k in before if k[0] == side["side"]]
        assert side["faces"] == len(keys) == 6
        assert np.isclose(side["mean_before"], np.mean([before[k] for k in keys]))
        assert np.isclose(side["mean_after"], np.mean([after[k] for k in keys]))
        changes = sorted(after[k] - before[k] for k in keys)
        assert side["improved"] == sum(c < 0 for c in changes)
        assert side["improved"] >= 4  # 25 steps made most faces better
        listed = [c["change"] for c in side["most_improved"]]
        assert np.allclose(listed, changes[:len(listed)]) and len(listed) == 3
        shown += len(side["most_improved"]) + len(side["most_worsened"])
    grid = cv2.imread(str(image))
    assert grid is not None and grid.shape[0] == shown * 96 and grid.shape[1] == 6 + 4 * 96

    text = swapd("model", "compare", str(model_dir), "1", "26")
    assert text.returncode == 0 and "snapshots 1 -> 26" in text.stdout
    assert "side A: 6 faces, mean loss" in text.stdout

    missing = swapd("model", "compare", str(model_dir), "1", "999")
    assert missing.returncode == 2 and "999" in missing.stderr
    bare = swapd("model", "compare", str(model_dir), "1", str(untracked))
    assert bare.returncode == 2 and "no tracker data" in bare.stderr

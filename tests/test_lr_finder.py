"""The learning-rate finder: a search that trains nothing, faceswap's strengths and modes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from swapd.trainer.checkpoint import load_checkpoint
from swapd.trainer.lr_finder import STRENGTH, find_learning_rate
from tests.support import make_trainer
from tests.test_train_cli import TINY, swapd


def test_the_search_leaves_the_model_as_it_was(faces: tuple[Path, Path], tmp_path: Path) -> None:
    trainer = make_trainer(faces, tmp_path / "m")
    try:
        trainer.step()
        weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        moments = trainer.optimizer.state_dict()["state"][0]["exp_avg"].clone()
        result = find_learning_rate(trainer, 40, "aggressive", graph_dir=tmp_path / "graphs")
        assert trainer.iteration == 1 and trainer.lr_override is None
        assert trainer.sessions[-1] is trainer.session  # the session record still tracked
        assert trainer.session["iterations"] == 1
        for name, value in trainer.model.state_dict().items():
            assert torch.equal(value, weights[name]), name
        assert torch.equal(trainer.optimizer.state_dict()["state"][0]["exp_avg"], moments)
        trainer.step()  # and training goes on from there
    finally:
        trainer.close()
    assert np.all(np.diff(result.learning_rates) > 0)  # exponentially rising
    assert len(result.learning_rates) == len(result.losses) <= 40
    skip = len(result.losses) // 10  # the first tenth only wanders
    assert result.best == result.learning_rates[skip + int(np.argmin(result.losses[skip:]))]
    assert result.chosen == pytest.approx(result.best / STRENGTH["aggressive"])
    assert STRENGTH == {"default": 10.0, "aggressive": 5.0, "extreme": 2.5}  # faceswap's
    assert result.graph is not None and cv2.imread(str(result.graph)) is not None


def test_train_finds_its_learning_rate_once_or_only_draws_the_graph(
        synthetic_sets: dict[str, Path], tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    common = ["train", "--model", "lightweight", "-A", str(synthetic_sets["alice"]), "-B",
              str(synthetic_sets["bob"]), "--model-dir", str(model_dir), "--batch-size", "4",
              *TINY, "--set", "lr_finder_iterations=80"]
    only_graph = swapd(*common, "--set", "lr_finder=graph_and_exit", "--iterations", "5")
    assert only_graph.returncode == 0, only_graph.stderr
    assert len(list((model_dir / "lr_finder").glob("*.png"))) == 1
    assert not (model_dir / "model.pt").exists()  # nothing trained
    assert f"nothing saved in {model_dir}" in only_graph.stdout

    found = swapd(*common, "--set", "lr_finder=set", "--iterations", "2")
    assert found.returncode == 0, found.stderr
    assert "learning-rate finder" in found.stderr
    state = load_checkpoint(model_dir / "model.pt")
    found_rate = state["lr_found"]["rate"]
    assert state["iteration"] == 2 and found_rate > 0
    assert state["trainer_options"]["learning_rate"] == found_rate
    assert state["lr_found"]["found_for"] == {"learning_rate": 1e-3, "strength": "default",
                                              "batch_size": 4}

    again = swapd(*common, "--set", "lr_finder=set", "--iterations", "3")
    assert again.returncode == 0, again.stderr
    assert "learning-rate finder" not in again.stderr  # the rate found is reused
    assert "found by an earlier search" in again.stderr
    assert load_checkpoint(model_dir / "model.pt")["lr_found"] == state["lr_found"]

    # Another strength: what the rate was found for changed, so it searches again.
    other = swapd(*common, "--set", "lr_finder=set", "--set", "lr_finder_strength=extreme",
                  "--iterations", "4")
    assert other.returncode == 0, other.stderr
    assert "learning-rate finder" in other.stderr
    assert load_checkpoint(model_dir / "model.pt")["lr_found"]["found_for"]["strength"] == (
        "extreme")

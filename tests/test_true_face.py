"""DeepFaceLab's true face (``true_face_power``): the code discriminator learns to tell the
sides' codes apart, its term teaches the encoder alone to make B's codes pass for A's, it is
kept in the checkpoint, and models or jobs that cannot have it are told so."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from swapd.config import ConfigError, load_job_file
from swapd.daemon.jobs import validate_job
from swapd.state import StateStore
from swapd.trainer.checkpoint import load_checkpoint
from swapd.trainer.divergence import NonFiniteLossError
from swapd.trainer.loop import Trainer
from swapd.trainer.lr_finder import find_learning_rate
from swapd.trainer.model_io import ModelIO
from swapd.trainer.options import OptionsError, split_options
from swapd.workspace import Workspace
from tests.support import make_trainer
from tests.test_trainer import tiny_job_run


def _codes(trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
    """The codes of one batch of A's and of B's faces, as the training step makes them."""
    batch = trainer.loader.get()
    with torch.no_grad():
        return (trainer.model.encode(torch.from_numpy(batch.input_a)),
                trainer.model.encode(torch.from_numpy(batch.input_b)))


def _score_b(trainer: Trainer, code_b: torch.Tensor) -> float:
    """How much the discriminator takes B's codes for A's (its mean logit)."""
    with torch.no_grad():
        return float(trainer.true_face.discriminator(code_b).mean())


def test_the_discriminator_tells_the_codes_apart_and_the_encoder_alone_learns_to_fool_it(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "model", true_face_power=0.5) as trainer:
        true_face = trainer.true_face
        assert true_face is not None
        # Codes of the model's shape, B's a little off A's: the discriminator learns to tell
        # them apart. (A young tiny model's codes of two people differ by less than this.)
        code_a, _ = _codes(trainer)
        generator = torch.Generator().manual_seed(0)
        noise = torch.randn((2, *code_a.shape), generator=generator)
        code_a, code_b = 1.0 + 0.2 * noise[0], 1.05 + 0.2 * noise[1]
        losses = [true_face.train_step(code_a, code_b, 1e-3) for _ in range(100)]
        assert losses[0] > 0.6  # about log 2: it cannot tell them apart yet
        assert losses[-1] < 0.2, losses[-1]

        # Its term (B's codes scored as A's) reaches the encoder only.
        model = trainer.model
        model.zero_grad(set_to_none=True)
        true_face.discriminator.zero_grad(set_to_none=True)
        batch_b = torch.from_numpy(trainer.loader.get().input_b)
        true_face.generator_loss(model.encode(batch_b)).backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0
                   for p in model.encoder.parameters())
        for part in (model.decoder_a, model.decoder_b, true_face.discriminator):
            assert all(p.grad is None for p in part.parameters())

        # Steps on that term alone make B's codes pass for A's with the discriminator fixed.
        before = _score_b(trainer, model.encode(batch_b))  # low: B's codes are not A's
        encoder_steps = torch.optim.Adam(model.encoder.parameters(), lr=1e-3)
        for _ in range(20):
            encoder_steps.zero_grad(set_to_none=True)
            true_face.generator_loss(model.encode(batch_b)).backward()
            encoder_steps.step()
        assert _score_b(trainer, model.encode(batch_b)) > before + 1.0


def test_training_reports_the_term_and_resumes_the_discriminator(faces: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    with make_trainer(faces, model_dir, true_face_power=0.1) as trainer:
        io = ModelIO(trainer)
        first = [p.detach().clone() for p in trainer.true_face.discriminator.parameters()]
        stats = [trainer.step() for _ in range(4)][-1]
        # B's side carries the term; the components still add up to each side's loss.
        assert "true_face" in stats.components_b and "true_face" not in stats.components_a
        assert 0 < stats.components_b["true_face"] < 0.1 * 2
        assert stats.discriminator_loss is not None and 0.4 < stats.discriminator_loss < 1.0
        assert stats.loss_b == pytest.approx(sum(stats.components_b.values()), rel=1e-5)
        assert stats.loss_a == pytest.approx(sum(stats.components_a.values()), rel=1e-5)
        trained = [p.detach().clone() for p in trainer.true_face.discriminator.parameters()]
        assert any(not torch.equal(a, b) for a, b in zip(first, trained, strict=True))
        moments = trainer.true_face.optimizer.state_dict()["state"][0]["exp_avg"].clone()
        io.save()

    with make_trainer(faces, model_dir, true_face_power=0.1) as resumed:
        assert resumed.iteration == 4
        for saved, loaded in zip(trained, resumed.true_face.discriminator.parameters(),
                                 strict=True):
            assert torch.equal(saved, loaded)
        assert torch.equal(resumed.true_face.optimizer.state_dict()["state"][0]["exp_avg"],
                           moments)
    # Turned off, the model trains on without it (and without the term in B's loss).
    with make_trainer(faces, model_dir) as plain:
        assert plain.true_face is None
        stats = plain.step()
        assert "true_face" not in stats.components_b and stats.discriminator_loss is None


def test_true_face_needs_one_code_for_both_sides(tmp_path: Path) -> None:
    for model, options in (("lightweight", {}), ("original", {}),
                           ("dfl_sae", {"architecture": "df"}),
                           ("saehd", {"archi": "df-ud"})):
        split_options(model, {**options, "true_face_power": 0.01})
    for model, options in (("iae", {}), ("dfl_sae", {"architecture": "liae"}),
                           ("saehd", {"archi": "liae-ud"})):
        with pytest.raises(OptionsError, match="true_face_power needs a model that draws "
                                               "both sides from one code"):
            split_options(model, {**options, "true_face_power": 0.01})
        split_options(model, {**options, "true_face_power": 0.0})

    # In a job file, the job check names the options table.
    ws = Workspace.open(tmp_path / "ws")
    (ws.faces / "a").mkdir()
    job = tmp_path / "x.toml"
    job.write_text('[train]\na = "faces/a"\nb = "faces/a"\nmodel = "iae"\n'
                   '[train.options]\ntrue_face_power = 0.01\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        validate_job(ws, load_job_file(job), "jobs/x.toml")
    assert caught.value.problems[0][0] == "train.options"
    assert "true_face_power" in caught.value.problems[0][1]


def _discriminator(trainer: Trainer) -> list[torch.Tensor]:
    assert trainer.true_face is not None
    return [p.detach().clone() for p in trainer.true_face.discriminator.parameters()]


def _same(first: list[torch.Tensor], second: list[torch.Tensor]) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_the_discriminator_survives_the_finder_and_a_change_of_optimizer_and_rolls_back(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    with make_trainer(faces, model_dir, true_face_power=0.1, accumulate=2) as trainer:
        io = ModelIO(trainer)
        for _ in range(3):  # two batches a step: one discriminator step on both
            trainer.step()
        before = _discriminator(trainer)
        moments = trainer.true_face.optimizer.state_dict()["state"][0]["exp_avg"].clone()
        # The learning-rate finder's search trains nothing: the discriminator neither.
        find_learning_rate(trainer, 12)
        assert _same(_discriminator(trainer), before)
        assert torch.equal(trainer.true_face.optimizer.state_dict()["state"][0]["exp_avg"],
                           moments)
        io.save()

    # Another optimizer next session: the discriminator's weights stay, its moments start
    # afresh (an Adam state does not fit RMSprop), and it trains.
    with make_trainer(faces, model_dir, true_face_power=0.1, optimizer="rmsprop") as resumed:
        assert _same(_discriminator(resumed), before)
        assert not resumed.true_face.optimizer.state
        resumed.step()
        assert not _same(_discriminator(resumed), before)

    # save_optimizer = "never": the discriminator's optimizer state is not saved either.
    with make_trainer(faces, tmp_path / "lean", true_face_power=0.1,
                      save_optimizer="never") as lean:
        lean_io = ModelIO(lean)
        lean.step()
        lean_io.save()
    assert set(load_checkpoint(tmp_path / "lean" / "model.pt")["true_face"]) == {
        "discriminator"}

    # Turned on after the last save, a rollback does not keep the diverged run's discriminator.
    with make_trainer(faces, tmp_path / "late") as plain:
        plain_io = ModelIO(plain)
        plain.step()
        plain_io.save()
    with make_trainer(faces, tmp_path / "late", true_face_power=0.1) as late:
        late_io = ModelIO(late)
        for _ in range(3):
            late.step()
        trained = _discriminator(late)
        assert late_io.roll_back(NonFiniteLossError(late.iteration, math.nan, 0.0))
        assert late.iteration == 1
        assert not late.true_face.optimizer.state
        assert not any(torch.equal(a, b) for a, b in zip(_discriminator(late), trained,
                                                          strict=True))


def test_the_worker_records_the_discriminators_loss_and_swapd_losses_exports_it(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    ws, _, store, run = tiny_job_run(faces, tmp_path, "tf", save_every=50,
                                     options="true_face_power = 0.1\n")
    try:
        for _ in range(3):
            run.driver.step()
        run.hooks.flush()
    finally:
        run.close()
        store.close()
    reader = StateStore(ws.state_db)
    try:
        rows = list(reader.iter_losses("tf"))
    finally:
        reader.close()
    assert [row[0] for row in rows] == [1, 2, 3]
    for *_, components in rows:
        assert 0.4 < components["true_face"]["discriminator"] < 1.0  # about log 2 at first
        assert "true_face" in components["b"]
    out = tmp_path / "losses.csv"
    result = subprocess.run([sys.executable, "-m", "swapd", "losses", "tf", "--workspace",
                             str(ws.root), "--output", str(out)], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert result.returncode == 0, result.stderr
    table = list(csv.DictReader(out.open()))
    assert [float(row["true_face_discriminator"]) for row in table] == [
        pytest.approx(components["true_face"]["discriminator"]) for *_, components in rows]

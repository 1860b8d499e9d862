"""The training state (TrainState) round trips: the learning-rate finder, a rollback and a resume
each put back every field of it, compared one by one. The fields are read from the dataclass,
so a field added later is compared too; a lived-in trainer must give every field a value of
its own (else the comparisons could not see it), and the first test says which one it lacks.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import torch

from swapd.trainer.checkpoint import load_checkpoint
from swapd.trainer.divergence import NonFiniteLossError
from swapd.trainer.loop import Trainer
from swapd.trainer.lr_finder import find_learning_rate
from swapd.trainer.model_io import ModelIO
from swapd.trainer.options import TrainerOptions
from swapd.trainer.state import KEPT_BY_ROLLBACK, TrainState
from tests.support import TINY, make_trainer

# The options every trainer here shares: each one gives a field of the state a value.
OPTIONS: dict[str, Any] = {"true_face_power": 0.1, "autoclip": True}
# Fields no training on this machine can set apart from a fresh trainer's: which optimizer the
# state is for is the session's option (the same for both), and fp16's loss scale exists on
# CUDA only.
ALIKE_WHEN_FRESH = {"optimizer_name"} | (set() if torch.cuda.is_available() else {"grad_scaler"})


def same(a: object, b: object) -> bool:
    """Deep equality of state values: tensors by value, containers element by element. The
    rate in an optimizer's parameter groups is left out: every step sets it afresh (from the
    schedule, lr_scale, the finder), so it is not state."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.cpu(), b.cpu()))
    if isinstance(a, dict) and isinstance(b, dict):
        if "param_groups" in a and "param_groups" in b:
            a = {**a, "param_groups": [{k: v for k, v in g.items() if k != "lr"}
                                       for g in a["param_groups"]]}
            b = {**b, "param_groups": [{k: v for k, v in g.items() if k != "lr"}
                                       for g in b["param_groups"]]}
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True  # a rollback's record of a NaN loss
    return bool(a == b)


def differing(a: TrainState, b: TrainState, leave_out: set[str] | tuple[str, ...] = ()
              ) -> list[str]:
    """The fields of the state (all of them, but ``leave_out``) whose values differ."""
    return [f.name for f in fields(TrainState)
            if f.name not in leave_out and not same(getattr(a, f.name), getattr(b, f.name))]


def lived_in(faces: tuple[Path, Path], root: Path) -> tuple[Trainer, ModelIO]:
    """A trainer whose every state field holds something: started from another model's
    weights, resumed (two sessions), rolled back once, a rate found, faces drawn, and steps
    since its last save."""
    with make_trainer(faces, root / "pretrained") as pretrained:
        pretrained.step()
        ModelIO(pretrained).save()
    options = TrainerOptions(learning_rate=1e-3, seed=3, preview_faces=3, **OPTIONS)
    with Trainer("lightweight", TINY, options, *faces, root / "m", batch_size=4,
                 start_from=root / "pretrained" / "model.pt") as first:
        for _ in range(12):  # enough to draw faces (the collapse guard's drew_faces)
            first.step()
        ModelIO(first).save()
    trainer = make_trainer(faces, root / "m", **OPTIONS)
    io = ModelIO(trainer)
    trainer.step()
    io.save()
    trainer.step()
    assert io.roll_back(NonFiniteLossError(trainer.iteration, math.nan, 0.0)) is not None
    trainer.use_learning_rate(8e-4, {"rate": 8e-4, "found_for": {"learning_rate": 1e-3}})
    trainer.step()
    trainer.step()
    return trainer, io


def test_a_lived_in_trainer_sets_every_field_and_restore_puts_each_back(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    trainer, _ = lived_in(faces, tmp_path)
    try:
        lived = trainer.capture(copied=True)
        with make_trainer(faces, tmp_path / "fresh", **OPTIONS) as fresh:
            blank = fresh.capture(copied=True)
            set_apart = differing(lived, blank, ALIKE_WHEN_FRESH)
            alike = {f.name for f in fields(TrainState)} - ALIKE_WHEN_FRESH - set(set_apart)
            assert sorted(alike) == [], "give these fields a value of their own in lived_in()"
            fresh.restore(lived)
            assert differing(lived, fresh.capture()) == []
    finally:
        trainer.close()


def test_the_learning_rate_finder_puts_back_every_field(faces: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    trainer, _ = lived_in(faces, tmp_path)
    try:
        before = trainer.capture(copied=True)
        find_learning_rate(trainer, 12)
        assert differing(before, trainer.capture()) == []
    finally:
        trainer.close()


def test_a_rollback_puts_back_every_field_but_what_it_keeps_of_the_run(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    trainer, io = lived_in(faces, tmp_path)
    try:
        io.save()
        saved = TrainState.from_dict(load_checkpoint(trainer.checkpoint_path))
        for _ in range(3):
            trainer.step()
        live = trainer.capture(copied=True)
        record = io.roll_back(NonFiniteLossError(trainer.iteration + 1, math.nan, 0.0))
        assert record is not None
        after = trainer.capture()
        assert differing(saved, after, KEPT_BY_ROLLBACK) == []
        # What it keeps: the run's, with the rollback recorded in it.
        for name in set(KEPT_BY_ROLLBACK) - {"lr_scale", "rollbacks", "sessions"}:
            assert same(getattr(after, name), getattr(live, name)), name
        assert after.lr_scale == pytest.approx(live.lr_scale * trainer.options.nan_lr_factor)
        assert after.rollbacks == [*live.rollbacks, record]
        assert [dict(s, iterations=0) for s in after.sessions] == [
            dict(s, iterations=0) for s in live.sessions]
        assert after.sessions[-1]["iterations"] == (after.iteration
                                                    - after.sessions[-1]["start_iteration"])
    finally:
        trainer.close()


def test_a_resume_puts_back_every_field(faces: tuple[Path, Path], tmp_path: Path) -> None:
    trainer, io = lived_in(faces, tmp_path)
    try:
        io.save()
        saved = trainer.capture(copied=True)
    finally:
        trainer.close()
    with make_trainer(faces, tmp_path / "m", **OPTIONS) as resumed:
        after = resumed.capture()
        assert differing(saved, after, {"sessions"}) == []
        assert same(after.sessions[:-1], saved.sessions)  # and a session of its own begins
        assert after.sessions[-1]["start_iteration"] == saved.iteration

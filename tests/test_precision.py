"""Mixed precision: fp16 with a gradient scaler, bf16, and the float32 fallback on the CPU.

CUDA is not needed to check the scaler's logic: torch runs fp16 autocast and its GradScaler
on the CPU too, so the trainer's real step is run with them here (MixedPrecision's
``allow_cpu``), and an overflow is made by setting the scale far too high.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from swapd.trainer.checkpoint import load_checkpoint
from swapd.trainer.divergence import NonFiniteLossError
from swapd.trainer.model_io import ModelIO
from swapd.trainer.options import OptionsError, TrainerOptions, split_options
from swapd.trainer.precision import MixedPrecision
from tests.support import make_trainer

CPU = torch.device("cpu")


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_option_values_and_the_old_switch() -> None:
    assert TrainerOptions().mixed_precision == "off"
    assert TrainerOptions(mixed_precision=True).mixed_precision == "bf16"
    assert TrainerOptions(mixed_precision=False).mixed_precision == "off"
    assert TrainerOptions(mixed_precision="fp16").mixed_precision == "fp16"
    with pytest.raises(OptionsError, match="mixed_precision"):
        split_options("lightweight", {"mixed_precision": "fp8"})


@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_the_cpu_falls_back_to_float32_with_a_warning(mode: str, faces: tuple[Path, Path],
                                                      tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), \
            make_trainer(faces, tmp_path / "m", mixed_precision=mode) as trainer:
        assert trainer.precision.mode == "off" and not trainer.precision.scaling
        assert np.isfinite(trainer.step().loss_a)
    assert "needs a CUDA device" in caplog.text


def test_fp16_steps_scale_the_loss_and_skip_an_overflow(faces: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "m") as trainer:
        io = ModelIO(trainer)
        trainer.precision = MixedPrecision("fp16", CPU, allow_cpu=True)
        scaler = trainer.precision.scaler
        before = _weights(trainer.model)
        stats = trainer.step()
        assert np.isfinite(stats.loss_a) and np.isfinite(stats.loss_b)
        changed = _weights(trainer.model)
        assert any(not torch.equal(before[k], changed[k]) for k in before)
        assert scaler.get_scale() == 65536.0  # no overflow: the scale stays

        # A scale so large the scaled gradients overflow fp16's... and float32's range: the
        # step is skipped (weights untouched), the scale lowered, and it is no NaN error.
        scaler.update(new_scale=3e38)
        stats = trainer.step()
        assert stats.iteration == 2 and np.isfinite(stats.loss_a)
        after = _weights(trainer.model)
        assert all(torch.equal(changed[k], after[k]) for k in changed)
        assert scaler.get_scale() < 3e38

        # (the scale halves per overflow; in real training it comes down over some steps)
        scaler.update(new_scale=1024.0)
        trainer.step()  # and training goes on
        assert any(not torch.equal(after[k], v) for k, v in _weights(trainer.model).items())
        io.save()
        scale = scaler.get_scale()
    saved = load_checkpoint(tmp_path / "m" / "model.pt")
    assert saved["grad_scaler"]["scale"] == scale


def test_the_scaler_state_round_trips_and_the_modes_autocast() -> None:
    precision = MixedPrecision("fp16", CPU, allow_cpu=True)
    precision.scaler.scale(torch.ones(()))  # the scale exists from the first scaled loss on
    precision.scaler.update(new_scale=1024.0)
    resumed = MixedPrecision("fp16", CPU, allow_cpu=True)
    resumed.load_state_dict(precision.state_dict())
    assert resumed.scaler.get_scale() == 1024.0
    off = MixedPrecision("off", CPU)
    assert off.state_dict() == {} and off.autocast().__enter__() is None
    with MixedPrecision("bf16", CPU, allow_cpu=True).autocast():
        assert torch.nn.Linear(4, 4)(torch.rand(2, 4)).dtype == torch.bfloat16


def _norm_of_one_step(faces: tuple[Path, Path], model_dir: Path, fp16: bool,
                      accumulate: int) -> float:
    with make_trainer(faces, model_dir, autoclip=True, accumulate=accumulate) as trainer:
        if fp16:
            trainer.precision = MixedPrecision("fp16", CPU, allow_cpu=True)
        trainer.step()
        return trainer.clipper.history[-1]


@pytest.mark.parametrize("accumulate", [1, 2])
def test_fp16_gradients_are_unscaled_before_they_are_measured(
        faces: tuple[Path, Path], tmp_path: Path, accumulate: int) -> None:
    """AutoClip records the gradient norm it clips by: under fp16 it must be the true norm
    (the same batches, the same weights), not 65,536 times it."""
    full = _norm_of_one_step(faces, tmp_path / "fp32", False, accumulate)
    half = _norm_of_one_step(faces, tmp_path / "fp16", True, accumulate)
    assert abs(half - full) / full < 0.05, (full, half)


def test_fp16_nan_gradients_are_not_taken_for_overflows_forever(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "m", on_nan="stop") as trainer:
        trainer.precision = MixedPrecision("fp16", CPU, allow_cpu=True)
        first = next(trainer.model.parameters())
        first.register_hook(lambda grad: torch.full_like(grad, float("nan")))
        before = _weights(trainer.model)
        with pytest.raises(NonFiniteLossError):
            for _ in range(40):  # the scale halves from 65,536 to below 1 in 17 steps
                assert trainer.step().skipped
        assert trainer.precision.scaler.get_scale() < 1
        assert all(torch.equal(before[k], v) for k, v in _weights(trainer.model).items())


def test_the_learning_rate_finder_leaves_the_scaler_as_it_found_it(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    from swapd.trainer.lr_finder import find_learning_rate

    with make_trainer(faces, tmp_path / "m") as trainer:
        trainer.precision = MixedPrecision("fp16", CPU, allow_cpu=True)
        trainer.step()
        scaler = trainer.precision.scaler
        scaler.update(new_scale=1e9)  # the first sweep steps overflow
        before = trainer.precision.state_dict()
        result = find_learning_rate(trainer, 30)
        assert trainer.precision.state_dict() == before
        # the overflowed steps learned nothing and are not points of the sweep
        assert 0 < len(result.learning_rates) < 30

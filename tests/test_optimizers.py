"""Optimizers against their papers' update rules; warmup, the cosine schedule, clipping,
accumulation in the trainer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from swapd.trainer.checkpoint import load_checkpoint
from swapd.trainer.model_io import ModelIO
from swapd.trainer.optimizers import (
    OPTIMIZERS,
    AdaBelief,
    GradientClipper,
    Lion,
    build_optimizer,
    schedule_factor,
    warmup_factor,
)
from tests.support import make_trainer

GRADS = np.random.default_rng(0).normal(size=(4, 5, 3)).astype(np.float64)  # 4 steps


def _run(optimizer_cls: type, start: np.ndarray, **kwargs: object) -> np.ndarray:
    p = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    opt = optimizer_cls([p], **kwargs)
    for g in GRADS:
        p.grad = torch.tensor(g)
        opt.step()
    return p.detach().numpy()


def test_lion_follows_the_paper() -> None:
    start = np.random.default_rng(1).normal(size=(5, 3))
    lr, b1, b2, wd = 1e-2, 0.9, 0.99, 0.1
    p, m = start.copy(), np.zeros_like(start)
    for g in GRADS:  # Chen et al. 2023, Algorithm 2
        c = b1 * m + (1 - b1) * g
        p = p - lr * (np.sign(c) + wd * p)
        m = b2 * m + (1 - b2) * g
    ours = _run(Lion, start, lr=lr, betas=(b1, b2), weight_decay=wd)
    assert np.allclose(ours, p, atol=1e-12)


def test_adabelief_follows_the_paper() -> None:
    start = np.random.default_rng(2).normal(size=(5, 3))
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    p, m, s = start.copy(), np.zeros_like(start), np.zeros_like(start)
    for t, g in enumerate(GRADS, start=1):  # Zhuang et al. 2020, Algorithm 2
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * (g - m) ** 2 + eps
        m_hat, s_hat = m / (1 - b1**t), s / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(s_hat) + eps)
    ours = _run(AdaBelief, start, lr=lr, betas=(b1, b2), eps=eps)
    assert np.allclose(ours, p, atol=1e-12)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_lowers_a_quadratic(name: str) -> None:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(10))
    opt = build_optimizer(name, [p], 1e-2, (0.9, 0.99), 1e-8, 0.0, torch.device("cpu"))
    before = float((p**2).sum().detach())
    for _ in range(50):
        opt.zero_grad()
        (p**2).sum().backward()
        opt.step()
    assert float((p**2).sum().detach()) < 0.7 * before
    with pytest.raises(ValueError, match="unknown optimizer 'sgdx'"):
        build_optimizer("sgdx", [p], 1e-2, (0.9, 0.99), 1e-8, 0.0, torch.device("cpu"))


def test_warmup_and_clipping() -> None:
    assert [warmup_factor(i, 4) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])  # norm 5
    assert GradientClipper(max_norm=1.0)([p], p.grad.norm()) == 1.0
    assert torch.allclose(p.grad.norm(), torch.tensor(1.0))
    auto = GradientClipper(autoclip=True, percentile=10)
    for norm in (1.0, 2.0, 3.0, 4.0):  # the history fills, the limit follows its percentile
        p.grad = torch.tensor([norm, 0.0, 0.0, 0.0])
        limit = auto([p], p.grad.norm())
    assert limit == pytest.approx(float(np.percentile([1, 2, 3, 4], 10)))
    assert float(p.grad.norm()) == pytest.approx(limit)


def test_cosine_schedule_after_the_warmup() -> None:
    # constant: the warmup, then 1, whatever the end
    assert [schedule_factor(i, 2, "constant", 10) for i in (0, 1, 2, 50)] == [0.5, 1, 1, 1]
    cosine = [schedule_factor(i, 2, "cosine", 12, floor=0.1) for i in range(15)]
    assert cosine[:3] == [0.5, 1.0, 1.0]  # the warmup, then the cosine's top
    assert cosine[7] == pytest.approx(0.55)  # half way: half between 1 and the floor
    assert cosine[12:] == [pytest.approx(0.1)] * 3  # the end and after: the floor
    assert all(a > b for a, b in zip(cosine[2:12], cosine[3:13], strict=True))
    assert schedule_factor(5, 0, "cosine", 10, floor=0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="needs an end past the warmup"):
        schedule_factor(6, 5, "cosine", 5)


def test_trainer_follows_the_cosine_to_the_job_target(faces: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    from swapd.trainer.loop import Trainer
    from swapd.trainer.options import OptionsError, TrainerOptions
    from tests.support import TINY

    options = TrainerOptions(learning_rate=1e-3, lr_schedule="cosine", lr_floor=0.2, warmup=1)
    with pytest.raises(OptionsError, match="needs an end: set lr_decay_iterations"):
        Trainer("lightweight", TINY, options, *faces, tmp_path / "m", batch_size=2)
    with Trainer("lightweight", TINY, options, *faces, tmp_path / "m", batch_size=2,
                 iterations_target=5) as trainer:
        io = ModelIO(trainer)
        rates = []
        for _ in range(6):
            trainer.step()
            rates.append(trainer.optimizer.param_groups[0]["lr"])
        io.save()
    # steps 0..5: warmup (1 step), then the cosine from 1e-3 to 2e-4 at iteration 5
    expected = [1e-3 * schedule_factor(i, 1, "cosine", 5, 0.2) for i in range(6)]
    assert rates == pytest.approx(expected)
    # by hand: 1e-3 x (0.2 + 0.8 x (1 + cos(pi x (i - 1) / 4)) / 2)
    assert rates == pytest.approx([1e-3, 1e-3, 8.8284e-4, 6e-4, 3.1716e-4, 2e-4], rel=1e-4)
    # lr_decay_iterations wins over the target; a resume goes on along the same curve
    longer = options.model_copy(update={"lr_decay_iterations": 11})
    with Trainer("lightweight", TINY, longer, *faces, tmp_path / "m", batch_size=2,
                 iterations_target=5) as trainer:
        assert trainer.iteration == 6
        assert trainer.scheduled_learning_rate() == pytest.approx(
            1e-3 * schedule_factor(6, 1, "cosine", 11, 0.2))
        trainer.step()
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(
            1e-3 * schedule_factor(6, 1, "cosine", 11, 0.2))


def test_a_rollback_lowers_the_scheduled_rate(faces: tuple[Path, Path], tmp_path: Path) -> None:
    from swapd.trainer.divergence import NonFiniteLossError

    with make_trainer(faces, tmp_path / "m", lr_schedule="cosine", lr_decay_iterations=4,
                      lr_floor=0.5) as trainer:
        io = ModelIO(trainer)
        trainer.step()
        trainer.step()
        io.save()
        record = io.roll_back(NonFiniteLossError(3, float("nan"), 1.0))
        assert record is not None and trainer.iteration == 2
        # the cosine's factor at iteration 2 of 4 (0.75) times the rollback's 0.5
        assert record["learning_rate"] == pytest.approx(1e-3 * 0.75 * 0.5)
        trainer.step()
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.75 * 0.5)


def test_trainer_options_accumulate_warmup_switch(faces: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "m", accumulate=2, warmup=10, autoclip=True) as trainer:
        io = ModelIO(trainer)
        stats = trainer.step()
        assert stats.examples == 2 * 4 * 2  # two batches of 4 per side
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 / 10)
        trainer.step()
        io.save()
    assert len(load_checkpoint(tmp_path / "m" / "model.pt")["autoclip_history"]) == 2
    # The optimizer may change between sessions: its state starts afresh.
    with make_trainer(faces, tmp_path / "m", optimizer="lion") as trainer:
        assert isinstance(trainer.optimizer, Lion) and trainer.iteration == 2
        assert np.isfinite(trainer.step().loss_a)

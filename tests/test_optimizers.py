"""Optimizers against their papers' update rules; warmup, clipping, accumulation in the trainer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from swapd.trainer.checkpoint import load_checkpoint
from swapd.trainer.optimizers import (
    OPTIMIZERS,
    AdaBelief,
    GradientClipper,
    Lion,
    build_optimizer,
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


def test_trainer_options_accumulate_warmup_switch(faces: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "m", accumulate=2, warmup=10, autoclip=True) as trainer:
        stats = trainer.step()
        assert stats.examples == 2 * 4 * 2  # two batches of 4 per side
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 / 10)
        trainer.step()
        trainer.save()
    assert len(load_checkpoint(tmp_path / "m" / "model.pt")["autoclip_history"]) == 2
    # The optimizer may change between sessions: its state starts afresh.
    with make_trainer(faces, tmp_path / "m", optimizer="lion") as trainer:
        assert isinstance(trainer.optimizer, Lion) and trainer.iteration == 2
        assert np.isfinite(trainer.step().loss_a)

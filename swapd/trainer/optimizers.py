"""Optimizers, the learning-rate schedule (warmup, cosine decay) and gradient clipping.

adam, adamw and rmsprop are torch's own (fused kernels where the device has them). lion and
adabelief are written out here from their papers, each tested against its update rule:

- Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023, Algorithm 2):
  ``c = b1*m + (1-b1)*g;  p -= lr * (sign(c) + wd*p);  m = b2*m + (1-b2)*g``.
- AdaBelief (Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in
  Observed Gradients", NeurIPS 2020, Algorithm 2): ``m = b1*m + (1-b1)*g;
  s = b2*s + (1-b2)*(g-m)^2 + eps;  p -= lr * m_hat / (sqrt(s_hat) + eps)`` with bias
  corrections, and decoupled weight decay as in AdamW.

AutoClip (Seetharaman et al., "AutoClip: Adaptive Gradient Clipping for Source Separation
Networks", 2020) clips each step's gradient norm to a percentile of all norms seen so far.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.optim import Optimizer

OPTIMIZERS = ("adam", "adamw", "adabelief", "rmsprop", "lion")
# AdaBelief adds epsilon to its variance estimate every step, so it wants a far smaller one than
# Adam's 1e-7 (its paper's default), used unless the job sets epsilon itself.
ADABELIEF_EPSILON = 1e-16


class Lion(Optimizer):
    """Lion: the sign of an interpolated momentum, with decoupled weight decay."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                update = (m * beta1).add_(p.grad, alpha=1 - beta1).sign_()
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(update, alpha=-group["lr"])
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss


class AdaBelief(Optimizer):
    """AdaBelief: Adam with the second moment of (g - m), the "belief" in the gradient."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-16,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            eps, lr = group["eps"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_var"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, s = state["exp_avg"], state["exp_avg_var"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                diff = g - m
                s.mul_(beta2).addcmul_(diff, diff, value=1 - beta2).add_(eps)
                if group["weight_decay"]:
                    p.mul_(1 - lr * group["weight_decay"])
                m_hat = m / (1 - beta1**t)
                s_hat = s / (1 - beta2**t)
                p.addcdiv_(m_hat, s_hat.sqrt().add_(eps), value=-lr)
        return loss


def build_optimizer(name: str, params: Iterable[Tensor], lr: float, betas: tuple[float, float],
                    eps: float, weight_decay: float, device: torch.device) -> Optimizer:
    """The optimizer called ``name`` (one of :data:`OPTIMIZERS`)."""
    params = list(params)
    # Fused kernels: one pass over all parameters (CPU since torch 2.4, CUDA before).
    fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps,
                                 weight_decay=weight_decay, **fused)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=betas[1], eps=eps,
                                   weight_decay=weight_decay)
    if name == "lion":
        return Lion(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adabelief":
        return AdaBelief(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


def use_session_options(optimizer: Optimizer, lr: float, betas: tuple[float, float],
                        eps: float, weight_decay: float) -> None:
    """Set this session's options on every parameter group, after a state was loaded (a
    saved optimizer state brings the options it was saved with); each kind takes the ones it
    has (RMSprop has no betas, Lion no eps)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        for key, value in (("betas", betas), ("eps", eps), ("weight_decay", weight_decay)):
            if key in group:
                group[key] = value


def warmup_factor(iteration: int, warmup: int) -> float:
    """Learning-rate multiplier: linear from 1/warmup to 1 over the first ``warmup`` steps."""
    if warmup <= 0 or iteration >= warmup:
        return 1.0
    return (iteration + 1) / warmup


def schedule_factor(iteration: int, warmup: int, schedule: str = "constant", end: int = 0,
                    floor: float = 0.1) -> float:
    """Learning-rate multiplier of step ``iteration`` (counted from 0): the warmup, then 1
    (``constant``) or, nanoGPT's ``cosine``, half a cosine from 1 down to ``floor`` at
    iteration ``end``, and ``floor`` after it."""
    if iteration < warmup or schedule == "constant":
        return warmup_factor(iteration, warmup)
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")
    if end <= warmup:
        raise ValueError(f"a cosine schedule needs an end past the warmup ({warmup}), got {end}")
    progress = min(1.0, (iteration - warmup) / (end - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


AUTOCLIP_HISTORY = 10_000  # norms remembered (faceswap's window), so cost and size stay flat


class GradientClipper:
    """Clips the global gradient norm to ``max_norm``, or with ``autoclip`` to the
    ``percentile`` of the last AUTOCLIP_HISTORY norms (saved with the checkpoint)."""

    def __init__(self, max_norm: float = 0.0, autoclip: bool = False,
                 percentile: float = 10.0) -> None:
        self.max_norm = max_norm
        self.autoclip = autoclip
        self.percentile = percentile
        self.history: deque[float] = deque(maxlen=AUTOCLIP_HISTORY)

    @property
    def active(self) -> bool:
        return self.autoclip or self.max_norm > 0

    def __call__(self, params: list[Tensor], norm: Tensor) -> float:
        """Clip the gradients of ``params`` whose global norm is ``norm``; returns the limit
        applied (inf when none)."""
        limit = float("inf")
        if self.autoclip:
            self.history.append(float(norm))
            limit = float(np.percentile(self.history, self.percentile))
        if self.max_norm > 0:
            limit = min(limit, self.max_norm)
        if limit < float(norm):
            scale = limit / (float(norm) + 1e-12)
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(scale)
        return limit

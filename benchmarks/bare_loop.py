"""The bare PyTorch loop swapd's training step is measured against: the same model, loss and
Adam on pre-made batches, with no data pipeline and no bookkeeping (used by
``train_throughput.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import swapd  # noqa: F401  (first: it sets OpenMP's wait policy before torch loads)

# isort: split

import torch

from swapd.trainer.loop import Trainer
from swapd.trainer.losses import FaceLoss, combine_losses
from swapd.trainer.models import SwapModel, build_model
from swapd.trainer.options import TrainerOptions
from swapd.trainer.precision import MixedPrecision


class BareLoop:
    """The plain loop's state (model, Adam, loss) on pre-made batches (inputs, targets,
    masks); :meth:`step` is one step. ``compiled``: the model through ``torch.compile``. In
    the options' ``mixed_precision`` as the trainer resolves it on the CPU (bf16: the
    forward pass under autocast, as the trainer runs it)."""

    def __init__(self, model_name: str, model_options: dict[str, Any], options: TrainerOptions,
                 batches: list[tuple[torch.Tensor, ...]], channels_last: bool, fused: bool,
                 compiled: bool = False, trainer: Trainer | None = None,
                 one_pass: bool = False) -> None:
        """``trainer``: run on its model and optimizer (the same weights and Adam state in
        the same memory) instead of a new model's. ``one_pass``: both sides through the
        model's ``both_sides`` (what they share run once, as swapd's step does) instead of a
        forward call per side (as faceswap, DeepFaceLab and a plain loop do)."""
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        if trainer is not None:
            self.model, self.optimizer = trainer.model, trainer.optimizer
        else:
            torch.manual_seed(0)
            self.model = build_model(model_name, model_options).to(memory_format=fmt)
            self.optimizer = torch.optim.Adam(
                self.model.parameters(), lr=options.learning_rate,
                betas=(options.beta1, options.beta2), eps=options.epsilon, fused=fused)
        self.forward = torch.compile(self.model) if compiled else self.model
        self.loss_fn = FaceLoss(combine_losses(options.loss, options.extra_losses),
                                options.penalized_mask_loss, options.background_weight,
                                options.eye_multiplier, options.mouth_multiplier)
        self.batches = [tuple(t.contiguous(memory_format=fmt) for t in batch)
                        for batch in batches]
        self.steps = 0
        self.precision = MixedPrecision(options.mixed_precision, torch.device("cpu"))
        self.one_pass = one_pass

    def step(self) -> None:
        in_a, tg_a, m_a, in_b, tg_b, m_b = self.batches[self.steps % len(self.batches)]
        self.steps += 1
        model, forward, loss_fn = self.model, self.forward, self.loss_fn
        with self.precision.autocast():
            if self.one_pass:
                out_a, out_b = model.both_sides(in_a, in_b)
            else:
                out_a, out_b = forward(in_a, "a"), forward(in_b, "b")
        loss = (_loss(model, loss_fn, out_a, tg_a, m_a)
                + _loss(model, loss_fn, out_b, tg_b, m_b))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def bare_loop(model_name: str, model_options: dict[str, Any], options: TrainerOptions,
              batches: list[tuple[torch.Tensor, ...]], steps: int, channels_last: bool,
              fused: bool, compiled: bool = False, cpu: list[float] | None = None,
              one_pass: bool = False) -> list[float]:
    """Seconds per step of :class:`BareLoop` (its first steps include compiling when
    ``compiled``); ``cpu``: gets each step's CPU seconds (the process's, all threads)."""
    loop = BareLoop(model_name, model_options, options, batches, channels_last, fused,
                    compiled, one_pass=one_pass)
    return timed(loop.step, steps, cpu)


def timed(step: Callable[[], object], steps: int, cpu: list[float] | None = None
          ) -> list[float]:
    """Wall seconds of each of ``steps`` calls of ``step``; ``cpu`` gets each call's CPU
    seconds (the process's: every thread, a trainer's batch loader included)."""
    times = []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        if cpu is not None:
            cpu.append(time.process_time() - start_cpu)
    return times


def _loss(model: SwapModel, loss_fn: FaceLoss, output: torch.Tensor, target: torch.Tensor,
          masks: torch.Tensor) -> torch.Tensor:
    """The face loss, plus a learned mask's (MSE against the face mask) as swapd adds it."""
    face, learned = model.split(output)
    loss = loss_fn(face, target, masks)
    if learned is not None:
        loss = loss + (learned - masks[:, 0:1]).square().mean()
    return loss

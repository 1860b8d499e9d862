"""The training step: one :class:`Trainer` per model folder, driven step by step.

Each step takes a batch per side from the background loader, runs both sides through the
shared encoder and their own decoder, sums the two losses and takes one optimizer step. The
trainer also evaluates (predictions, per-face losses, the preview; its base
:class:`~swapd.trainer.evaluation.Evaluator`) and moves its state in and out
(:meth:`Trainer.capture`, :meth:`Trainer.restore`; its base
:class:`~swapd.trainer.capture.StateCapture`). Saving, backups, snapshots and rollbacks are
:mod:`swapd.trainer.model_io`'s; the session's cadence is :mod:`swapd.trainer.driver`'s; its
set-up helpers :mod:`swapd.trainer.setup`'s.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from swapd.fsutil import FolderLock
from swapd.trainer import setup
from swapd.trainer.batches import Pixels
from swapd.trainer.capture import StateCapture
from swapd.trainer.checkpoint import CHECKPOINT_NAME, LOCK_NAME, ModelBusyError
from swapd.trainer.data import FaceIndex, FaceSetError, LandmarkFinder
from swapd.trainer.distributed import BothSides
from swapd.trainer.divergence import DRAWN_FACES, NonFiniteLossError
from swapd.trainer.evaluation import Evaluator
from swapd.trainer.models import SwapModel, build_model
from swapd.trainer.optimizers import GradientClipper, build_optimizer, schedule_factor
from swapd.trainer.options import (
    OptionsError,
    TrainerOptions,
    lr_schedule_end,
    lr_schedule_problem,
    validate_model_options,
)
from swapd.trainer.precision import MixedPrecision
from swapd.trainer.state import TrainState
from swapd.trainer.true_face import TrueFace, true_face_problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepStats:
    """What one training step did."""

    iteration: int  # iterations completed, this step included
    loss_a: float
    loss_b: float
    seconds: float
    examples: int  # faces seen, both sides
    # The loss split into parts that add up to it (each loss function on the face, the eye
    # and mouth terms): see FaceLoss.breakdown.
    components_a: dict[str, float] = field(default_factory=dict)
    components_b: dict[str, float] = field(default_factory=dict)
    skipped: bool = False  # fp16: the gradients overflowed, the weights were left unchanged
    # true_face_power: its code discriminator's loss, not part of either side's (about log 2,
    # 0.69: it cannot tell A's codes from B's); None without the true face or on a skipped step.
    discriminator_loss: float | None = None
    learning_rate: float | None = None  # the rate this step used; None on a skipped step

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else 0.0


class Trainer(Evaluator, StateCapture):
    """Trains model ``model`` on faces_a/faces_b, keeping its checkpoint in ``model_dir``.

    If ``model_dir/model.pt`` exists the model resumes from it (same iteration, optimizer
    state); its model options must match ``model_options`` since they fix the architecture.
    Trainer options may change from session to session.
    """

    def __init__(
        self,
        model: str,
        model_options: dict[str, Any],
        trainer_options: TrainerOptions,
        faces_a: Path,
        faces_b: Path,
        model_dir: Path,
        batch_size: int = 16,
        face_index: FaceIndex | None = None,
        landmarks: LandmarkFinder | None = None,
        iterations_target: int = 0,
        start_from: Path | None = None,
    ) -> None:
        """``face_index``: the service's index of the faces (see
        :data:`~swapd.trainer.data.FaceIndex`); without it, or for files it does not hold,
        the files are read, and ``landmarks`` finds the landmarks a file lacks (default: the
        detector, :class:`~swapd.trainer.data.FoundLandmarks`). ``iterations_target``: the
        job's (0 = none), where a cosine learning-rate schedule ends unless
        ``lr_decay_iterations`` says. ``start_from``: a checkpoint of the same model whose
        weights a new model starts from (DeepFaceLab's pretrained model): iteration 0, a
        fresh optimizer. Unused once ``model_dir`` has its own checkpoint."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_options = validate_model_options(model, model_options)
        problem = (lr_schedule_problem(trainer_options, iterations_target)
                   or true_face_problem(model, trainer_options.true_face_power,
                                        self.model_options))
        if problem:
            raise OptionsError(problem)
        self.lr_schedule_end = lr_schedule_end(trainer_options, iterations_target)
        self.model_name = model
        self.model_dir = Path(model_dir)
        self.checkpoint_path = self.model_dir / CHECKPOINT_NAME
        self.batch_size = batch_size
        self.device, self.distributed = setup.place(trainer_options.device)
        self.is_main = self.distributed is None or self.distributed.is_main
        self.precision = MixedPrecision(trainer_options.mixed_precision, self.device)
        log.info("mixed_precision %r on %s: training in %s", trainer_options.mixed_precision,
                 self.device.type, {"off": "float32"}.get(self.precision.mode,
                                                          self.precision.mode))
        self._memory_format = (torch.channels_last if trainer_options.channels_last
                               else torch.contiguous_format)

        if self.is_main:  # another process's temp file may be a save in progress
            setup.remove_stale_temp_files(self.model_dir)
        saved, start = setup.checkpoints(self.checkpoint_path, start_from, model,
                                         self.model_options)
        torch.manual_seed(trainer_options.seed)
        self.model: SwapModel = build_model(model, self.model_options).to(
            self.device, memory_format=self._memory_format)
        self.options = options = setup.with_model_crop(self.model, model, trainer_options)
        betas = (options.beta1, options.beta2)
        self.optimizer = build_optimizer(options.optimizer, self.model.parameters(),
                                         options.learning_rate, betas, setup.epsilon(options),
                                         options.weight_decay, self.device)
        self.clipper = GradientClipper(options.clip_grad_norm, options.autoclip)
        self.true_face = (TrueFace(self.model, options.true_face_power, options.optimizer,
                                   options.learning_rate, betas, setup.epsilon(options),
                                   self.device)
                          if options.true_face_power else None)
        self._start_state()  # the training state: see StateCapture
        self.lr_override: float | None = None  # the learning-rate finder's, while it runs
        self.resumed = saved is not None
        if saved is not None:
            self.restore(TrainState.from_dict(saved))
        elif start is not None:
            self.started_from = setup.start_from(self.model, start, Path(start_from), options)
        self.sessions.append(setup.new_session(self.iteration, batch_size))

        self.input_size: int = self.model_options.input_size  # type: ignore[attr-defined]
        self._loss_fn = setup.face_loss(options, self.model.image_channels, self.input_size)
        self.set_a, self.set_b = setup.face_sets((faces_a, faces_b), self.input_size, options,
                                                 self.model.image_channels, face_index,
                                                 landmarks, self.model_dir)
        self._preview_a, self._preview_mask_a = setup.pick_preview(self.set_a, options)
        self._preview_b, self._preview_mask_b = setup.pick_preview(self.set_b, options)
        self._preview_sources = (setup.preview_mask_sources(self.set_a, options),
                                 setup.preview_mask_sources(self.set_b, options))
        if start is not None and options.collapse_guard:
            # Weights that draw faces arm the collapse guard before this model's first save.
            self.drew_faces = self.output_spread() >= DRAWN_FACES
        self.loader = setup.batch_loader(
            (self.set_a, self.set_b), batch_size, options, self.iteration,
            setup.loader_workers(options, self.device), self.distributed,
            self.device if setup.augments_on_device(options, self.device) else None,
            background=self.device.type == "cpu")
        both = BothSides(self.model)
        self._both: nn.Module = (both if self.distributed is None else DistributedDataParallel(
            both, device_ids=[self.device.index] if self.device.type == "cuda" else None))
        # Last: held while this trainer lives, so no restore or second trainer changes the
        # model folder under it (by the first process of a distributed run).
        self._folder_lock = FolderLock(self.model_dir / LOCK_NAME)
        if self.is_main and not self._folder_lock.acquire():
            self.loader.close()
            raise ModelBusyError(self.model_dir, "another trainer is using this model folder")

    @property
    def session(self) -> dict[str, Any]:
        """This session's record (the last of :attr:`sessions`)."""
        return self.sessions[-1]

    # -- training --------------------------------------------------------------------------

    def step(self) -> StepStats:
        """One optimisation step on a batch of each side."""
        start = time.perf_counter()
        for face_set in (self.set_a, self.set_b):
            if len(face_set) == 0:
                raise FaceSetError(face_set.folder, "no usable faces left to train on")
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        accumulate = self.options.accumulate
        la = lb = 0.0
        components_a: dict[str, float] = {}
        components_b: dict[str, float] = {}
        codes: list[tuple[torch.Tensor, torch.Tensor]] = []  # for the true face's step
        discriminator_loss = lr = None
        for _ in range(accumulate):  # gradients add up over `accumulate` batches
            batch = self.loader.get()
            with self.precision.autocast():
                outputs = self._both(self._tensor(batch.input_a), self._tensor(batch.input_b),
                                     codes=self.true_face is not None)
            out_a, out_b, *codes_ab = outputs  # the codes: with the true face only
            per_a, parts_a = self._side_loss(out_a, batch.target_a, batch.mask_a,
                                             batch.mask_known_a)
            per_b, parts_b = self._side_loss(out_b, batch.target_b, batch.mask_b,
                                             batch.mask_known_b)
            if self.true_face is not None:  # DeepFaceLab adds it to src's (B's) loss
                code_a, code_b = codes_ab
                codes.append((code_a.detach(), code_b.detach()))
                term = self.true_face.generator_loss(code_b)
                per_b = per_b + term
                parts_b = {**parts_b, "true_face": term.detach()}
            loss_a, loss_b = per_a.mean(), per_b.mean()
            part_a, part_b = float(loss_a.detach()), float(loss_b.detach())
            for total, parts in ((components_a, parts_a), (components_b, parts_b)):
                # One device-to-host copy for all parts (each float() would sync a GPU).
                values = torch.stack(list(parts.values())).float().tolist()
                for name, value in zip(parts, values, strict=True):
                    total[name] = total.get(name, 0.0) + value / accumulate
            bad = not (math.isfinite(part_a) and math.isfinite(part_b))
            if self.distributed is not None:  # every process must stop together
                bad = self.distributed.any(bad, self.device)
            if bad:
                self.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLossError(self.iteration + 1, part_a, part_b)
            la, lb = la + part_a / accumulate, lb + part_b / accumulate
            self.precision.backward((loss_a + loss_b) / accumulate)
        self.precision.unscale(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = _total_norm([p.grad for p in params])
        skipped = not torch.isfinite(norm)
        if skipped:
            # fp16: an overflow skips the step and lowers the scale, until no scale helps
            if not (self.precision.scaling and self.precision.skip_overflow(self.optimizer)):
                self.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLossError(self.iteration + 1, la, lb)
        else:
            if self.clipper.active:
                self.clipper(params, norm)
            lr = self.lr_override or self.scheduled_learning_rate()
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.precision.step(self.optimizer)
            if self.true_face is not None:  # after the model's step, as DeepFaceLab
                average = (None if self.distributed is None
                           else self.distributed.average_gradients)
                discriminator_loss = self.true_face.train_step(
                    torch.cat([a for a, _ in codes]), torch.cat([b for _, b in codes]), lr,
                    average)
        self.iteration += 1
        if self.distributed is not None:  # report the global batch's losses, as one process
            names_a, names_b = list(components_a), list(components_b)
            means = self.distributed.all_mean(
                [la, lb, *components_a.values(), *components_b.values()], self.device)
            la, lb = means[0], means[1]
            components_a = dict(zip(names_a, means[2:2 + len(names_a)], strict=True))
            components_b = dict(zip(names_b, means[2 + len(names_a):], strict=True))
            if discriminator_loss is not None:
                discriminator_loss = self.distributed.all_mean([discriminator_loss],
                                                               self.device)[0]
        self.losses_since_save.append((la + lb) / 2)
        self.session["iterations"] = self.iteration - self.session["start_iteration"]
        return StepStats(self.iteration, la, lb, time.perf_counter() - start,
                         2 * self.batch_size * accumulate, components_a, components_b, skipped,
                         discriminator_loss, lr)

    def set_focus(self, side: str, names: set[str]) -> None:
        """Draw the faces of ``side`` ("a" or "b") named (file names) ``focus_weight`` times
        as often as its others, from the next batch on."""
        face_set = self.set_a if side == "a" else self.set_b
        face_set.set_focus(names, self.options.focus_weight)

    def _side_loss(self, output: torch.Tensor, target: Pixels, masks: Pixels, mask_known: Pixels
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One side's loss per face and its components: the face loss on the drawn face and,
        for a model that learns its mask, the mask's own loss against the landmark face mask
        (MSE, times ``mask_loss_weight``; component "mask") on faces whose mask was drawn from
        landmarks (a face without them has an all-face mask, which would teach a square)."""
        masks_t = self._tensor(masks)
        face, learned = self.model.split(output)
        # The loss in float32: autocast's bf16 output would round SSIM's small differences.
        per_image, parts = self._loss_fn.breakdown(face.float(), self._tensor(target), masks_t)
        if learned is not None:
            mask_loss = (learned.float() - masks_t[:, 0:1]).square().mean(dim=(1, 2, 3))
            known = torch.as_tensor(mask_known).to(mask_loss.device)
            mask_loss = mask_loss * known * self.options.mask_loss_weight
            per_image = per_image + mask_loss
            parts = {**parts, "mask": mask_loss.mean().detach()}
        return per_image, parts

    def scheduled_learning_rate(self) -> float:
        """The rate of the coming step: the options' rate after rollbacks, times the
        schedule's factor (warmup, cosine) at this iteration."""
        options = self.options
        return options.learning_rate * self.lr_scale * schedule_factor(
            self.iteration, options.warmup, options.lr_schedule, self.lr_schedule_end,
            options.lr_floor)

    def use_learning_rate(self, rate: float, record: dict[str, Any]) -> None:
        """Train at ``rate`` from now on (the learning-rate finder's); ``record`` (the rate and
        what it was found for) is kept in the checkpoint."""
        self.options.learning_rate = rate
        self.lr_found = record

    # -- faces, lifetime -------------------------------------------------------------------

    def refresh_faces(self) -> tuple[int, int]:
        """Rescan both face folders; returns (added, removed) over both sets."""
        added_a, removed_a = self.set_a.refresh()
        added_b, removed_b = self.set_b.refresh()
        return added_a + added_b, removed_a + removed_b

    def close(self) -> None:
        """Stop the batch loader and free the model folder. The caller saves first if it
        wants to keep progress."""
        self.loader.close()
        self.set_a.close()  # after the loader: no thread draws faces any more
        self.set_b.close()
        self._folder_lock.release()
        if self.distributed is not None:
            self.distributed.close()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The gradients' L2 norm in one fused pass (torch >= 2.6), or a norm per tensor, then
    theirs (older torch); inf or NaN when a gradient is."""
    fused = getattr(torch.nn.utils, "get_total_norm", None)
    if fused is not None:
        return fused(grads)
    return torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))

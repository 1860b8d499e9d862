"""A live trainer's state in and out: :class:`StateCapture`, the
:class:`~swapd.trainer.loop.Trainer`'s base that holds the fields of
:class:`~swapd.trainer.state.TrainState` the trainer keeps, takes them as one
(:meth:`StateCapture.capture`) and puts them back (:meth:`StateCapture.restore`). Saving,
resuming, rolling back and the learning-rate finder all go through these two, so a field
added to the state is added here and in :mod:`swapd.trainer.state`, nowhere else.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from swapd.trainer import setup
from swapd.trainer.checkpoint import CheckpointError
from swapd.trainer.models import SwapModel
from swapd.trainer.optimizers import GradientClipper, use_session_options
from swapd.trainer.options import TrainerOptions
from swapd.trainer.precision import MixedPrecision
from swapd.trainer.state import TrainState
from swapd.trainer.true_face import TrueFace

log = logging.getLogger(__name__)


class StateCapture:
    """The training state's fields, and their capture and restore. The trainer sets up what
    they read (model, optimizer, options, true face, clipper, precision, the header's names)."""

    model_name: str
    model_options: BaseModel
    batch_size: int
    checkpoint_path: Path
    model: SwapModel
    optimizer: torch.optim.Optimizer
    options: TrainerOptions
    true_face: TrueFace | None
    clipper: GradientClipper
    precision: MixedPrecision

    def _start_state(self) -> None:
        """The state of a model that has not trained yet (see TrainState: these are its
        fields that live on the trainer)."""
        self.iteration = 0
        self.lr_scale = 1.0  # lowered by each rollback
        self.rollbacks: list[dict[str, Any]] = []
        self.lr_found: dict[str, Any] | None = None  # the finder's rate and what it was for
        self.started_from: dict[str, Any] | None = None  # the checkpoint it started from
        self.drew_faces = False  # for the collapse guard: a save once found real faces drawn
        self.sessions: list[dict[str, Any]] = []  # the last one: this session
        self.losses_since_save: list[float] = []

    def checkpoint_header(self) -> dict[str, Any]:
        """What a checkpoint says about the model beside its state: which it is and how it
        was trained this session."""
        return {"model": self.model_name, "model_options": self.model_options.model_dump(),
                "trainer_options": self.options.model_dump(), "batch_size": self.batch_size}

    def capture(self, with_optimizer: bool = True, copied: bool = False) -> TrainState:
        """This trainer's state; ``copied``: a deep copy, which training on leaves as it was
        (tensors otherwise are the live ones, moved to the CPU)."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state(),
                               "loader_seed": [self.options.seed, self.iteration]}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = TrainState(
            iteration=self.iteration,
            model_state={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            optimizer_state=self.optimizer.state_dict() if with_optimizer else None,
            optimizer_name=self.options.optimizer,
            true_face=(self.true_face.state_dict(with_optimizer)
                       if self.true_face is not None else None),
            autoclip_history=list(self.clipper.history),
            grad_scaler=self.precision.state_dict(),
            rng=rng,
            lr_scale=self.lr_scale,
            rollbacks=list(self.rollbacks),
            lr_found=self.lr_found,
            started_from=self.started_from,
            drew_faces=self.drew_faces,
            sessions=[dict(s) for s in self.sessions],
            losses_since_save=list(self.losses_since_save),
        )
        return copy.deepcopy(state) if copied else state

    def restore(self, state: TrainState, source: Path | None = None) -> None:
        """Put ``state`` (a capture, or a checkpoint's from ``source``) back: every field.
        The optimizer's state comes back when the same kind of optimizer saved it (else it
        starts afresh); this session's optimizer options stay."""
        where = source or self.checkpoint_path
        try:
            self.model.load_state_dict(state.model_state)
            if state.optimizer_state is not None and state.optimizer_name == self.options.optimizer:
                self.optimizer.load_state_dict(state.optimizer_state)
            else:
                # Not saved (save_optimizer), or another optimizer: start its state afresh,
                # also when rolling back (the moments of the diverged run must not stay).
                self.optimizer.state.clear()
                if state.optimizer_state is not None:
                    log.info("optimizer changed from %s to %s: starting its state afresh",
                             state.optimizer_name, self.options.optimizer)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(where, f"does not fit the model ({exc})") from exc
        if self.true_face is not None:
            if state.true_face is not None:
                try:
                    self.true_face.load_state_dict(state.true_face)
                except (RuntimeError, ValueError, KeyError) as exc:
                    raise CheckpointError(where, f"its true face discriminator does not fit "
                                          f"({exc})") from exc
            else:  # saved before the true face was on: start it afresh (also on a rollback)
                self.true_face.reset()
        options = self.options
        use_session_options(self.optimizer, options.learning_rate,
                            (options.beta1, options.beta2), setup.epsilon(options),
                            options.weight_decay)
        self.clipper.history.clear()
        self.clipper.history.extend(state.autoclip_history)
        self.precision.load_state_dict(state.grad_scaler)
        if isinstance(state.rng.get("torch"), torch.Tensor):
            torch.set_rng_state(state.rng["torch"])
        cuda = state.rng.get("cuda")
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        self.iteration = state.iteration
        self.lr_scale = state.lr_scale
        self.rollbacks = list(state.rollbacks)
        self.lr_found = state.lr_found
        self.started_from = state.started_from
        self.drew_faces = state.drew_faces
        self.sessions = [dict(s) for s in state.sessions]
        self.losses_since_save = list(state.losses_since_save)

"""The training state: where a model's training stands, as its checkpoint holds it.

A checkpoint is one plain dict (nanoGPT's shape): a header saying which model it is (name,
model options, the session's trainer options, batch size; see ``Trainer.checkpoint_header``)
and this state. :class:`TrainState` has one to-dict (:meth:`TrainState.to_dict`, what a save
writes) and one from-dict (:meth:`TrainState.from_dict`, what a resume and a rollback read,
older checkpoints included). ``Trainer.capture`` takes it from a live trainer and
``Trainer.restore`` puts it back: saving, resuming, rolling back and the learning-rate finder
(which puts back what it captured) all move the same fields, so a field added here travels
with every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# What a rollback keeps of the live state instead of the checkpoint's: facts about this run,
# not progress the undone iterations made. The rate it lowers and the record of rollbacks
# (``lr_scale``, ``rollbacks``), the session going on (``sessions``), a rate the finder found
# this session (``lr_found``) and that the model once drew faces (``drew_faces``, the collapse
# guard's): all would be lost with the checkpoint's older values.
KEPT_BY_ROLLBACK = ("lr_scale", "rollbacks", "sessions", "lr_found", "drew_faces")


@dataclass
class TrainState:
    """Every field is required: a field added later that a capture forgets fails loudly."""

    iteration: int  # iterations completed
    model_state: dict[str, torch.Tensor]  # the model's weights
    # The optimizer's state (moments, step counts); None when not saved (save_optimizer).
    optimizer_state: dict[str, Any] | None
    # Which optimizer ``optimizer_state`` belongs to (in the file: trainer_options.optimizer;
    # another optimizer next session starts its state afresh).
    optimizer_name: str
    true_face: dict[str, Any] | None  # the true face's discriminator (TrueFace.state_dict)
    autoclip_history: list[float]  # AutoClip's gradient norms
    grad_scaler: dict[str, Any]  # fp16's loss scale ({} when not scaling)
    rng: dict[str, Any]  # torch's (and CUDA's) random state; the loader's seed, for the record
    lr_scale: float  # lowered by each rollback
    rollbacks: list[dict[str, Any]]  # what each rollback did and why
    lr_found: dict[str, Any] | None  # the finder's rate and what it was found for
    started_from: dict[str, Any] | None  # the checkpoint a new model took its weights from
    drew_faces: bool  # the collapse guard: a save once found faces drawn
    sessions: list[dict[str, Any]]  # start, end, iterations, batch size; the last one: this
    # The loss of each iteration since the checkpoint was written (the backup's average).
    # Never in the file: a checkpoint is, by definition, zero iterations after its save.
    losses_since_save: list[float]

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's state keys (the header's go beside them)."""
        state: dict[str, Any] = {
            "model_state": self.model_state,
            "iteration": self.iteration,
            "rng": self.rng,
            "autoclip_history": list(self.autoclip_history),
            "grad_scaler": self.grad_scaler,
            "lr_scale": self.lr_scale,
            "rollbacks": list(self.rollbacks),
            "lr_found": self.lr_found,
            "started_from": self.started_from,
            "drew_faces": self.drew_faces,
            "true_face": self.true_face,
            "history": {"sessions": [dict(s) for s in self.sessions]},
        }
        if self.optimizer_state is not None:
            state["optimizer_state"] = self.optimizer_state
        return state

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """The state of a loaded checkpoint; keys an older swapd did not write get the values
        a model that never had them would have."""
        found, started = data.get("lr_found"), data.get("started_from")
        true_face = data.get("true_face")
        history = data.get("history")
        sessions = history.get("sessions", []) if isinstance(history, dict) else []
        return cls(
            iteration=int(data["iteration"]),
            model_state=data["model_state"],
            optimizer_state=data.get("optimizer_state"),
            optimizer_name=str(data.get("trainer_options", {}).get("optimizer", "adam")),
            true_face=true_face if isinstance(true_face, dict) else None,
            autoclip_history=[float(x) for x in data.get("autoclip_history", [])],
            grad_scaler=data.get("grad_scaler") or {},
            rng=data.get("rng") or {},
            lr_scale=float(data.get("lr_scale", 1.0)),
            rollbacks=list(data.get("rollbacks", [])),
            lr_found=found if isinstance(found, dict) else None,
            started_from=started if isinstance(started, dict) else None,
            drew_faces=bool(data.get("drew_faces", False)),
            sessions=[dict(s) for s in sessions],
            losses_since_save=[],
        )


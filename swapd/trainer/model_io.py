"""A trainer's model folder, written and read back: the checkpoint, the backup, snapshots and
rollbacks (faceswap's model I/O, plugins/train/model/_base/io.py).

A save writes the trainer's :class:`~swapd.trainer.state.TrainState` beside its header as one
atomic ``model.pt``; the collapse guard looks at the faces drawn first and refuses a model that
went flat (see :mod:`swapd.trainer.divergence`). A save whose average loss since the previous
one is the lowest so far is also kept as the backup (see :mod:`swapd.trainer.backup`). A
rollback puts the checkpoint's state back, all but what it keeps of the run
(:data:`~swapd.trainer.state.KEPT_BY_ROLLBACK`), at a lower learning rate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from swapd.trainer.backup import backup_info, keep_backup
from swapd.trainer.checkpoint import load_checkpoint, replace_checkpoint, save_checkpoint
from swapd.trainer.divergence import (
    DRAWN_FACES,
    FLAT_OUTPUT,
    OutputCollapsedError,
    TrainingDivergedError,
)
from swapd.trainer.loop import Trainer
from swapd.trainer.options import TrainerOptions
from swapd.trainer.setup import now
from swapd.trainer.snapshots import (
    Policy,
    Snapshot,
    prune_snapshots,
    set_aside_after,
    take_snapshot,
)
from swapd.trainer.state import KEPT_BY_ROLLBACK, TrainState
from swapd.trainer.tracker import TrackedFace, track

log = logging.getLogger(__name__)

# Trainer options that change what a loss value means (a backup's loss compares only if equal).
LOSS_SETTINGS = ("loss", "extra_losses", "penalized_mask_loss", "background_weight",
                 "eye_multiplier", "mouth_multiplier", "mask_type", "mask_dilation",
                 "coverage", "centering", "mask_loss_weight", "true_face_power")


@dataclass(frozen=True)
class SnapshotTaken:
    snapshot: Snapshot
    removed: list[int]  # iterations of older snapshots the policy pruned
    tracked: list[TrackedFace]  # the snapshot's tracker data


def _with_defaults(saved: object, current: dict[str, Any]) -> dict[str, Any] | None:
    """A backup's loss settings for the keys of ``current``, a key it predates at its default
    (so an older backup still compares); None if it has none."""
    if not isinstance(saved, dict):
        return None
    defaults = TrainerOptions().model_dump()
    return {key: saved.get(key, defaults.get(key)) for key in current}


class ModelIO:
    """Saves ``trainer`` to its model folder, keeps its backup and snapshots, and rolls it back
    to its checkpoint. Under torchrun only the first process writes."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        # The backup's iteration and average loss; backup.json, written once the copy is in
        # place, is the truth about it.
        self.backup: dict[str, Any] | None = (backup_info(trainer.model_dir) if trainer.resumed
                                              else None)
        self.last_average_loss: float | None = None  # between the last two saves
        self.saved_at = -1  # the iteration model.pt holds, when this session wrote it

    def save(self, final: bool = False) -> Path:
        """Write the checkpoint atomically to ``model_dir/model.pt``. ``final``: the session's
        last save (stop, target reached), which keeps the optimizer's state under
        ``save_optimizer = "exit"``. :class:`OutputCollapsedError` when the collapse guard
        refuses it."""
        trainer = self.trainer
        if not trainer.is_main:  # the first process writes for all
            trainer.losses_since_save = []
            return trainer.checkpoint_path
        if trainer.options.collapse_guard and trainer.distributed is None:
            self.check_not_collapsed()
        policy = trainer.options.save_optimizer
        with_optimizer = policy == "always" or (policy == "exit" and final)
        losses = trainer.losses_since_save
        average = sum(losses) / len(losses) if losses else None
        trainer.session["end"] = now()
        path = save_checkpoint(trainer.checkpoint_path, {**trainer.checkpoint_header(),
                                                         **trainer.capture(with_optimizer).to_dict()})
        trainer.losses_since_save = []
        self.last_average_loss, self.saved_at = average, trainer.iteration
        settings = self.loss_settings()
        comparable = (self.backup is not None
                      and _with_defaults(self.backup.get("loss_settings"), settings) == settings)
        if average is not None and (not comparable or average < self.backup["average_loss"]):
            info = {"iteration": trainer.iteration, "average_loss": average, "time": now(),
                    "loss_settings": settings}
            keep_backup(path, info, supersede=self.backup is not None and not comparable)
            self.backup = info  # only once the copy and backup.json exist
        return path

    def check_not_collapsed(self) -> None:
        """The collapse guard, before a save: :class:`OutputCollapsedError` if the model drew
        faces before and now draws flat colour."""
        trainer = self.trainer
        spread = trainer.output_spread()
        if trainer.drew_faces and spread <= FLAT_OUTPUT:
            raise OutputCollapsedError(trainer.iteration, spread)
        trainer.drew_faces = trainer.drew_faces or spread >= DRAWN_FACES

    def loss_settings(self) -> dict[str, Any]:
        """The options a loss value depends on: losses compare only when these agree (the
        mask's weight only for a model that learns one)."""
        options, learns_mask = self.trainer.options, self.trainer.model.learns_mask
        return {key: getattr(options, key) for key in LOSS_SETTINGS
                if key != "mask_loss_weight" or learns_mask}

    def roll_back(self, error: TrainingDivergedError) -> dict[str, Any] | None:
        """After a non-finite loss (or a flat output, :class:`OutputCollapsedError`): put the
        last checkpoint's state back, but for what a rollback keeps of the run, lower the
        learning rate by ``nan_lr_factor`` and return what was done (also kept in the
        checkpoint's ``rollbacks``, with the reason). None when the options say stop, this
        session has rolled back ``nan_max_rollbacks`` times, or there is no checkpoint yet."""
        trainer = self.trainer
        options = trainer.options
        this_session = [r for r in trainer.rollbacks
                        if r.get("session_start") == trainer.session["start"]]
        if (options.on_nan != "rollback" or not trainer.checkpoint_path.exists()
                or len(this_session) >= options.nan_max_rollbacks):
            return None
        saved = TrainState.from_dict(load_checkpoint(trainer.checkpoint_path))
        kept = {name: getattr(trainer, name) for name in KEPT_BY_ROLLBACK}
        trainer.restore(replace(saved, **kept))  # (the iterations since the save are undone)
        trainer.session["iterations"] = trainer.iteration - trainer.session["start_iteration"]
        trainer.lr_scale *= options.nan_lr_factor
        record = {"time": now(), "session_start": trainer.session["start"],
                  "failed_at": error.iteration, "back_to": trainer.iteration,
                  "learning_rate": trainer.scheduled_learning_rate(), "reason": error.reason,
                  **error.details()}
        trainer.rollbacks.append(record)
        log.warning("%s at iteration %d: rolled back to %d, learning rate now %.3g",
                    error.reason, error.iteration, trainer.iteration, record["learning_rate"])
        return record

    def restore_from(self, source: Path) -> tuple[int, Path | None]:
        """Make ``source`` (the backup's or a snapshot's checkpoint) the model's checkpoint and
        the trainer's state, while this trainer holds the model folder: the checkpoint it
        replaces is kept in ``replaced/``, snapshots past it are set aside (as `swapd model
        restore` does), and the run goes on from there; this session's record and the
        rollbacks so far stay. Returns (the restored iteration, where the replaced one went)."""
        trainer = self.trainer
        state = TrainState.from_dict(load_checkpoint(source))  # a broken copy changes nothing
        iteration, replaced = replace_checkpoint(source, trainer.checkpoint_path,
                                                 state.iteration)
        set_aside_after(trainer.model_dir, iteration)
        trainer.restore(replace(state, sessions=trainer.sessions, rollbacks=trainer.rollbacks))
        trainer.session["iterations"] = max(0, iteration - trainer.session["start_iteration"])
        self.saved_at = iteration
        return iteration, replaced

    def snapshot(self, policy: Policy = "all", keep: int = 10, tracker: bool = True,
                 tracker_faces: int = 0) -> SnapshotTaken:
        """Keep this iteration's checkpoint as a snapshot (saving first unless it is saved),
        with its tracker data (``tracker_faces`` per set, 0 = all; see
        :mod:`swapd.trainer.tracker`), then prune older snapshots by ``policy`` (see
        :mod:`swapd.trainer.snapshots`)."""
        trainer = self.trainer
        path = trainer.checkpoint_path if self.saved_at == trainer.iteration else self.save()
        tracked: list[TrackedFace] = []

        def fill(folder: Path) -> None:  # before snapshot.json: a snapshot is whole or absent
            tracked.extend(track(trainer, (trainer.set_a, trainer.set_b), folder,
                                 tracker_faces))

        taken = take_snapshot(path, trainer.iteration,
                              {"time": now(), "average_loss": self.last_average_loss},
                              fill if tracker else None)
        removed = prune_snapshots(trainer.model_dir, policy, keep, just_taken=trainer.iteration)
        return SnapshotTaken(taken, removed, tracked)

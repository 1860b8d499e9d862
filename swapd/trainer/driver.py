"""The one training driver: a session's loop and its cadence, for `swapd train` and the service.

    outcome = run(trainer, Cadence(iterations=..., save_every=...), hooks)

Between steps it takes the caller's requests (stop, pause, resume, save, export); every
``save_every`` iterations it saves (checkpoint, preview, the exports the cadence asks for) and
picks up faces added to or removed from the sets; every ``snapshot_every`` it keeps a
snapshot. A non-finite loss, or a save the collapse guard refuses, rolls the model back to its
checkpoint (or raises, when the options say stop). At the target it saves and ends "done"; on
a stop it saves and ends "stopped", and a save refused then keeps the last checkpoint. Under
torchrun every process takes the same steps and stops together; only the first one writes.

The caller adds only its own: :class:`Hooks` hears what happened (the service's worker writes
it to the state store, ``swapd train`` moves its progress bar) and does the exports (the
exporter sits beside the trainer, not under it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from swapd.trainer.divergence import (
    NonFiniteLossError,
    OutputCollapsedError,
    TrainingDivergedError,
)
from swapd.trainer.loop import StepStats, Trainer
from swapd.trainer.model_io import ModelIO, SnapshotTaken
from swapd.trainer.snapshots import Policy

PAUSED_POLL_SECONDS = 0.5  # how often a paused session asks for requests again

# Why a save happens: the cadence's ("save", "snapshot"), a request ("save", "export"), the
# target ("done") or the end of the session ("exit").
SaveReason = Literal["save", "snapshot", "export", "done", "exit"]


@dataclass(frozen=True)
class Cadence:
    """When a session saves, keeps snapshots and exports, and where it ends."""

    preview: Path  # where each save writes the preview grid
    iterations: int = 0  # the target (0 = until stopped)
    save_every: int = 250
    snapshot_every: int = 0  # 0 = no snapshots
    snapshot_policy: Policy = "all"
    snapshot_keep: int = 10
    tracker: bool = True  # tracker data with each snapshot
    tracker_faces: int = 0  # faces per set tracked (0 = all)
    export_on: frozenset[str] = frozenset()  # the save reasons that also export


@dataclass(frozen=True)
class Outcome:
    end: Literal["done", "stopped"]
    saved: int  # the iteration the model folder's checkpoint holds (or the start's)


class Hooks(Protocol):
    """What the caller adds to the driver. A subclass gets these, each doing nothing, and
    overrides what it needs; a class that has them all may also stand for it unsubclassed."""

    def starting(self) -> None:
        """The loop starts (:meth:`Driver.train`): requests are asked for at once."""

    def requests(self) -> Iterable[str]:
        """Requests since the last call, in order: "stop", "pause", "resume", "save",
        "export". Asked before every step: keep it cheap."""
        return ()

    def stepped(self, stats: StepStats) -> None:
        """A step was taken."""

    def saving(self) -> None:
        """A save is about to happen (it may find nothing new to write)."""

    def saved(self, checkpoint: Path, preview: Path, iteration: int) -> None:
        """The checkpoint and the preview were written (first process only)."""

    def export(self, trainer: Trainer) -> None:
        """Export the model (the cadence's ``export_on``, or an "export" request)."""

    def snapshot_taken(self, taken: SnapshotTaken) -> None:
        """A snapshot was kept (and older ones pruned)."""

    def rolled_back(self, record: dict[str, Any]) -> None:
        """The model went back to its checkpoint (the record ModelIO.roll_back keeps)."""

    def kept_last_checkpoint(self, error: OutputCollapsedError, iteration: int) -> None:
        """At the end of the session the collapse guard refused the save: the checkpoint at
        ``iteration`` stays (if there is one), nothing is exported."""

    def faces_changed(self, added: int, removed: int) -> None:
        """A save's rescan found faces added to or removed from the sets."""

    def paused(self, paused: bool) -> None:
        """A pause (saved first) or a resume was done."""


class Driver:
    """Drives one session of ``trainer`` (see the module doc); :meth:`train` runs it whole,
    :meth:`step` and :meth:`save` one part."""

    def __init__(self, trainer: Trainer, cadence: Cadence, hooks: Hooks) -> None:
        self.trainer, self.cadence, self.hooks = trainer, cadence, hooks
        self.io = ModelIO(trainer)
        self.saved_iteration = trainer.iteration  # what the checkpoint holds
        self.exported_iteration = -1

    @property
    def target_reached(self) -> bool:
        return 0 < self.cadence.iterations <= self.trainer.iteration

    def train(self) -> Outcome:
        """Train until the target or a stop request; saves at the end."""
        trainer, hooks = self.trainer, self.hooks
        paused = False
        hooks.starting()
        while True:
            stop = False
            for request in hooks.requests():
                if request == "stop":
                    stop = True
                elif request == "pause":
                    paused = True
                    self.save("save")
                    hooks.paused(True)
                elif request == "resume":
                    paused = False
                    hooks.paused(False)
                elif request == "save":
                    self.save("save")
                elif request == "export" and self.save("export"):
                    self.export()  # (what it saved: the collapse guard looked first)
            if trainer.distributed is not None:  # every process stops at the same step
                stop = trainer.distributed.any(stop, trainer.device)
            if stop:
                break
            if paused:
                time.sleep(PAUSED_POLL_SECONDS)
                continue
            if self.target_reached and self.save("done"):
                return Outcome("done", self.saved_iteration)
            self.step()  # (a save refused at the target rolled back: training goes on)
        self.save("exit")
        return Outcome("stopped", self.saved_iteration)

    def step(self) -> StepStats | None:
        """One step and what the cadence asks after it; None when the step was undone (a
        non-finite loss, rolled back)."""
        try:
            stats = self.trainer.step()
        except NonFiniteLossError as exc:
            self.roll_back(exc)
            return None
        self.hooks.stepped(stats)
        cadence = self.cadence
        if stats.iteration % cadence.save_every == 0 and not self.save("save"):
            return stats  # refused by the collapse guard, and rolled back
        if cadence.snapshot_every and stats.iteration % cadence.snapshot_every == 0:
            self.snapshot()
        return stats

    def save(self, reason: SaveReason) -> bool:
        """Checkpoint and preview (unless the checkpoint holds this iteration already), the
        export if the cadence asks for one at ``reason``, and at a "save" the faces picked up.
        False when the collapse guard refused the checkpoint: rolled back, or at "exit" the
        last checkpoint kept."""
        trainer = self.trainer
        iteration = trainer.iteration
        final = reason in ("exit", "done")
        self.hooks.saving()
        # Under save_optimizer = "exit" the last save writes again, with the optimizer's state.
        if iteration != self.saved_iteration or (
                final and trainer.options.save_optimizer == "exit"):
            try:
                checkpoint = self.io.save(final=final)  # (the first process writes for all)
            except OutputCollapsedError as exc:  # (the guard is off under torchrun)
                if reason != "exit":
                    self.roll_back(exc)
                    return False
                self.hooks.kept_last_checkpoint(exc, self.saved_iteration)
                return False
            self.saved_iteration = iteration
            if trainer.is_main:
                preview = trainer.write_preview(self.cadence.preview)
                self.hooks.saved(checkpoint, preview, iteration)
        if (reason in self.cadence.export_on and iteration != self.exported_iteration
                and iteration and trainer.is_main):
            self.export()
        if reason == "save" and trainer.distributed is None:  # every process keeps the same
            added, removed = trainer.refresh_faces()  # sets under torchrun: no rescans there
            if added or removed:
                self.hooks.faces_changed(added, removed)
        return True

    def snapshot(self) -> None:
        """Save (and export, if the cadence exports at snapshots), then keep the snapshot;
        the first process only."""
        if not self.trainer.is_main or not self.save("snapshot"):
            return
        cadence = self.cadence
        self.hooks.snapshot_taken(self.io.snapshot(cadence.snapshot_policy,
                                                   cadence.snapshot_keep, cadence.tracker,
                                                   cadence.tracker_faces))

    def export(self) -> None:
        self.hooks.export(self.trainer)
        self.exported_iteration = self.trainer.iteration

    def roll_back(self, error: TrainingDivergedError) -> None:
        """Back to the checkpoint at a lower rate after ``error``; raises it when the options
        (on_nan, nan_max_rollbacks) say stop."""
        record = self.io.roll_back(error)
        if record is None:
            raise error
        self.saved_iteration = self.trainer.iteration
        self.hooks.rolled_back(record)


def run(trainer: Trainer, cadence: Cadence, hooks: Hooks) -> Outcome:
    """Train one session of ``trainer`` (see the module doc)."""
    return Driver(trainer, cadence, hooks).train()

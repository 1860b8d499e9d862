"""The one training driver: a session's loop and its cadence, for `swapd train` and the service.

    outcome = run(trainer, Cadence(iterations=..., save_every=...), hooks)

Between steps it takes the caller's requests (stop, pause, resume, save, snapshot, export,
restore: the backup or a snapshot) and says what came of each; every
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from swapd.fsutil import atomic_copy
from swapd.trainer.backup import FOLDER as BACKUP_FOLDER
from swapd.trainer.checkpoint import CHECKPOINT_NAME, CheckpointError
from swapd.trainer.divergence import (
    NonFiniteLossError,
    OutputCollapsedError,
    TrainingDivergedError,
)
from swapd.trainer.loop import StepStats, Trainer
from swapd.trainer.model_io import ModelIO, SnapshotTaken
from swapd.trainer.snapshots import Policy, SnapshotError, find_snapshot

PAUSED_POLL_SECONDS = 0.5  # how often a paused session asks for requests again

# Why a save happens: the cadence's ("save", "snapshot"), a request ("save", "export"), the
# target ("done") or the end of the session ("exit").
SaveReason = Literal["save", "snapshot", "export", "done", "exit"]


@dataclass(frozen=True)
class Request:
    """Something asked of a running session (by the service's control queue, or a signal):
    ``action`` is "stop", "pause", "resume", "save", "snapshot", "export", "restore" (with
    ``args`` {"snapshot": N}, else the backup) or "retune" (an edited job file's live changes,
    ``args`` {"cadence": {...}, "options": {...}}: :meth:`Driver.retune`); ``id`` is the
    caller's, for its answer."""

    action: str
    args: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


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

    def requests(self) -> Iterable[str | Request]:
        """Requests since the last call, in order (an action's name, or a :class:`Request`).
        Asked before every step: keep it cheap."""
        return ()

    def request_done(self, request: Request, result: str) -> None:
        """What came of a request, in words."""

    def restored(self, iteration: int, source: str, replaced: Path | None) -> None:
        """A restore brought back ``source`` ("backup" or "snapshot N") at ``iteration``; the
        checkpoint it replaced was kept at ``replaced``."""

    def stepped(self, stats: StepStats) -> None:
        """A step was taken."""

    def saving(self) -> None:
        """A save is about to happen (it may find nothing new to write)."""

    def checkpointed(self, checkpoint: Path, iteration: int) -> None:
        """The checkpoint was written (first process only), before its preview: a preview
        that then fails (a full disk) leaves the checkpoint known."""

    def saved(self, checkpoint: Path, preview: Path, iteration: int) -> None:
        """The checkpoint's preview was written too (first process only)."""

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
        self.snapshots_taken = 0

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
            for asked in hooks.requests():
                request = asked if isinstance(asked, Request) else Request(asked)
                if request.action == "stop":
                    stop = True
                    result = f"stopping at iteration {trainer.iteration} (it saves first)"
                elif request.action == "pause":
                    paused = True
                    result = self._saved_or_refused(self.save("save"), "paused")
                    hooks.paused(True)
                elif request.action == "resume":
                    paused = False
                    result = f"training from iteration {trainer.iteration}"
                    hooks.paused(False)
                else:
                    result = self.act(request)
                hooks.request_done(request, result)
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

    def act(self, request: Request) -> str:
        """Do a save, snapshot, export or restore asked between steps; what came of it."""
        trainer = self.trainer
        if request.action == "save":
            return self._saved_or_refused(self.save("save"), "saved")
        if request.action == "snapshot":
            if not trainer.is_main:
                return "snapshots are the first process's"
            before = self.snapshots_taken
            self.snapshot()
            return (f"snapshot at iteration {trainer.iteration}"
                    if self.snapshots_taken > before else
                    "no snapshot: the collapse guard refused the save (rolled back)")
        if request.action == "export":
            if not self.save("export"):
                return "not exported: the collapse guard refused the save (rolled back)"
            self.export()  # (what it saved: the collapse guard looked first)
            return f"exported at iteration {trainer.iteration}"
        if request.action == "restore":
            return self.restore(request.args.get("snapshot"))
        if request.action == "retune":
            return self.retune(request.args.get("cadence") or {},
                               request.args.get("options") or {})
        return f"unknown request {request.action!r}"

    def retune(self, cadence: dict[str, Any], options: dict[str, Any]) -> str:
        """Take an edited job file's live changes from the next step on: ``cadence`` holds
        :class:`Cadence` fields, ``options`` trainer options (None: back to the default).
        A target at or below the current iteration ends the session at once (saved, "done").
        Options that do not validate change nothing (the service checked them already: this
        guards a request written by something else)."""
        from swapd.trainer.options import (  # (beside the trainer's other option checks)
            OptionsError,
            retuned_options,
        )

        trainer = self.trainer
        iterations = int(cadence.get("iterations", self.cadence.iterations))
        try:
            new_options, schedule_end = retuned_options(trainer.options, options, iterations)
            if "export_on" in cadence:
                cadence = {**cadence, "export_on": frozenset(cadence["export_on"])}
            new_cadence = replace(self.cadence, **cadence)
        except (OptionsError, TypeError) as exc:
            return f"not changed: {exc}"
        focus = new_options.focus_weight != trainer.options.focus_weight
        self.cadence, trainer.options, trainer.lr_schedule_end = (new_cadence, new_options,
                                                                  schedule_end)
        if focus:  # the marked faces are drawn at the new weight from the next batch
            for face_set in (trainer.set_a, trainer.set_b):
                face_set.set_focus(face_set.focus, new_options.focus_weight)
        changed = {**cadence, **{k: getattr(new_options, k) for k in options}}
        said = ", ".join(f"{key} = {_shown(value)}" for key, value in changed.items())
        if self.target_reached:
            said += f" (the target is reached: it ends at iteration {trainer.iteration})"
        return f"from iteration {trainer.iteration}: {said or 'nothing changed'}"

    def _saved_or_refused(self, saved: bool, done: str) -> str:
        if saved:
            return f"{done} at iteration {self.saved_iteration}"
        return (f"{done}; the save was refused by the collapse guard: rolled back to "
                f"iteration {self.saved_iteration}")

    def restore(self, snapshot: int | None) -> str:
        """Bring back the backup (or the snapshot at ``snapshot``) and go on from it; the
        live model is saved first, so the checkpoint kept in ``replaced/`` is the newest."""
        trainer = self.trainer
        if not trainer.is_main or trainer.distributed is not None:
            return "not restored: restore a model trained under torchrun with swapd model restore"
        if snapshot is None:
            source, what = trainer.model_dir / BACKUP_FOLDER / CHECKPOINT_NAME, "backup"
            if not source.is_file():
                return "not restored: no backup yet"
        else:
            try:
                source = find_snapshot(trainer.model_dir, int(snapshot)).checkpoint
            except SnapshotError as exc:
                return f"not restored: {exc.reason}"
            what = f"snapshot {snapshot}"
        # Save first, so the checkpoint kept in replaced/ is the newest; that save may make
        # itself the backup, so the backup asked for is set aside before it.
        # (named as a save's temp file: one a kill leaves behind goes at the next start)
        held = atomic_copy(source, trainer.model_dir / f".{CHECKPOINT_NAME}.restoring.tmp",
                           durable=False)
        try:
            self.save("save")
            iteration, replaced = self.io.restore_from(held)
        except CheckpointError as exc:
            return f"not restored: {exc.reason}"
        finally:
            held.unlink(missing_ok=True)
        self.saved_iteration = iteration
        self.hooks.restored(iteration, what, replaced)
        kept = (f"; the checkpoint it replaced is kept as "
                f"{replaced.relative_to(trainer.model_dir)}" if replaced else "")
        return f"restored the {what.split()[0]} at iteration {iteration}{kept}"

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
                self.hooks.checkpointed(checkpoint, iteration)
                preview = trainer.write_preview(self.cadence.preview,
                                                history=trainer.options.preview_history)
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
        self.snapshots_taken += 1

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


def _shown(value: object) -> str:
    if isinstance(value, frozenset | set | list | tuple):
        return "[" + ", ".join(sorted(str(v) for v in value)) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def run(trainer: Trainer, cadence: Cadence, hooks: Hooks) -> Outcome:
    """Train one session of ``trainer`` (see the module doc)."""
    return Driver(trainer, cadence, hooks).train()

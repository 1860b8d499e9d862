"""The training worker: one process per training job, started and supervised by the service.

    python -m swapd.daemon.train_worker --workspace DIR --job NAME

It trains until the job's iteration target, a stop request (SIGTERM, SIGINT, the "stop" control,
the service disappearing) or a crash. Every `save_every` iterations it saves an atomic checkpoint,
writes a preview and (if the job asks) exports ONNX; every `snapshot_every` it also keeps a
snapshot. That cadence is the training driver's (swapd.trainer.driver), as for `swapd train`;
the worker adds its writes to the state store (losses in batches, artifacts, events), reads the
control queue, and hands the trainer the face index.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swapd.config import ConfigError, JobFile, TrainSection
from swapd.daemon.disk import DiskFullError, save_shortage
from swapd.daemon.idle_controls import restored_to
from swapd.daemon.run_records import SessionRecord, describe_job
from swapd.daemon.workers import (
    EXIT_BAD_INPUT,
    EXIT_BUSY,
    EXIT_DISK_FULL,
    EXIT_NON_FINITE,
    EXIT_OK,
    parent_alive,
)
from swapd.fsutil import is_disk_full
from swapd.state import StateStore
from swapd.workspace import Workspace

if TYPE_CHECKING:  # torch loads in the worker only once training starts
    from swapd.faces.validate import FaceLayout
    from swapd.trainer.divergence import OutputCollapsedError
    from swapd.trainer.driver import Request
    from swapd.trainer.loop import StepStats, Trainer
    from swapd.trainer.model_io import SnapshotTaken

log = logging.getLogger("swapd.train_worker")

FLUSH_SECONDS = 2.0  # how often losses and progress reach the state store
CONTROL_SECONDS = 0.5  # how often pending controls are read


class StopFlag:
    """Set by SIGTERM/SIGINT once :meth:`install` ran; the driver asks it between steps."""

    def __init__(self) -> None:
        self.set = False

    def install(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        log.info("signal %s: saving and stopping", signal.Signals(signum).name)
        self.set = True


class StoreHooks:
    """The worker's part of a session (the driver's Hooks, all of them): what the driver reports
    goes to the state store (losses and progress in batches, artifacts, events), requests come
    from its control queue."""

    def __init__(self, workspace: Workspace, name: str, store: StateStore, trainer: Trainer,
                 stop: StopFlag) -> None:
        self.ws, self.name, self.store = workspace, name, store
        self.trainer, self.stop = trainer, stop
        self._pending: list[tuple[Any, ...]] = []
        self._last_flush = time.monotonic()
        self._examples_since_flush = 0
        self._last_controls = 0.0
        self.session = SessionRecord(name, trainer)
        self.interrupted = False  # stopped by a signal or the service's end, not a request
        self.is_paused = False
        # what the model folder's checkpoint holds (None: no checkpoint yet)
        self.saved_iteration = trainer.iteration if trainer.checkpoint_path.is_file() else None

    def starting(self) -> None:
        self._last_controls = 0.0  # controls are read at once, then every CONTROL_SECONDS
        describe_job(self.store, self.name, self.trainer)
        self.session.record_earlier(self.store)
        self.apply_focus()

    def requests(self) -> Iterable[str | Request]:
        from swapd.trainer.driver import Request

        if self.stop.set or not parent_alive():
            # not the user's stop: a signal (the service stopping) or the service gone
            self.interrupted = True
            return ("stop",)
        if time.monotonic() - self._last_controls < CONTROL_SECONDS:
            return ()
        self._last_controls = time.monotonic()
        asked = []
        for request in self.store.take_control_requests(self.name):
            if request.action == "focus":  # the marks are in the store: take them all again
                self.store.finish_control(request.id, self.apply_focus())
            else:
                asked.append(Request(request.action, request.args, request.id))
        return asked

    def request_done(self, request: Request, result: str) -> None:
        if request.id is not None:
            self.store.finish_control(request.id, result)

    def apply_focus(self) -> str:
        """Draw the faces marked focus in the state store more often (the dashboard's marks);
        what the sets now draw, in words."""
        marked = self.store.focus_faces(self.name)
        for side in ("a", "b"):
            self.trainer.set_focus(side, marked.get(side, set()))
        weight = self.trainer.options.focus_weight
        return (f"focus: {len(marked.get('a', ()))} faces of A, {len(marked.get('b', ()))} of "
                f"B drawn {weight:g}x as often")

    def stepped(self, stats: StepStats) -> None:
        components = {side: {name: float(f"{value:.6g}") for name, value in parts.items()}
                      for side, parts in (("a", stats.components_a), ("b", stats.components_b))}
        if stats.discriminator_loss is not None:  # `swapd losses`: true_face_discriminator
            components["true_face"] = {"discriminator": float(f"{stats.discriminator_loss:.6g}")}
        self._pending.append((stats.iteration, time.time(), stats.loss_a, stats.loss_b,
                              components, stats.learning_rate,
                              round(stats.examples_per_second, 2)))
        self._examples_since_flush += stats.examples
        self.session.stepped(stats)
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        elapsed = time.monotonic() - self._last_flush
        egs = self._examples_since_flush / elapsed if elapsed > 0 and self._pending else None
        if self._pending:
            self.store.add_losses(self.name, self._pending)
            self._pending = []
        self.store.set_job_progress(self.name, self.trainer.iteration, egs)
        self.session.record(self.store)
        self._last_flush = time.monotonic()
        self._examples_since_flush = 0

    def saving(self) -> None:
        """Before a save: refuse it (DiskFullError) when the disk lacks the room for it, rather
        than fail half-written; then the losses so far go to the state store."""
        full = self.disk_full()
        if full is not None:
            raise full
        self.flush()

    def disk_full(self) -> DiskFullError | None:
        """The error to raise (or, after an error, to report instead) when the model folder's
        disk lacks the room for a save."""
        parameters = sum(p.numel() for p in self.trainer.model.parameters())
        found = save_shortage(self.trainer.model_dir, parameters, self.saved_iteration)
        return None if found is None else DiskFullError(found)

    def checkpointed(self, checkpoint: Path, iteration: int) -> None:
        self.saved_iteration = iteration
        self.store.add_artifact(self.name, "checkpoint", str(checkpoint), iteration)

    def saved(self, checkpoint: Path, preview: Path, iteration: int) -> None:
        from swapd.trainer.preview import history_path

        kept = history_path(preview.parent, iteration)  # the dashboard's slider goes back
        self.store.add_artifact(self.name, "preview", str(kept if kept.is_file() else preview),
                                iteration)

    def restored(self, iteration: int, source: str, replaced: Path | None) -> None:
        self._pending = [p for p in self._pending if p[0] <= iteration]
        kept = f"; the replaced one is kept in {self.ws.relative(replaced)}" if replaced else ""
        restored_to(self.store, self.name, iteration, source,
                    f"restored the {source.split()[0]} at iteration {iteration}{kept}")

    def export(self, trainer: Trainer) -> None:
        from swapd.exporter.checkpoint_export import export_trainer

        path = self.ws.exports_dir(self.name) / "a_to_b.onnx"
        report = export_trainer(trainer, path)
        self.store.add_artifact(self.name, "export", str(path), trainer.iteration,
                                {"max_abs_diff": report.max_abs_diff})
        self.store.log_event(f"exported ONNX at iteration {trainer.iteration} "
                             f"(parity max abs diff {report.max_abs_diff:.2e})", self.name)

    def snapshot_taken(self, taken: SnapshotTaken) -> None:
        snapshot = taken.snapshot
        self.store.add_tracked_faces(self.name, snapshot.iteration, taken.tracked)
        self.store.forget_tracked_faces(self.name, taken.removed)
        self.store.log_event(f"snapshot at iteration {snapshot.iteration} "
                             f"({self.ws.relative(snapshot.folder)}, "
                             f"{len(taken.tracked)} faces tracked)", self.name)

    def rolled_back(self, record: dict[str, Any]) -> None:
        # Losses past the checkpoint belong to the history that was undone.
        self._pending = [p for p in self._pending if p[0] <= record["back_to"]]
        self.store.truncate_losses(self.name, record["back_to"])
        self.store.add_mark(self.name, record["back_to"], "rollback", {
            "reason": record["reason"], "failed_at": record["failed_at"],
            "learning_rate": float(f"{record['learning_rate']:.3g}")})
        self.store.log_event(
            f"{record['reason']} at iteration {record['failed_at']}: rolled back to the "
            f"checkpoint at {record['back_to']}, learning rate now "
            f"{record['learning_rate']:.3g}", self.name, level="warning")

    def kept_last_checkpoint(self, error: OutputCollapsedError, iteration: int) -> None:
        kept = (f"the checkpoint at {iteration} stays"
                if self.trainer.checkpoint_path.exists() else "no checkpoint was written")
        self.store.log_event(f"{error}: {kept}", self.name, level="warning")

    def faces_changed(self, added: int, removed: int) -> None:
        self.store.log_event(f"faces changed: {added} added, {removed} removed", self.name)

    def paused(self, paused: bool) -> None:
        self.is_paused = paused
        self.store.set_job_state(self.name, "paused" if paused else "training")

    def end_state(self, end: str) -> str:
        """The job's state once the session ended ``end`` ("done" or "stopped"): a session
        cut short by a signal or by the service's end is "interrupted" (a service started
        again trains it on), one paused stays "paused"; "stopped" is the user's stop."""
        if end == "stopped" and self.is_paused:
            return "paused"
        return "interrupted" if end == "stopped" and self.interrupted else end


def indexed_faces(store: StateStore, workspace: Workspace, folder: Path
                  ) -> dict[str, tuple[tuple[int, int], FaceLayout]]:
    """The face index's layouts of a face set of the workspace, by file name, with the
    (mtime_ns, size) each was read at (see swapd.trainer.data.FaceIndex); nothing for a folder
    outside faces/. A faceswap or DeepFaceLab face indexed before the index kept the centering
    is left out: the trainer reads its file."""
    import numpy as np

    from swapd.faces.validate import FaceLayout

    if folder.resolve().parent != workspace.faces.resolve():
        return {}
    held = {}
    for row in store.faces(folder.name):
        if row.status != "ok" or (row.centering is None and row.kind != "plain"):
            continue
        held[row.name] = ((row.mtime_ns, row.size), FaceLayout(
            None if row.landmarks is None else np.asarray(row.landmarks, np.float64),
            row.centering, realign=row.kind == "deepfacelab", yaw=row.yaw, pitch=row.pitch))
    return held


class TrainingRun:
    """One job's trainer, driven by :class:`~swapd.trainer.driver.Driver` with the worker's
    hooks."""

    def __init__(self, workspace: Workspace, name: str, job: JobFile, store: StateStore,
                 stop: StopFlag | None = None) -> None:
        from swapd.trainer.driver import Cadence, Driver
        from swapd.trainer.loop import Trainer
        from swapd.trainer.options import split_options

        assert job.train is not None
        train: TrainSection = job.train
        trainer_options, model_options = split_options(train.model, train.options)
        self.trainer = Trainer(
            model=train.model,
            model_options=model_options.model_dump(),
            trainer_options=trainer_options,
            faces_a=workspace.resolve(train.a),
            faces_b=workspace.resolve(train.b),
            model_dir=workspace.model_dir(name),
            batch_size=train.batch_size,
            # Faces the service indexed are read from the index, their files only decoded.
            face_index=lambda folder: indexed_faces(store, workspace, folder),
            iterations_target=train.iterations,
            start_from=workspace.resolve(train.start_from) if train.start_from else None,
        )
        # Losses past the checkpoint were never saved: the history restarts from there.
        store.truncate_losses(name, self.trainer.iteration)
        self.hooks = StoreHooks(workspace, name, store, self.trainer, stop or StopFlag())
        self.driver = Driver(self.trainer, Cadence(
            preview=workspace.previews_dir(name) / "latest.png", iterations=train.iterations,
            save_every=train.save_every, snapshot_every=train.snapshot_every,
            snapshot_policy=train.snapshot_policy, snapshot_keep=train.snapshot_keep,
            tracker=train.tracker, tracker_faces=train.tracker_faces,
            export_on=frozenset(job.export.on)), self.hooks)

    def close(self) -> None:
        self.trainer.close()


def run(workspace: Workspace, name: str) -> int:
    from swapd.trainer.checkpoint import CheckpointError, ModelBusyError
    from swapd.trainer.divergence import TrainingDivergedError
    from swapd.trainer.lr_finder import LRFinderError, apply_lr_finder

    store = StateStore(workspace.state_db)
    stop = StopFlag().install()
    row = store.job(name)
    if row is None or row.config is None:
        log.error("job %s is not in the state store", name)
        return EXIT_BAD_INPUT
    job = JobFile.model_validate(row.config)
    try:
        training = TrainingRun(workspace, name, job, store, stop)
    except ModelBusyError as exc:  # another process holds the folder: the service retries
        store.set_job_state(name, "waiting", f"{workspace.relative(exc.path)} is in use by "
                            "another process: waiting for it to finish")
        log.warning("%s", exc)
        return EXIT_BUSY
    except (ConfigError, ValueError, FileNotFoundError, CheckpointError) as exc:
        store.set_job_state(name, "error", str(exc))
        store.report_problem(row.path, "job", str(exc))
        log.error("%s", exc)
        return EXIT_BAD_INPUT
    store.set_job_state(name, "training")
    store.log_event(f"training from iteration {training.trainer.iteration}", name)
    trainer = training.trainer
    try:
        found = apply_lr_finder(trainer)
    except LRFinderError as exc:
        training.close()
        store.set_job_state(name, "error", str(exc))
        store.log_event(f"learning-rate finder: {exc}", name, level="error")
        return EXIT_BAD_INPUT
    if found is not None:
        graph = f"; graph {workspace.relative(found.graph)}" if found.graph else ""
        store.log_event(f"learning-rate finder: lowest loss at {found.best:.3g}, "
                        f"learning rate {found.chosen:.3g}{graph}", name)
        if trainer.options.lr_finder == "graph_and_exit":
            training.close()
            store.set_job_state(name, "stopped")
            return EXIT_OK
    if (trainer.options.penalized_mask_loss or trainer.options.eye_multiplier > 1
            or trainer.model.learns_mask):
        learned = "; the learned mask does not train on them" if trainer.model.learns_mask else ""
        for face_set in (trainer.set_a, trainer.set_b):
            if face_set.without_landmarks:
                store.log_event(
                    f"{face_set.without_landmarks} of {len(face_set)} faces in "
                    f"{workspace.relative(face_set.folder)} carry no landmarks: the mask loss "
                    f"counts them whole, without eye or mouth weights{learned}", name,
                    level="warning")
    try:
        final_state = training.hooks.end_state(training.driver.train().end)
    except TrainingDivergedError as exc:
        # The step or save was refused before anything changed: the last checkpoint stays.
        store.set_job_state(name, "error", f"training diverged: {exc}")
        kept = ("the last checkpoint is intact" if training.trainer.checkpoint_path.exists()
                else "nothing was saved")
        store.log_event(f"stopped: {exc.reason} ({exc}); {kept}", name, level="error")
        return EXIT_NON_FINITE
    except Exception as exc:  # a write that failed for want of space is not a crash
        full = exc if isinstance(exc, DiskFullError) else training.hooks.disk_full()
        if full is None and not is_disk_full(exc):
            raise
        _disk_full(store, name, str(full or exc))
        return EXIT_DISK_FULL
    finally:
        training.close()
    store.set_job_state(name, final_state)
    store.log_event(f"{final_state} at iteration {training.trainer.iteration}", name)
    store.close()
    return EXIT_OK


def _disk_full(store: StateStore, name: str, message: str) -> None:
    """Say it (as far as the full disk lets the state store be written); the service waits
    for the space and starts the job again."""
    log.error("%s", message)
    try:
        store.set_job_state(name, "waiting", message)
        store.log_event(message, name, level="error")
    except sqlite3.Error as exc:
        log.error("the state store cannot be written either (%s): the service says it", exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="swapd-train-worker")
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--job", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(Workspace.open(args.workspace, create=False), args.job)


if __name__ == "__main__":
    sys.exit(main())

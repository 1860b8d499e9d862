"""The training worker: one process per training job, started and supervised by the service.

    python -m swapd.daemon.train_worker --workspace DIR --job NAME

It trains until the job's iteration target, a stop request (SIGTERM, SIGINT, the "stop" control,
the service disappearing) or a crash. Every `save_every` iterations it saves an atomic checkpoint,
writes a preview and (if the job asks) exports ONNX; every `snapshot_every` it also keeps a
snapshot. Losses reach the state store in batches.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swapd.config import ConfigError, JobFile, TrainSection
from swapd.daemon.state import StateStore
from swapd.daemon.workers import EXIT_BAD_INPUT, EXIT_NON_FINITE, EXIT_OK, parent_alive
from swapd.workspace import Workspace

if TYPE_CHECKING:  # torch loads in the worker only once training starts
    from swapd.trainer.divergence import TrainingDivergedError

log = logging.getLogger("swapd.train_worker")

FLUSH_SECONDS = 2.0  # how often losses and progress reach the state store
CONTROL_SECONDS = 0.5  # how often pending controls are read


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it between iterations."""

    def __init__(self) -> None:
        self.set = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        log.info("signal %s: saving and stopping", signal.Signals(signum).name)
        self.set = True


class TrainingRun:
    """Drives a `Trainer` for one job and reports to the state store."""

    def __init__(self, workspace: Workspace, name: str, job: JobFile, store: StateStore) -> None:
        from swapd.trainer.data import FoundLandmarks
        from swapd.trainer.loop import Trainer
        from swapd.trainer.model_io import ModelIO
        from swapd.trainer.options import split_options

        assert job.train is not None
        self.ws, self.name, self.job, self.store = workspace, name, job, store
        self.train: TrainSection = job.train
        trainer_options, model_options = split_options(self.train.model, self.train.options)
        self.model_dir = workspace.model_dir(name)
        self.trainer = Trainer(
            model=self.train.model,
            model_options=model_options.model_dump(),
            trainer_options=trainer_options,
            faces_a=workspace.resolve(self.train.a),
            faces_b=workspace.resolve(self.train.b),
            model_dir=self.model_dir,
            batch_size=self.train.batch_size,
            # Faces the service indexed already need no second landmark search.
            landmarks=FoundLandmarks(lambda path, stamp: store.indexed_landmarks(
                path.parent.name, path.name, size=stamp[1], mtime_ns=stamp[0])),
            iterations_target=self.train.iterations,
            start_from=(workspace.resolve(self.train.start_from) if self.train.start_from
                        else None),
        )
        self.io = ModelIO(self.trainer)
        # Losses past the checkpoint were never saved: the history restarts from there.
        store.truncate_losses(name, self.trainer.iteration)
        self._pending: list[tuple[Any, ...]] = []
        self._last_flush = time.monotonic()
        self._examples_since_flush = 0
        self._saved_iteration = self.trainer.iteration
        self._exported_iteration = -1

    @property
    def target_reached(self) -> bool:
        return 0 < self.train.iterations <= self.trainer.iteration

    def step(self) -> None:
        from swapd.trainer.divergence import NonFiniteLossError

        try:
            stats = self.trainer.step()
        except NonFiniteLossError as exc:
            self.roll_back(exc)
            return
        components = {side: {name: float(f"{value:.6g}") for name, value in parts.items()}
                      for side, parts in (("a", stats.components_a), ("b", stats.components_b))}
        if stats.discriminator_loss is not None:  # `swapd losses`: true_face_discriminator
            components["true_face"] = {"discriminator": float(f"{stats.discriminator_loss:.6g}")}
        self._pending.append((stats.iteration, time.time(), stats.loss_a, stats.loss_b,
                              components))
        self._examples_since_flush += stats.examples
        if stats.iteration % self.train.save_every == 0 and not self.save(reason="save"):
            return  # refused by the collapse guard, and rolled back
        if self.train.snapshot_every and stats.iteration % self.train.snapshot_every == 0:
            self.snapshot()
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        elapsed = time.monotonic() - self._last_flush
        egs = self._examples_since_flush / elapsed if elapsed > 0 and self._pending else None
        if self._pending:
            self.store.add_losses(self.name, self._pending)
            self._pending = []
        self.store.set_job_progress(self.name, self.trainer.iteration, egs)
        self._last_flush = time.monotonic()
        self._examples_since_flush = 0

    def roll_back(self, error: TrainingDivergedError) -> None:
        """Back to the last checkpoint at a lower rate after ``error``; raises it when the
        options (on_nan, nan_max_rollbacks) say stop."""
        record = self.io.roll_back(error)
        if record is None:
            raise error
        # Losses past the checkpoint belong to the history that was undone.
        self._pending = [p for p in self._pending if p[0] <= record["back_to"]]
        self.store.truncate_losses(self.name, record["back_to"])
        self.store.log_event(
            f"{record['reason']} at iteration {record['failed_at']}: rolled back to the "
            f"checkpoint at {record['back_to']}, learning rate now "
            f"{record['learning_rate']:.3g}", self.name, level="warning")

    def save(self, reason: str) -> bool:
        """Checkpoint, preview, export (as the job asks) and pick up new faces. False when
        the collapse guard refused the checkpoint: the model was rolled back, or, at "exit",
        the last checkpoint is simply kept."""
        from swapd.trainer.divergence import OutputCollapsedError

        iteration = self.trainer.iteration
        final = reason in ("exit", "done")
        self.flush()
        # Under save_optimizer = "exit" the last save writes again, with the optimizer's state.
        if iteration != self._saved_iteration or (
                final and self.trainer.options.save_optimizer == "exit"):
            try:
                path = self.io.save(final=final)
            except OutputCollapsedError as exc:
                if reason != "exit":
                    self.roll_back(exc)
                    return False
                kept = (f"the checkpoint at {self._saved_iteration} stays"
                        if self.trainer.checkpoint_path.exists() else "no checkpoint was written")
                self.store.log_event(f"{exc}: {kept}", self.name, level="warning")
                return False
            self._saved_iteration = iteration
            self.store.add_artifact(self.name, "checkpoint", str(path), iteration)
            preview = self.trainer.write_preview(self.ws.previews_dir(self.name) / "latest.png")
            self.store.add_artifact(self.name, "preview", str(preview), iteration)
        if reason in self.job.export.on and iteration != self._exported_iteration and iteration:
            self.export()
        if reason == "save":
            added, removed = self.trainer.refresh_faces()
            if added or removed:
                self.store.log_event(f"faces changed: {added} added, {removed} removed",
                                     self.name)
        return True

    def snapshot(self) -> None:
        """Save (and export, if the job exports on snapshots), then keep the snapshot."""
        if not self.save(reason="snapshot"):
            return
        taken = self.io.snapshot(self.train.snapshot_policy, self.train.snapshot_keep,
                                      self.train.tracker, self.train.tracker_faces)
        snapshot = taken.snapshot
        self.store.add_tracked_faces(self.name, snapshot.iteration, taken.tracked)
        self.store.forget_tracked_faces(self.name, taken.removed)
        self.store.log_event(f"snapshot at iteration {snapshot.iteration} "
                             f"({self.ws.relative(snapshot.folder)}, "
                             f"{len(taken.tracked)} faces tracked)", self.name)

    def export(self) -> None:
        from swapd.exporter.checkpoint_export import export_trainer

        path = self.ws.exports_dir(self.name) / "a_to_b.onnx"
        report = export_trainer(self.trainer, path)
        self._exported_iteration = self.trainer.iteration
        self.store.add_artifact(self.name, "export", str(path), self.trainer.iteration,
                                {"max_abs_diff": report.max_abs_diff})
        self.store.log_event(f"exported ONNX at iteration {self.trainer.iteration} "
                             f"(parity max abs diff {report.max_abs_diff:.2e})", self.name)

    def close(self) -> None:
        self.trainer.close()


def run(workspace: Workspace, name: str) -> int:
    from swapd.trainer.checkpoint import CheckpointError, ModelBusyError
    from swapd.trainer.divergence import TrainingDivergedError
    from swapd.trainer.lr_finder import LRFinderError, apply_lr_finder

    store = StateStore(workspace.state_db)
    stop = _StopFlag()
    row = store.job(name)
    if row is None or row.config is None:
        log.error("job %s is not in the state store", name)
        return EXIT_BAD_INPUT
    job = JobFile.model_validate(row.config)
    try:
        training = TrainingRun(workspace, name, job, store)
    except ModelBusyError:
        raise  # another trainer holds the folder for now: a crash, so the service retries
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
        final_state = _train(training, store, stop)
    except TrainingDivergedError as exc:
        # The step or save was refused before anything changed: the last checkpoint stays.
        store.set_job_state(name, "error", f"training diverged: {exc}")
        kept = ("the last checkpoint is intact" if training.trainer.checkpoint_path.exists()
                else "nothing was saved")
        store.log_event(f"stopped: {exc.reason} ({exc}); {kept}", name, level="error")
        return EXIT_NON_FINITE
    finally:
        training.close()
    store.set_job_state(name, final_state)
    store.log_event(f"{final_state} at iteration {training.trainer.iteration}", name)
    store.close()
    return EXIT_OK


def _train(training: TrainingRun, store: StateStore, stop: _StopFlag) -> str:
    """The loop: returns the job's final state, "done" or "stopped", after saving."""
    name = training.name
    paused = False
    last_controls = 0.0
    while not stop.set and parent_alive():
        if time.monotonic() - last_controls >= CONTROL_SECONDS:
            last_controls = time.monotonic()
            for action in store.take_controls(name):
                if action == "stop":
                    stop.set = True
                elif action == "pause":
                    paused = True
                    training.save(reason="save")
                    store.set_job_state(name, "paused")
                elif action == "resume":
                    paused = False
                    store.set_job_state(name, "training")
                elif action == "save":
                    training.save(reason="save")
                elif action == "export" and training.save(reason="export"):
                    training.export()  # (what it saved: the collapse guard looked first)
            if stop.set:
                break
        if paused:
            time.sleep(CONTROL_SECONDS)
            continue
        if training.target_reached and training.save(reason="done"):
            return "done"  # (a refused save rolled back: training goes on)
        training.step()
    training.save(reason="exit")
    return "stopped"


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

"""``swapd train``: train from the command line, as faceswap's ``train`` command does.

    swapd train --model NAME -A DIR -B DIR --model-dir DIR [--iterations N] [--batch-size N]
                [--save-every N] [--set key=value ...] [--export] [--start-from MODEL.pt]
                [--snapshot-every N [--snapshot-policy all|last|thinned] [--snapshot-keep K]
                 [--tracker-faces N | --no-tracker]]

No workspace or service: faces are read from -A/-B, the checkpoint, previews and (with
``--export``) the ONNX export go to --model-dir. A folder that already holds a checkpoint
resumes from it; a new model can start from another's weights (--start-from). Ctrl-C or
SIGTERM saves and exits 0. Under ``torchrun`` it trains on several GPUs (see
:mod:`swapd.trainer.distributed`).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("swapd.train")


def run_training(model: str, faces_a: Path, faces_b: Path, model_dir: Path,
                 options: dict[str, Any], iterations: int, batch_size: int,
                 save_every: int, export: Callable[[Any, Path], Any] | None = None,
                 show_progress: bool = True,
                 snapshot_every: int = 0, snapshot_policy: str = "all",
                 snapshot_keep: int = 10, tracker: bool = True, tracker_faces: int = 0,
                 start_from: Path | None = None) -> int:
    """Train until ``iterations`` (0 = until stopped); returns the iteration reached.
    ``export``: the exporter (swapd.exporter.checkpoint_export.export_trainer) to write
    ``model_dir/exports/a_to_b.onnx`` with at the end, if wanted."""
    from tqdm import tqdm

    from swapd.trainer.divergence import OutputCollapsedError, TrainingDivergedError
    from swapd.trainer.loop import Trainer
    from swapd.trainer.lr_finder import apply_lr_finder
    from swapd.trainer.model_io import ModelIO
    from swapd.trainer.options import split_options

    trainer_options, model_options = split_options(model, options)
    stop = {"now": False}

    def request_stop(signum: int, _frame: object) -> None:
        stop["now"] = True

    # Loading the faces can take a while: Ctrl-C then simply stops (nothing to save yet).
    trainer = Trainer(model, model_options.model_dump(), trainer_options, faces_a, faces_b,
                      model_dir, batch_size, iterations_target=iterations,
                      start_from=start_from)
    found = apply_lr_finder(trainer)
    if found is not None:
        log.info("learning-rate finder: lowest loss at %.3g, training at %.3g%s", found.best,
                 found.chosen, f" (graph: {found.graph})" if found.graph else "")
        if trainer_options.lr_finder == "graph_and_exit":
            trainer.close()
            return trainer.iteration
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    io = ModelIO(trainer)
    bar = tqdm(total=iterations or None, initial=trainer.iteration, unit="it",
               disable=not show_progress or not trainer.is_main)
    distributed = trainer.distributed

    def stopping() -> bool:  # under torchrun every process stops at the same step
        if distributed is None:
            return stop["now"]
        return distributed.any(stop["now"], trainer.device)

    try:
        saved = trainer.iteration
        flat_at_exit = False
        while True:  # more than once only when the collapse guard refuses the last save
            while not stopping() and (iterations == 0 or trainer.iteration < iterations):
                try:
                    stats = trainer.step()
                    bar.update(1)
                    bar.set_postfix(loss_a=f"{stats.loss_a:.4f}", loss_b=f"{stats.loss_b:.4f}",
                                    egs=f"{stats.examples_per_second:.0f}", refresh=False)
                    if stats.iteration % save_every == 0:
                        _save(trainer, io, model_dir)  # the collapse guard may refuse it
                        saved = trainer.iteration
                        if distributed is None:  # every process must keep the same sets
                            trainer.refresh_faces()
                    if (snapshot_every and stats.iteration % snapshot_every == 0
                            and trainer.is_main):
                        io.snapshot(snapshot_policy, snapshot_keep,  # type: ignore[arg-type]
                                         tracker, tracker_faces)
                        saved = trainer.iteration
                except TrainingDivergedError as exc:  # a NaN, or a save the guard refused
                    if io.roll_back(exc) is None:
                        raise
                    bar.n = saved = trainer.iteration
            if trainer.iteration == saved and trainer_options.save_optimizer != "exit":
                break
            try:
                _save(trainer, io, model_dir, final=True)
                break
            except OutputCollapsedError as exc:  # (the guard is off under torchrun)
                if stop["now"]:  # stopping: the last checkpoint stays, nothing is exported
                    log.warning("%s: %s", exc, f"the checkpoint at iteration {saved} stays"
                                if trainer.checkpoint_path.exists() else "nothing was saved")
                    flat_at_exit = True
                    break
                if io.roll_back(exc) is None:  # the target: train on to it
                    raise
                bar.n = saved = trainer.iteration
        if export is not None and trainer.iteration and trainer.is_main and not flat_at_exit:
            report = export(trainer, model_dir / "exports" / "a_to_b.onnx")
            log.info("exported %s (parity max abs diff %.2e)", report.path,
                     report.max_abs_diff)
        return saved if flat_at_exit else trainer.iteration
    finally:
        bar.close()
        trainer.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _save(trainer: Any, io: Any, model_dir: Path, final: bool = False) -> None:
    io.save(final=final)  # only the first process of a torchrun group writes
    if not trainer.is_main:
        return
    trainer.write_preview(model_dir / "previews" / "latest.png")

"""``swapd train``: train from the command line, as faceswap's ``train`` command does.

    swapd train --model NAME -A DIR -B DIR --model-dir DIR [--iterations N] [--batch-size N]
                [--save-every N] [--set key=value ...] [--export] [--start-from MODEL.pt]
                [--snapshot-every N [--snapshot-policy all|last|thinned] [--snapshot-keep K]
                 [--tracker-faces N | --no-tracker]]

No workspace or service: faces are read from -A/-B, the checkpoint, previews and (with
``--export``) the ONNX export go to --model-dir. A folder that already holds a checkpoint
resumes from it; a new model can start from another's weights (--start-from). Ctrl-C or
SIGTERM saves and exits 0. Under ``torchrun`` it trains on several GPUs (see
:mod:`swapd.trainer.distributed`). The session is :mod:`swapd.trainer.driver`'s; this adds
the progress bar, the signals and the log lines.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from swapd.trainer.divergence import OutputCollapsedError
from swapd.trainer.driver import Cadence, Hooks, run
from swapd.trainer.loop import StepStats, Trainer

log = logging.getLogger("swapd.train")

Export = Callable[[Trainer, Path], Any]  # swapd.exporter.checkpoint_export.export_trainer


class ProgressHooks(Hooks):
    """A progress bar, Ctrl-C/SIGTERM as a stop request (until :meth:`close`), log lines."""

    def __init__(self, trainer: Trainer, target: int, export_to: Path,
                 export: Export | None, show: bool) -> None:
        from tqdm import tqdm

        self.trainer, self.export_to, self._export = trainer, export_to, export
        self.stop_requested = False
        self._previous = {sig: signal.signal(sig, self._request_stop)
                          for sig in (signal.SIGINT, signal.SIGTERM)}
        self.bar = tqdm(total=target or None, initial=trainer.iteration, unit="it",
                        disable=not show or not trainer.is_main)

    def _request_stop(self, signum: int, _frame: object) -> None:
        self.stop_requested = True

    def requests(self) -> Iterable[str]:
        return ("stop",) if self.stop_requested else ()

    def stepped(self, stats: StepStats) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss_a=f"{stats.loss_a:.4f}", loss_b=f"{stats.loss_b:.4f}",
                             egs=f"{stats.examples_per_second:.0f}", refresh=False)

    def rolled_back(self, record: dict[str, Any]) -> None:
        self.bar.n = record["back_to"]

    def kept_last_checkpoint(self, error: OutputCollapsedError, iteration: int) -> None:
        log.warning("%s: %s", error, f"the checkpoint at iteration {iteration} stays"
                    if self.trainer.checkpoint_path.exists() else "nothing was saved")

    def export(self, trainer: Trainer) -> None:
        assert self._export is not None  # (the cadence exports only when there is one)
        report = self._export(trainer, self.export_to)
        log.info("exported %s (parity max abs diff %.2e)", report.path, report.max_abs_diff)

    def close(self) -> None:
        self.bar.close()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run_training(model: str, faces_a: Path, faces_b: Path, model_dir: Path,
                 options: dict[str, Any], iterations: int, batch_size: int,
                 save_every: int, export: Export | None = None,
                 show_progress: bool = True,
                 snapshot_every: int = 0, snapshot_policy: str = "all",
                 snapshot_keep: int = 10, tracker: bool = True, tracker_faces: int = 0,
                 start_from: Path | None = None) -> int:
    """Train until ``iterations`` (0 = until stopped); returns the iteration the model folder
    holds. ``export``: the exporter (swapd.exporter.checkpoint_export.export_trainer) to write
    ``model_dir/exports/a_to_b.onnx`` with at the end, if wanted."""
    from swapd.trainer.lr_finder import apply_lr_finder
    from swapd.trainer.options import split_options

    trainer_options, model_options = split_options(model, options)
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
    cadence = Cadence(preview=model_dir / "previews" / "latest.png", iterations=iterations,
                      save_every=save_every, snapshot_every=snapshot_every,
                      snapshot_policy=snapshot_policy,  # type: ignore[arg-type]
                      snapshot_keep=snapshot_keep, tracker=tracker, tracker_faces=tracker_faces,
                      export_on=frozenset({"done", "exit"} if export is not None else ()))
    hooks = ProgressHooks(trainer, iterations, model_dir / "exports" / "a_to_b.onnx", export,
                          show_progress)
    try:
        return run(trainer, cadence, hooks).saved
    finally:
        hooks.close()
        trainer.close()

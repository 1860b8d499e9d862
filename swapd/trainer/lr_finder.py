"""The learning-rate finder (Smith, "Cyclical Learning Rates for Training Neural Networks",
2017), as faceswap offers it: before training, a short run with the learning rate rising
exponentially from ``START`` to ``END``; the smoothed loss is recorded, and the learning rate
at its lowest point, divided by the strength (faceswap's: default 10, aggressive 5, extreme
2.5), becomes the session's. The whole training state (weights, optimizer state, iteration,
every field of :class:`~swapd.trainer.state.TrainState`) is put back afterwards: the search
trains nothing.

Modes (the ``lr_finder`` trainer option): ``set`` uses the rate found, ``graph_and_set`` also
writes the loss-against-rate graph to ``<model dir>/lr_finder/<time>.png``, ``graph_and_exit``
writes the graph and stops. The rate found is kept in the checkpoint, so later sessions of the
same model reuse it instead of searching again, as long as the job's learning rate, the
strength and the batch size are those it was found for.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from swapd.trainer.divergence import NonFiniteLossError
from swapd.trainer.loop import Trainer
from swapd.trainer.preview import write_png

log = logging.getLogger(__name__)

START, END = 1e-10, 1.0
STRENGTH = {"default": 10.0, "aggressive": 5.0, "extreme": 2.5}
SMOOTHING = 0.98  # exponential moving average of the loss, bias-corrected
DIVERGED = 4.0  # stop once the smoothed loss is this many times its lowest


class LRFinderError(RuntimeError):
    """A search that found nothing usable (no finite loss, or no minimum)."""


@dataclass(frozen=True)
class LRFinderResult:
    learning_rates: list[float]
    losses: list[float]  # smoothed
    best: float  # the rate at the lowest smoothed loss
    chosen: float  # best / strength
    graph: Path | None


def find_learning_rate(trainer: Trainer, iterations: int, strength: str = "default",
                       graph_dir: Path | None = None) -> LRFinderResult:
    """Search (see the module doc); ``graph_dir``: where to write the graph, if wanted."""
    # The whole training state, put back afterwards: weights, optimizer and every other field
    # of TrainState (AutoClip's norms, fp16's scale, the session record...).
    before = trainer.capture(copied=True)
    rates, losses = [], []
    average = 0.0
    lowest = math.inf
    try:
        for i in range(iterations):
            rate = START * (END / START) ** (i / max(1, iterations - 1))
            trainer.lr_override = rate
            try:
                stats = trainer.step()
            except NonFiniteLossError:  # the rates from here on diverge
                break
            if stats.skipped:  # an fp16 overflow: nothing was learned at this rate
                continue
            loss = (stats.loss_a + stats.loss_b) / 2
            average = SMOOTHING * average + (1 - SMOOTHING) * loss
            smoothed = average / (1 - SMOOTHING ** (i + 1))
            rates.append(rate)
            losses.append(smoothed)
            lowest = min(lowest, smoothed)
            if smoothed > DIVERGED * lowest:
                break
    finally:
        trainer.lr_override = None
        trainer.restore(before)
    if not losses:
        raise LRFinderError("the learning-rate finder got no finite loss at all")
    # The first tenth of the sweep is skipped when looking for the lowest loss: at rates
    # that change nothing the smoothed loss only wanders with the batches.
    skip = len(losses) // 10
    best = rates[skip + int(np.argmin(losses[skip:]))]
    chosen = best / STRENGTH[strength]
    graph = None
    if graph_dir is not None:
        graph = graph_dir / f"{time.strftime('%Y%m%d-%H%M%S')}.png"
        write_png(graph, draw_graph(rates, losses, chosen))
    return LRFinderResult(rates, losses, best, chosen, graph)


def draw_graph(rates: list[float], losses: list[float], chosen: float,
               size: tuple[int, int] = (800, 500)) -> np.ndarray:
    """Loss against learning rate (log scale), the chosen rate marked: a BGR image."""
    width, height = size
    margin = 60
    image = np.full((height, width, 3), 255, np.uint8)
    logs = np.log10(np.asarray(rates))
    values = np.asarray(losses)
    lo_x, hi_x = float(logs.min()), float(max(logs.max(), logs.min() + 1e-9))
    lo_y, hi_y = float(values.min()), float(min(values.max(), DIVERGED * values.min()))
    hi_y = max(hi_y, lo_y + 1e-9)

    def point(log_rate: float, loss: float) -> tuple[int, int]:
        x = margin + (log_rate - lo_x) / (hi_x - lo_x) * (width - 2 * margin)
        y = height - margin - (min(loss, hi_y) - lo_y) / (hi_y - lo_y) * (height - 2 * margin)
        return int(round(x)), int(round(y))

    cv2.rectangle(image, (margin, margin), (width - margin, height - margin), (180, 180, 180))
    for decade in range(math.ceil(lo_x), math.floor(hi_x) + 1):
        x, _ = point(decade, lo_y)
        cv2.line(image, (x, height - margin), (x, height - margin + 6), (0, 0, 0))
        cv2.putText(image, f"1e{decade}", (x - 16, height - margin + 22),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    curve = np.array([point(x, y) for x, y in zip(logs, values, strict=True)], np.int32)
    cv2.polylines(image, [curve], False, (200, 90, 0), 2, cv2.LINE_AA)
    x, _ = point(math.log10(chosen), lo_y)
    cv2.line(image, (x, margin), (x, height - margin), (0, 0, 220), 1, cv2.LINE_AA)
    cv2.putText(image, f"learning rate {chosen:.2e}", (min(x + 6, width - 200), margin + 18),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 220), 1, cv2.LINE_AA)
    cv2.putText(image, "loss (smoothed) against learning rate", (margin, margin - 20),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return image


def apply_lr_finder(trainer: Trainer) -> LRFinderResult | None:
    """Run the finder as the trainer's ``lr_finder`` option says, at the start of a session,
    and train at the rate found; a rate found in an earlier session is reused (no search)
    unless the mode only draws the graph. Returns the search's result, if one ran."""
    mode = trainer.options.lr_finder
    if mode == "off":
        return None
    # A rate found earlier holds while what it was found for holds (the job's rate, the
    # strength, the batch size); any change searches again.
    found_for = {"learning_rate": trainer.options.learning_rate,
                 "strength": trainer.options.lr_finder_strength,
                 "batch_size": trainer.batch_size}
    earlier = trainer.lr_found
    if (mode != "graph_and_exit" and earlier is not None
            and earlier.get("found_for") == found_for):
        log.info("learning rate %.3g, found by an earlier search", earlier["rate"])
        trainer.use_learning_rate(earlier["rate"], earlier)
        return None
    graph_dir = trainer.model_dir / "lr_finder" if mode != "set" and trainer.is_main else None
    result = find_learning_rate(trainer, trainer.options.lr_finder_iterations,
                                trainer.options.lr_finder_strength, graph_dir)
    if result.best == result.learning_rates[-1] and len(result.learning_rates) > 1:
        raise LRFinderError(
            f"the loss still fell at the last rate tried ({result.best:.3g}): no minimum to "
            "pick; keep lr_finder off or give it more iterations")
    if mode != "graph_and_exit":
        trainer.use_learning_rate(result.chosen, {"rate": result.chosen,
                                                  "found_for": found_for})
    return result

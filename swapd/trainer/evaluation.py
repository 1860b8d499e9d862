"""Evaluating a swap model outside training: faces drawn through either decoder, its learned
masks, each face's training loss, how flat the faces drawn are (the collapse guard's measure)
and the preview grid. :class:`Evaluator` is the :class:`~swapd.trainer.loop.Trainer`'s base:
the trainer sets up what it reads (model, precision, device, loss, preview faces).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from swapd.trainer.data import to_tensor_layout
from swapd.trainer.losses import FaceLoss
from swapd.trainer.models import SwapModel
from swapd.trainer.options import TrainerOptions
from swapd.trainer.precision import MixedPrecision
from swapd.trainer.preview import (
    composite,
    keep_in_history,
    make_grid,
    overlay_mask,
    to_uint8_nhwc,
    write_png,
)


class Evaluator:
    """Forward passes in eval mode, without gradients, on uint8 NHWC model crops."""

    model: SwapModel
    options: TrainerOptions
    precision: MixedPrecision
    device: torch.device
    iteration: int
    _loss_fn: FaceLoss
    _memory_format: torch.memory_format
    # The fixed, unaugmented preview faces of each side and their face masks.
    _preview_a: np.ndarray
    _preview_mask_a: np.ndarray
    _preview_b: np.ndarray
    _preview_mask_b: np.ndarray
    # What each preview row's face mask is, per side (the tint shows it: see overlay_mask).
    _preview_sources: tuple[list[str | None], list[str | None]] = ([], [])

    def _tensor(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A batch's array on the device (a tensor augmented there already is)."""
        tensor = array if isinstance(array, torch.Tensor) else torch.from_numpy(array)
        if self.device.type == "cuda" and tensor.device.type != "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.contiguous(memory_format=self._memory_format)

    def output_spread(self) -> float:
        """How much the faces the model draws vary against the faces themselves: per preview
        face, the spread (standard deviation) of its reconstruction inside the face mask over
        the face's own there; the median per side, the lower side's. 0 is flat colour."""
        sides = []
        for faces, masks, side in ((self._preview_a, self._preview_mask_a, "a"),
                                   (self._preview_b, self._preview_mask_b, "b")):
            drawn = self.predict(faces, side)
            ratios = []
            for face, out, mask in zip(faces, drawn, masks, strict=True):
                inside = mask > 127 if (mask > 127).any() else np.ones(mask.shape, bool)
                own = float(face[inside].astype(np.float32).std())
                ratios.append(float(out[inside].astype(np.float32).std()) / max(own, 1.0))
            sides.append(float(np.median(ratios)))
        return min(sides)

    def predict(self, faces: np.ndarray, side: str) -> np.ndarray:
        """Run uint8 NHWC model crops through the encoder and decoder ``side`` ("a" or "b"),
        in eval mode, without gradients; returns uint8 NHWC (the model's channels)."""
        return self._eval(faces, side)[0]

    def predict_with_mask(self, faces: np.ndarray, side: str
                          ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`predict`, and the learned mask (uint8 NHW, 255 = face) when the model
        learns one."""
        out, _, mask = self._eval(faces, side)
        return out, mask

    def evaluate(self, faces: np.ndarray, masks: np.ndarray, side: str
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Reconstruct unaugmented faces through decoder ``side``: the uint8 outputs and each
        face's training loss against itself (masks: face, eyes, mouth, uint8 NHWC)."""
        out, loss, _ = self._eval(faces, side, masks)
        assert loss is not None
        return out, loss

    def _eval(self, faces: np.ndarray, side: str, masks: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(faces drawn, per-face face loss when ``masks`` are given, learned masks)."""
        was_training = self.model.training
        self.model.eval()
        loss = None
        try:
            with torch.no_grad():
                inputs = self._tensor(to_tensor_layout(faces))
                with self.precision.autocast():
                    out, learned = self.model.split(self.model(inputs, side))
                if masks is not None:  # in float32, as the training step computes it
                    loss = self._loss_fn.per_image(out.float(), inputs,
                                                   self._tensor(to_tensor_layout(masks)))
        finally:
            self.model.train(was_training)
        return (to_uint8_nhwc(out.float().cpu().numpy()),
                None if loss is None else loss.float().cpu().numpy(),
                None if learned is None else to_uint8_nhwc(learned.float().cpu().numpy())[..., 0])

    def preview(self) -> np.ndarray:
        """BGR uint8 grid: rows = preview faces; columns A, A>A, A>B, B, B>B, B>A."""
        return make_grid(self.preview_columns())

    def preview_columns(self) -> list[np.ndarray]:
        """The preview's six columns (A, A>A, A>B, B, B>B, B>A), each NHWC uint8 (BGR, or one
        channel for a grayscale model), on the fixed, unaugmented preview faces. The A and B
        columns tint what the penalized loss leaves out (red outside the landmark hull, blue
        outside a DeepFaceLab XSeg mask, magenta outside its drawn polygons); a model that
        learns its mask has the faces it draws blended onto their sources by that mask, as the
        merger would."""
        rows = min(len(self._preview_a), len(self._preview_b))
        a, b = self._preview_a[:rows], self._preview_b[:rows]
        shown_a, shown_b = a, b
        if self.options.penalized_mask_loss:  # show what the loss counts: the mask's outside
            sources_a, sources_b = self._preview_sources
            shown_a = overlay_mask(a, self._preview_mask_a[:rows], sources_a[:rows])
            shown_b = overlay_mask(b, self._preview_mask_b[:rows], sources_b[:rows])
        drawn = []
        for faces, side in ((a, "a"), (a, "b"), (b, "b"), (b, "a")):
            out, learned = self.predict_with_mask(faces, side)
            drawn.append(out if learned is None else composite(out, faces, learned))
        return [shown_a, drawn[0], drawn[1], shown_b, drawn[2], drawn[3]]

    def write_preview(self, path: Path, history: int = 0) -> Path:
        """Write :meth:`preview` as a PNG, atomically; with ``timelapse`` also a copy in
        ``timelapse/<iteration>.png`` beside it (the same fixed faces at every save), and with
        ``history`` one in ``history/`` of the newest ``history`` saves (see
        :func:`~swapd.trainer.preview.keep_in_history`)."""
        grid = self.preview()
        if self.options.timelapse:
            write_png(path.parent / "timelapse" / f"{self.iteration:08d}.png", grid)
        keep_in_history(grid, path.parent, self.iteration, history)
        return write_png(path, grid)

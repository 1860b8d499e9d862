"""Exporting a trained model to ONNX: a trainer's model as it trains, or a saved checkpoint's
(the model's, or a snapshot's) without training.

A checkpoint names its model and options, so the model is rebuilt from it alone. The parity
check runs on real faces when there are some (the trainer's A faces; a face folder, cut as
the trainer cuts them), else on the exporter's seeded random batch at the model's input size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from torch import nn

from swapd.exporter.dfm_export import DfmReport, export_dfm
from swapd.exporter.onnx_export import ExportReport, export_swap_model
from swapd.trainer.checkpoint import CheckpointError, load_checkpoint
from swapd.trainer.data import FaceSet, to_tensor_layout
from swapd.trainer.loop import Trainer


def _sample(face_set: FaceSet) -> np.ndarray:
    """Eight faces of a set (seeded) for the parity check, BGR: the export takes BGR and
    converts to gray itself."""
    faces = face_set.sample(np.random.default_rng(0), 8)[0]
    return np.repeat(faces, 3, axis=-1) if faces.shape[-1] == 1 else faces


def _export_a_to_b(model: nn.Module, output: str | os.PathLike[str], model_name: str,
                   size: int, coverage: float, centering: str, iteration: int,
                   crops: np.ndarray | None) -> ExportReport:
    return export_swap_model(
        model, output, size, side_to="b",
        faces=None if crops is None else to_tensor_layout(crops), coverage=coverage,
        model_name=model_name, metadata={"iteration": iteration, "centering": centering})


def export_trainer(trainer: Trainer, output: str | os.PathLike[str]) -> ExportReport:
    """Export the A->B swap of the model ``trainer`` trains, as it is now, to ``output``
    (parity-checked on real A crops)."""
    return _export_a_to_b(trainer.model, output, trainer.model_name, trainer.input_size,
                          trainer.options.coverage, trainer.options.centering,
                          trainer.iteration, _sample(trainer.set_a))


def export_checkpoint(checkpoint: str | os.PathLike[str], output: str | os.PathLike[str],
                      faces: str | os.PathLike[str] | None = None,
                      fmt: Literal["onnx", "dfm"] = "onnx") -> ExportReport | DfmReport:
    """Export the A->B swap of the model in ``checkpoint`` to ``output`` (parity-checked):
    swapd's ONNX, or DeepFaceLab's .dfm (``fmt="dfm"``, see :mod:`swapd.exporter.dfm_export`)."""
    from swapd.trainer.models import build_model

    state = load_checkpoint(checkpoint)
    try:
        model = build_model(state["model"], state["model_options"])
        model.load_state_dict(state["model_state"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(Path(checkpoint), f"does not rebuild its model ({exc})") from exc
    options = state.get("trainer_options", {})
    size = int(state["model_options"]["input_size"])
    coverage = float(options.get("coverage", 0.875))
    centering = options.get("centering", "face")
    if faces is not None:
        crops = _sample(FaceSet(faces, size, coverage, centering=centering))
    else:
        crops = None  # the exporters' seeded random batch
    if fmt == "dfm":
        return export_dfm(model, output, size, coverage=coverage, centering=centering,
                          model_name=state["model"],
                          faces=None if crops is None else to_tensor_layout(crops),
                          metadata={"iteration": state["iteration"]})
    return _export_a_to_b(model, output, state["model"], size, coverage, centering,
                          state["iteration"], crops)

"""Exporting a saved checkpoint (the model's, or a snapshot's) to ONNX without training.

The checkpoint names its model and options, so the model is rebuilt from it alone. The
parity check runs on real faces when a face folder is given (cut as the trainer cuts them),
else on the exporter's seeded random batch at the model's input size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from swapd.exporter.onnx_export import ExportReport, export_swap_model
from swapd.trainer.checkpoint import CheckpointError, load_checkpoint


def export_checkpoint(checkpoint: str | os.PathLike[str], output: str | os.PathLike[str],
                      faces: str | os.PathLike[str] | None = None) -> ExportReport:
    """Export the A->B swap of the model in ``checkpoint`` to ``output`` (parity-checked)."""
    from swapd.trainer.data import FaceSet, to_tensor_layout
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
    parity_faces = None  # export_swap_model's seeded random batch
    if faces is not None:
        face_set = FaceSet(faces, size, coverage, centering=centering)
        parity_faces = to_tensor_layout(face_set.sample(np.random.default_rng(0), 8)[0])
    return export_swap_model(
        model, output, size, side_to="b", faces=parity_faces, coverage=coverage,
        model_name=state["model"],
        metadata={"iteration": state["iteration"], "centering": centering})

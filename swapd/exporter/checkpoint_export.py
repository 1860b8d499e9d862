"""Exporting a saved checkpoint (the model's, or a snapshot's) to ONNX without training.

The checkpoint names its model and options, so the model is rebuilt from it alone. The
parity check runs on real faces when a face folder is given (cut as the trainer cuts them),
else on swapd's synthetic faces drawn at the model's input size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from swapd.exporter.onnx_export import ExportReport, export_swap_model
from swapd.trainer.checkpoint import CheckpointError, load_checkpoint


def _synthetic_crops(size: int, count: int = 4) -> np.ndarray:
    from swapd.faces.synthetic import DEMO_A, random_view, render_face

    rng = np.random.default_rng(0)
    crops = [render_face(DEMO_A, frame_size=(size, size), face_height_px=size * 0.9,
                         **random_view(rng)).image for _ in range(count)]
    return np.stack(crops)


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
    if faces is not None:
        face_set = FaceSet(faces, size, coverage, centering=centering)
        crops = face_set.sample(np.random.default_rng(0), 8)[0]
    else:
        crops = _synthetic_crops(size)
    return export_swap_model(
        model, output, size, side_to="b", faces=to_tensor_layout(crops), coverage=coverage,
        model_name=state["model"],
        metadata={"iteration": state["iteration"], "centering": centering})

"""onnxruntime sessions: the execution provider for a device, and a session on it.

Everything that runs an ONNX model (the MTCNN detector's three networks, the merger's exported
swap model) opens it here, so one place decides between CUDA and the CPU and falls back.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

import onnxruntime as ort

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]


def select_providers(device: str = "auto") -> list[str]:
    """onnxruntime providers for ``device``: CUDA first when wanted and available, then CPU.

    ``"cuda"`` on a machine without the CUDA provider logs a warning and falls back to CPU, so a
    job written for a GPU box still runs elsewhere.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    available = ort.get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        log.warning("CUDAExecutionProvider is not available (have %s); using CPU", available)
    return ["CPUExecutionProvider"]


def create_session(path: str | os.PathLike[str], device: str = "auto",
                   threads: int | None = None) -> ort.InferenceSession:
    """An InferenceSession on the best provider for ``device``, retrying on CPU if CUDA fails."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # Idle worker threads would otherwise spin, stealing CPU from ffmpeg running beside us.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = select_providers(device)
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception:
        if providers == ["CPUExecutionProvider"]:
            raise
        log.warning("could not start %s on CUDA; falling back to CPU", path, exc_info=True)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

"""Atomic checkpoint files: a crash at any moment leaves the last good checkpoint loadable.

Writes go to a temp file in the target's folder, are flushed and fsynced, then
``os.replace``d over the target, and the folder is fsynced so the rename itself is durable.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

FORMAT = "swapd-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "version", "model", "model_options", "model_state", "iteration")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, corrupt or not a swapd checkpoint."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def fsync_dir(folder: Path) -> None:
    """fsync a directory so a rename inside it survives a power cut (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open directories; NTFS journals the rename itself
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on clean exit it is fsynced and moved over ``path``.

    If the body raises, the temp file is removed and ``path`` is left as it was, so a
    caller can validate what it wrote (e.g. an ONNX parity check) before it goes live.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (tensors, plain containers, numbers, strings) to ``path``."""
    full = {"format": FORMAT, "version": FORMAT_VERSION, **state}
    with atomic_path(path) as tmp:
        torch.save(full, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint onto the CPU; :class:`CheckpointError` if it is unusable.

    Uses ``weights_only=True``: only tensors and plain containers are unpickled, so a
    crafted file cannot run code.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "no such checkpoint file")
    if p.stat().st_size == 0:
        raise CheckpointError(p, "empty file (interrupted write?)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad zips/pickles
        raise CheckpointError(p, f"truncated or corrupt checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(p, "not a swapd checkpoint")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(p, f"checkpoint lacks {', '.join(missing)}")
    if state["version"] > FORMAT_VERSION:
        raise CheckpointError(
            p, f"checkpoint format {state['version']} is newer than this swapd ({FORMAT_VERSION})"
        )
    return state

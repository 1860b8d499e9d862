"""Atomic checkpoint files: a crash at any moment leaves the last good checkpoint loadable.

Writes go through :func:`swapd.fsutil.atomic_path` (temp file in the same folder, fsync,
``os.replace``, fsync of the folder).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from swapd.errors import FileProblem
from swapd.fsutil import FolderLock, atomic_copy, atomic_path

FORMAT = "swapd-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "version", "model", "model_options", "model_state", "iteration")


class CheckpointError(FileProblem, RuntimeError):
    """A checkpoint that is missing, truncated, corrupt or not a swapd checkpoint."""


class ModelBusyError(CheckpointError):
    """A model folder a running trainer holds (see swapd.fsutil.FolderLock)."""


LOCK_NAME = ".trainer.lock"  # in the model folder, held by the trainer using it
CHECKPOINT_NAME = "model.pt"  # a model folder's checkpoint


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


def restore_checkpoint(source: Path, current: Path) -> tuple[int, Path | None]:
    """Make ``source`` (a backup or snapshot) the checkpoint at ``current`` again.

    The checkpoint being replaced is first copied to ``replaced/model-<iteration>.pt`` beside
    it; both copies are atomic, so ``current`` is at every moment the old or the new one.
    Returns (the restored iteration, where the replaced checkpoint went, if there was one).
    """
    state = load_checkpoint(source)  # a broken copy must not replace a good checkpoint
    lock = FolderLock(current.parent / LOCK_NAME)
    if not lock.acquire():
        raise ModelBusyError(current.parent, "a trainer is using this model folder: stop it "
                                             "first, then restore")
    try:
        return replace_checkpoint(source, current, int(state["iteration"]))
    finally:
        lock.release()


def replace_checkpoint(source: Path, current: Path, iteration: int) -> tuple[int, Path | None]:
    """Copy ``source`` over ``current``, the checkpoint it replaces kept first in
    ``replaced/`` (see :func:`restore_checkpoint`, which takes the folder's lock: a trainer
    that holds it calls this)."""
    replaced = None
    if current.is_file():
        try:
            label = str(int(load_checkpoint(current)["iteration"]))
        except CheckpointError:  # a broken checkpoint is just when a restore is needed
            label = "unreadable"
        replaced = atomic_copy(current, _unused_name(current.parent / "replaced",
                                                     f"model-{label}"))
    atomic_copy(source, current)
    return iteration, replaced


def _unused_name(folder: Path, stem: str) -> Path:
    """``folder/<stem>-<time>.pt``, numbered if taken: a kept checkpoint is never overwritten
    (restoring twice to the same iteration replaces two different models)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    for k in range(10_000):
        path = folder / (f"{base}.pt" if k == 0 else f"{base}-{k}.pt")
        try:
            with open(path, "x"):  # reserve the name
                return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free name for {stem}")

"""Backups: the checkpoint whose average loss since the previous save was the lowest so far.

The trainer keeps it in ``<model dir>/backup/`` (a copy of ``model.pt`` plus ``backup.json``
saying the iteration and the average loss), so a model that later drifts, collapses or is
trained with a bad option can go back to its best point: ``swapd model restore`` (see
:func:`swapd.trainer.checkpoint.restore_checkpoint`: the replaced checkpoint is kept).
Losses compare only under the same loss settings: when they change, the next save becomes
the backup and the old one is kept in ``backup/superseded-<time>/``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swapd.errors import FileProblem
from swapd.fsutil import atomic_copy, atomic_write_bytes
from swapd.trainer.checkpoint import restore_checkpoint
from swapd.trainer.snapshots import set_aside_after

FOLDER = "backup"
INFO = "backup.json"


class BackupError(FileProblem, RuntimeError):
    """No backup to restore, or one that does not load."""


@dataclass(frozen=True)
class Restored:
    iteration: int  # the restored checkpoint's
    average_loss: float | None
    replaced: Path | None  # where the checkpoint it replaced was kept


def backup_info(model_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What ``backup.json`` says (iteration, average_loss, time), or None without a backup."""
    path = Path(model_dir) / FOLDER / INFO
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def keep_backup(checkpoint: Path, info: dict[str, Any], supersede: bool = False) -> Path:
    """Copy a just-written checkpoint into the backup folder beside it, with ``info``.

    ``supersede``: the backup there was measured with other loss settings (its loss does not
    compare): it is moved to ``backup/superseded-<time>/`` first, not overwritten.
    """
    folder = checkpoint.parent / FOLDER
    old = folder / checkpoint.name
    if supersede and old.is_file():
        aside = folder / f"superseded-{time.strftime('%Y%m%d-%H%M%S')}"
        aside.mkdir(parents=True, exist_ok=True)
        for item in (old, folder / INFO):
            if item.exists():
                item.rename(aside / item.name)
    dest = atomic_copy(checkpoint, folder / checkpoint.name)
    atomic_write_bytes(folder / INFO, json.dumps(info, indent=2).encode("utf-8"))
    return dest


def restore_backup(model_dir: str | os.PathLike[str], name: str = "model.pt") -> Restored:
    """Make the backup the model's checkpoint again (see the module doc)."""
    folder = Path(model_dir)
    backup = folder / FOLDER / name
    if not backup.is_file():
        raise BackupError(folder, "no backup to restore (one is kept once a save reaches the "
                                  "lowest average loss so far)")
    iteration, replaced = restore_checkpoint(backup, folder / name)
    set_aside_after(folder, iteration)
    info = backup_info(folder) or {}
    # A kill between the copy and backup.json leaves the json a save behind: no loss then.
    loss = info.get("average_loss") if info.get("iteration") == iteration else None
    return Restored(iteration, loss, replaced)

"""Backups: the checkpoint whose average loss since the previous save was the lowest so far.

The trainer keeps it in ``<model dir>/backup/`` (a copy of ``model.pt`` plus ``backup.json``
saying the iteration and the average loss), so a model that later drifts, collapses or is
trained with a bad option can go back to its best point: ``swapd model restore`` (see
:func:`swapd.trainer.checkpoint.restore_checkpoint`: the replaced checkpoint is kept).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swapd.errors import FileProblem
from swapd.fsutil import atomic_copy, atomic_write_bytes
from swapd.trainer.checkpoint import restore_checkpoint

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


def keep_backup(checkpoint: Path, info: dict[str, Any]) -> Path:
    """Copy a just-written checkpoint into the backup folder beside it, with ``info``."""
    folder = checkpoint.parent / FOLDER
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
    info = backup_info(folder) or {}
    return Restored(iteration, info.get("average_loss"), replaced)

"""Free space: how much a save or a merge needs, and the plain words when it is not there.

A save on a full disk fails half-written (torch says "unexpected pos", SQLite "database or disk
is full"); the atomic writes keep the last checkpoint whole, but the error reads like a crash.
So the training worker checks before every save (and refuses it, raising
:class:`DiskFullError`), and the service before it starts a worker or a merge, both in the same
words (:class:`Shortage`): "disk full on <path>: N bytes free, needs about M for a save; the
checkpoint at iteration X is kept". The service then waits until the space is back and
carries on by itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from swapd.fsutil import free_bytes

CHECKPOINT = "model.pt"  # a model folder's checkpoint (swapd.trainer.checkpoint's name)
MARGIN = 16 * 1024 * 1024  # previews, the export, the state database's next writes
RESERVE_BYTES = 8 * 1024 * 1024  # kept aside for the state store (Reserve); under MARGIN, so
# the room it frees when given up never lets a save start that could not finish
BYTES_PER_PARAMETER = 12  # float32 weights + Adam's two moments, before the first checkpoint


def size_text(n: int) -> str:
    """Bytes in words: "0 bytes", "8191 bytes", "12.5 MB", "3.20 GB"."""
    if n < 10_000:
        return f"{n} bytes"
    if n < 10**9:
        return f"{n / 10**6:.1f} MB"
    return f"{n / 10**9:.2f} GB"


@dataclass(frozen=True)
class Shortage:
    """Not enough room in ``folder`` for ``what`` ("a save", "a merge of clip.mp4")."""

    folder: Path
    free: int
    needed: int
    what: str
    kept: str = ""  # what stays as it was: "the checkpoint at iteration 1200 is kept"

    def __str__(self) -> str:
        kept = f"; {self.kept}" if self.kept else ""
        return (f"disk full on {self.folder}: {size_text(self.free)} free, needs about "
                f"{size_text(self.needed)} for {self.what}{kept}")


class DiskFullError(Exception):
    """Refused before writing: not enough free space (see :class:`Shortage`)."""

    def __init__(self, shortage: Shortage) -> None:
        self.shortage = shortage
        super().__init__(str(shortage))


def save_needs(model_dir: Path, parameters: int | None = None) -> int:
    """About how many bytes a save in ``model_dir`` writes at the most: the checkpoint's temp
    copy and a backup copy of it (the size of the one there, else estimated from the model's
    ``parameters``), plus a margin."""
    try:
        size = (model_dir / CHECKPOINT).stat().st_size
    except OSError:
        size = (parameters or 0) * BYTES_PER_PARAMETER
    return 2 * size + MARGIN


def merge_needs(source: Path) -> int:
    """About how many bytes merging ``source`` writes: its size twice over (the video and,
    with audio, the muxed copy beside it), plus a margin."""
    try:
        if source.is_dir():  # an image sequence: its frames
            size = sum(p.stat().st_size for p in source.iterdir() if p.is_file())
        else:
            size = source.stat().st_size
    except OSError:
        size = 0
    return 2 * size + MARGIN


def kept_checkpoint(exists: bool, iteration: int | None) -> str:
    """What a refused save leaves: the checkpoint (at ``iteration``, when known), if one
    ``exists``."""
    if not exists:
        return "no checkpoint is written yet"
    return ("the checkpoint is kept" if iteration is None
            else f"the checkpoint at iteration {iteration} is kept")


def shortage(folder: Path, needed: int, what: str, kept: str = "") -> Shortage | None:
    """A :class:`Shortage` when ``folder``'s filesystem has less than ``needed`` bytes free."""
    try:
        free = free_bytes(folder)
    except OSError:
        return None  # cannot tell: let the write itself say
    if free >= needed:
        return None
    return Shortage(Path(os.path.abspath(folder)), free, needed, what, kept)


def save_shortage(model_dir: Path, parameters: int | None,
                  checkpoint_iteration: int | None) -> Shortage | None:
    """Too little room for a save of the model in ``model_dir`` (of ``parameters``, its
    checkpoint at ``checkpoint_iteration`` when known), or None."""
    return shortage(model_dir, save_needs(model_dir, parameters), "a save",
                    kept_checkpoint((model_dir / CHECKPOINT).is_file(), checkpoint_iteration))


class Reserve:
    """Room the service keeps aside on the workspace's disk: a file of :data:`RESERVE_BYTES`
    in .swapd/, given up when a write fails for want of space, so that the state store can
    still record why jobs wait (their states, the events); made again once there is room."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "space-reserve"

    def keep(self) -> None:
        """Make the reserve when it is missing and the disk has room for it and more."""
        if self.path.exists() or free_bytes(self.path.parent) < RESERVE_BYTES + 2 * MARGIN:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "wb") as fh:
                for _ in range(RESERVE_BYTES // (1 << 20)):
                    fh.write(os.urandom(1 << 20))  # (not zeros: those a filesystem may compress)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)

    def release(self) -> bool:
        """Give the reserve up; True when there was one to give."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True

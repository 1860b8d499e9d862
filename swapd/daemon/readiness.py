"""What keeps a training job from starting when its schedule lets it train: checked by the
service before it gives the job a worker, so a job that cannot train never takes a slot from
one that can.

- A face set without a usable face (an empty set, one whose faces were all set aside, a folder
  outside the workspace with no images, such as ``/etc``): the job waits until faces come.
- A model folder that is another job's (two job files on one folder: a link, or names that
  differ only in case on Windows and macOS): the second job's error, naming the first.
- A model folder another process holds (``swapd train``, a restore): the job waits.
- Too little free space for a save (see disk.py): the job waits until there is enough.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from swapd.config import JobFile
from swapd.daemon.disk import save_shortage
from swapd.fsutil import FolderLock
from swapd.state import StateStore
from swapd.workspace import Workspace

LOCK_NAME = ".trainer.lock"  # swapd.trainer.checkpoint's (the service never imports torch)


@dataclass(frozen=True)
class Hold:
    """Why a job does not start now: it stays in ``state`` ("waiting" or "error"), for a
    ``kind`` of reason ("folder", "faces", "busy", "disk")."""

    state: str
    reason: str
    kind: str


def folder_key(path: Path) -> object:
    """What makes two paths one folder: its inode when it exists (links, case-insensitive
    names), else its resolved, case-folded path."""
    try:
        st = path.stat()
        return st.st_dev, st.st_ino
    except OSError:
        return os.path.normcase(os.path.realpath(path))


class Readiness:
    """The checks of the module doc, for one service."""

    def __init__(self, ws: Workspace, store: StateStore) -> None:
        self.ws, self.store = ws, store
        self._listed: dict[Path, tuple[int, int]] = {}  # outside folder -> (mtime_ns, images)

    def hold(self, name: str, spec: JobFile, owner: str | None) -> Hold | None:
        """Why job ``name`` must not start now (but for free space: :meth:`disk_hold`), or
        None. ``owner``: the job its model folder belongs to (see :meth:`owners`)."""
        model_dir = self.ws.model_dir(name)
        if owner is not None and owner != name:
            return Hold("error", f"{self.ws.relative(model_dir)} is in use by job {owner}: "
                                 "each job needs a model folder of its own", "folder")
        found = self.faces_hold(spec)
        if found is not None:
            return found
        if model_dir.is_dir() and not self._lock_free(model_dir):
            return Hold("waiting", f"{self.ws.relative(model_dir)} is in use by another process "
                                   "(swapd train, or a restore): waiting for it to finish",
                        "busy")
        return None

    def disk_hold(self, name: str, checkpoint_iteration: int | None,
                  parameters: int | None) -> Hold | None:
        """Too little free space for a save of job ``name``'s model (whose checkpoint holds
        ``checkpoint_iteration``, of a model of ``parameters``), or None."""
        short = save_shortage(self.ws.model_dir(name), parameters, checkpoint_iteration)
        return None if short is None else Hold("waiting", str(short), "disk")

    def owners(self, names: list[str]) -> dict[str, str]:
        """Job -> the job whose model folder it is: the first of ``names`` (running jobs
        first, then by priority) on each folder."""
        first: dict[object, str] = {}
        return {name: first.setdefault(folder_key(self.ws.model_dir(name)), name)
                for name in names}

    def faces_hold(self, spec: JobFile) -> Hold | None:
        assert spec.train is not None
        sets = self.store.face_sets()
        for key in ("a", "b"):
            shown = getattr(spec.train, key)
            folder = self.ws.resolve(shown)
            if self._in_faces(folder):
                counts = sets.get(folder.name) or {}
                usable, aside = counts.get("ok") or 0, counts.get("quarantined") or 0
                detail = f"{aside} set aside" if aside else "none indexed yet"
            else:
                usable, detail = self._images_outside(folder), "no image files"
            if not usable:
                return Hold("waiting", f"no usable faces in {shown} ({detail}): waiting for "
                                       "faces", "faces")
        return None

    def _in_faces(self, folder: Path) -> bool:
        """A set the service indexes: an entry of faces/ (a link to elsewhere included)."""
        try:
            return folder.parent.resolve() == self.ws.faces.resolve()
        except OSError:
            return False

    def _images_outside(self, folder: Path) -> int:
        """Image files in a face folder outside faces/ (not indexed), cached by its mtime."""
        from swapd.faces.validate import face_files

        try:
            stamp = folder.stat().st_mtime_ns
            cached = self._listed.get(folder)
            if cached is None or cached[0] != stamp:
                cached = stamp, len(face_files(folder))
                self._listed[folder] = cached
        except OSError:
            return 0
        return cached[1]

    @staticmethod
    def _lock_free(model_dir: Path) -> bool:
        lock = FolderLock(model_dir / LOCK_NAME)
        if not lock.acquire():
            return False
        lock.release()
        return True

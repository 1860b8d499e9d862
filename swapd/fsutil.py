"""Atomic file writes: a crash at any moment leaves either the old file or the new one.

The bytes go to a temp file in the target's folder, are flushed and fsynced, then `os.replace`d
over the target, and the folder is fsynced so the rename itself survives a power cut. Used for
checkpoints, exports, previews, faces, tagged media and status files alike. No torch import
here: the light commands (`swapd verify`, ingest) use it too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """fsync a directory so a rename inside it is durable (no-op where unsupported)."""
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


def _process_umask() -> int:
    """This process's umask, read without changing it where Linux says it (os.umask both
    sets and reads, which another thread could see for a moment)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # what another thread makes in that moment comes out stricter, never looser (and stays so)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], durable: bool = True, keep_mode: bool = False,
                suffix: str = ".tmp", mode: int | None = None) -> Iterator[Path]:
    """Yield a temp path beside `path`; on clean exit it is moved over `path`.

    If the body raises, the temp file is removed and `path` is left as it was, so a caller can
    validate what it wrote (e.g. an ONNX parity check) before it goes live. `durable=False`
    skips the fsyncs (still atomic), for bulk files that can be regenerated. `keep_mode` keeps
    the permissions of the file being replaced. A new file gets `mode`, or else the mode a
    plain open() gives under the umask (0644 under 022; the service unit's UMask=0077 keeps
    its files private): the temp file alone would leave every output 0600. `suffix` lets
    tools that guess the format from the name (ffmpeg) write the temp file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if mode is not None:  # before the bytes: a private file is never readable by others
            os.chmod(tmp, mode)
        yield tmp
        if keep_mode and target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        elif mode is None:
            # a file system that refuses chmod (some FUSE and network mounts) leaves the
            # stricter 0600: never a reason to lose a finished write
            with contextlib.suppress(OSError):
                os.chmod(tmp, 0o666 & ~_process_umask())
        durable_replace(tmp, target, durable)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def durable_replace(tmp: Path, target: Path, durable: bool = True) -> None:
    """Move the finished temp file ``tmp`` over ``target`` (same folder): fsync it, rename,
    fsync the folder, so that after a power cut ``target`` is the old file or the whole new
    one. ``durable=False``: the rename only."""
    if durable:
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, target)
    if durable:
        fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, durable: bool = True,
                       keep_mode: bool = False, mode: int | None = None) -> Path:
    """Write `data` to `path` atomically (`mode`: as for :func:`atomic_path`); returns it."""
    with atomic_path(path, durable=durable, keep_mode=keep_mode, mode=mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_copy(source: str | os.PathLike[str], path: str | os.PathLike[str],
                durable: bool = True) -> Path:
    """Copy `source` to `path` atomically (streamed: checkpoints can be large); returns it."""
    with atomic_path(path, durable=durable) as tmp:
        shutil.copyfile(source, tmp)
    return Path(path)


class FolderLock:
    """An exclusive advisory lock on a file (``flock``), held by one process at a time: a
    trainer holds its model folder's so a restore (or a second trainer) cannot change the
    model under it. Released by :meth:`release` or when the process ends, however it ends.
    Where ``fcntl`` is missing (Windows) it always succeeds."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another holder has it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def file_stamp(path: Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file, or None if it vanished: cheap change detection for
    rescans that must not re-read unchanged files."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes free on the filesystem that holds ``path`` (or its nearest existing folder)."""
    where = Path(path)
    while not where.exists() and where.parent != where:
        where = where.parent
    return shutil.disk_usage(where).free


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk (or the user's quota) is full: an OSError's errno, or
    SQLite's "database or disk is full"."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    return isinstance(error, sqlite3.OperationalError) and "disk is full" in str(error)


def printable_name(name: str) -> str:
    """A file name as text that can be stored and shown anywhere (UTF-8): the bytes of a name
    that is not valid UTF-8 (Python holds them as lone surrogates) become ``\\xNN`` escapes."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        raw = name.encode("utf-8", "surrogateescape")  # POSIX: the bytes as they were
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "surrogatepass")  # Windows: a lone UTF-16 surrogate
    return raw.decode("utf-8", "backslashreplace")

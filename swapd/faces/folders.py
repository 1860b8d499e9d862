"""Face folders on disk: the scan of a face folder, setting bad files aside (quarantine) and
telling whether a file has stopped changing (half-copied files wait)."""

from __future__ import annotations

import os
import re
import shutil
import time
from datetime import datetime
from pathlib import Path

from swapd.fsutil import printable_name
from swapd.media import IMAGE_SUFFIXES


def face_files(folder: Path) -> list[tuple[Path, os.stat_result]]:
    """The image files of a face folder (not hidden ones) and their stat; files that vanish
    while it looks are left out. The folder must exist."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                if not entry.is_file():
                    continue
                found.append((Path(entry.path), entry.stat()))
            except OSError:  # vanished between listing and stat
                continue
    return found


def _safe_component(name: str) -> str:
    """A folder name that cannot climb out of the quarantine root."""
    cleaned = re.sub(r"[\\/\x00]", "_", name).strip(". ")
    return cleaned or "unnamed"


def quarantine_file(path: str | os.PathLike[str], quarantine_root: str | os.PathLike[str],
                    set_name: str, reason: str) -> Path:
    """Move `path` to `<quarantine_root>/<set_name>/` with `<name>.reason.txt` beside it.

    Never overwrites: a name already taken gets a numeric suffix. Returns the new path.
    """
    src = Path(path)
    folder = Path(quarantine_root) / _safe_component(set_name)
    folder.mkdir(parents=True, exist_ok=True)
    readable = Path(printable_name(src.name))  # a name that is not UTF-8 gets \xNN escapes
    for k in range(10_000):
        name = readable.name if k == 0 else f"{readable.stem}.{k}{readable.suffix}"
        dest = folder / name
        note = folder / f"{name}.reason.txt"
        if dest.exists():
            continue
        try:
            # Creating the note exclusively reserves the name against a concurrent quarantine.
            with open(note, "x", encoding="utf-8", errors="backslashreplace") as fh:
                stamp = datetime.now().astimezone().isoformat(timespec="seconds")
                fh.write(f"{reason}\n\nfile: {printable_name(str(src))}\n"
                         f"quarantined: {stamp}\n")
        except FileExistsError:
            continue
        try:
            shutil.move(str(src), str(dest))
        except BaseException:
            note.unlink(missing_ok=True)
            raise
        return dest
    raise FileExistsError(f"{folder}: no free name for {src.name} in quarantine")


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def stable_files(paths: list[Path], settle_seconds: float = 1.0) -> list[Path]:
    """The files among `paths` whose size and mtime stay unchanged over one settle period.

    One wait for the whole batch, so a folder of thousands of faces costs one settle time.
    """
    before = {p: _signature(Path(p)) for p in paths}
    time.sleep(settle_seconds)
    return [Path(p) for p, sig in before.items()
            if sig is not None and _signature(Path(p)) == sig]


def file_is_stable(path: str | os.PathLike[str], settle_seconds: float = 1.0) -> bool:
    """True when the file exists and its size and mtime stay unchanged for `settle_seconds`."""
    return bool(stable_files([Path(path)], settle_seconds))

"""Copying a faceswap or DeepFaceLab face set into a workspace (``swapd faces import``).

Each file is checked with :func:`swapd.faces.validate.inspect_face_file` first; good ones are
copied under a hidden temporary name and renamed into place, so the running service never
reads half a file. Bad ones are left where they are (they are the user's originals) and
reported with the reason. Nothing is converted: swapd reads both formats as they are.
"""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from swapd.faces.validate import BadFaceError, inspect_face_file
from swapd.media import IMAGE_SUFFIXES


@dataclass
class ImportReport:
    """What an import did: files copied per kind, files skipped with why, already present."""

    copied: Counter[str] = field(default_factory=Counter)  # "faceswap" / "deepfacelab" / "plain"
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    unchanged: int = 0


def import_faces(source: Path, destination: Path, min_size: int = 64) -> ImportReport:
    """Copy every usable face image directly inside ``source`` into ``destination``."""
    if not source.is_dir():
        raise NotADirectoryError(f"{source}: not a folder")
    destination.mkdir(parents=True, exist_ok=True)
    report = ImportReport()
    for path in sorted(source.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            info = inspect_face_file(path, min_size=min_size)
        except BadFaceError as exc:
            report.skipped.append((path, exc.reason))
            continue
        target = destination / path.name
        if target.exists():
            if target.read_bytes() == path.read_bytes():
                report.unchanged += 1
            else:  # never overwrite a face already in the set
                report.skipped.append((path, f"a different {target.name} is already in "
                                             f"{destination}"))
            continue
        temp = destination / f".{path.name}.{uuid.uuid4().hex[:8]}.part"
        try:
            shutil.copyfile(path, temp)
            temp.replace(target)
        except OSError as exc:
            report.skipped.append((path, f"could not be copied ({exc.strerror or exc})"))
            continue
        finally:
            temp.unlink(missing_ok=True)
        report.copied[info.kind] += 1
    return report

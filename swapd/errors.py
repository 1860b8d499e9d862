"""The shape every "this file is bad" error in swapd shares.

Bad input must get a clear error naming the file and the problem (DESIGN.md). Each module's own
error class (BadFaceError, UnreadableMediaError, CheckpointError, ...) subclasses `FileProblem`
and the builtin it behaves like, so `except ValueError` keeps working where it did.
"""

from __future__ import annotations

import os
from pathlib import Path


class FileProblem(Exception):
    """A problem with one file: `path`, `reason`, and the message "<path>: <reason>"."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type[FileProblem], tuple[Path, str]]:
        # Pickled by (path, reason), so the error crosses process pools intact.
        return (self.__class__, (self.path, self.reason))

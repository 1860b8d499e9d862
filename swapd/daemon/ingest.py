"""Face ingest: every file dropped into faces/<set>/ is checked once it has settled; a bad one is
moved to .swapd/quarantine/<set>/ with a reason file and a problem record, and nothing else stops.
"""

from __future__ import annotations

import time
from pathlib import Path

from swapd.daemon.state import StateStore
from swapd.fsutil import file_stamp
from swapd.media import IMAGE_SUFFIXES
from swapd.workspace import Workspace


class FaceIngest:
    def __init__(self, ws: Workspace, store: StateStore, min_size: int,
                 settle_seconds: float) -> None:
        self.ws, self.store = ws, store
        self.min_size, self.settle = min_size, settle_seconds
        self._checked: dict[Path, tuple[int, int]] = {}  # file -> (size, mtime_ns) when accepted

    def scan(self) -> tuple[int, int, bool]:
        """Check new files. Returns (accepted, quarantined, some files still settling)."""
        from swapd.faces.validate import BadFaceError, inspect_face_file, quarantine_file

        accepted = quarantined = 0
        settling = False
        present: set[Path] = set()
        if not self.ws.faces.is_dir():
            return 0, 0, False
        for set_dir in sorted(p for p in self.ws.faces.iterdir() if p.is_dir()):
            for path in sorted(set_dir.iterdir()):
                if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                present.add(path)
                key = file_stamp(path)
                if key is None or self._checked.get(path) == key:
                    continue
                if time.time() - key[1] / 1e9 < self.settle:
                    settling = True  # still being copied, perhaps: look again shortly
                    continue
                try:
                    inspect_face_file(path, min_size=self.min_size)
                except BadFaceError as exc:
                    shown = self.ws.relative(path)
                    moved = quarantine_file(path, self.ws.quarantine, set_dir.name, exc.reason)
                    self.store.report_problem(shown, "face", f"{shown}: {exc.reason}",
                                              moved_to=self.ws.relative(moved))
                    self.store.log_event(f"set aside {shown}: {exc.reason}", level="warning")
                    quarantined += 1
                    continue
                self._checked[path] = key
                accepted += 1
        for gone in set(self._checked) - present:
            del self._checked[gone]
        return accepted, quarantined, settling

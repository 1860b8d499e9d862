"""Filesystem watching: wakes the service when jobs, faces or footage change.

watchdog delivers events on its own thread; we only note which parts of the workspace changed and
set an event, and the service's loop does the work. The loop also rescans on a timer, so an event
watchdog misses (network shares, editors that replace files) is picked up anyway.
"""

from __future__ import annotations

import threading
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from swapd.workspace import Workspace

AREAS = ("jobs", "faces", "footage")


class WorkspaceWatcher(FileSystemEventHandler):
    """Collects which areas (jobs, faces, footage) changed since the last `take_changes`."""

    def __init__(self, workspace: Workspace, wake: threading.Event) -> None:
        self._ws = workspace
        self._wake = wake
        self._lock = threading.Lock()
        self._changed: set[str] = set(AREAS)  # everything is new at start
        self._observer = Observer()

    def start(self) -> None:
        for area in AREAS:
            folder = self._ws.root / area
            folder.mkdir(parents=True, exist_ok=True)
            self._observer.schedule(self, str(folder), recursive=True)
        self._observer.daemon = True
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        areas = {self._area(Path(str(p))) for p in paths if p}
        areas.discard(None)
        if not areas:
            return
        with self._lock:
            self._changed.update(a for a in areas if a)
        self._wake.set()

    def _area(self, path: Path) -> str | None:
        try:
            first = path.relative_to(self._ws.root).parts[0]
        except (ValueError, IndexError):
            return None
        if first == "jobs" and path.suffix != ".toml":
            return None  # our own status files must not wake us
        return first if first in AREAS else None

    def take_changes(self) -> set[str]:
        with self._lock:
            changed, self._changed = self._changed, set()
        return changed

    def mark_all(self) -> None:
        """Force a full rescan on the next loop (the periodic safety net)."""
        with self._lock:
            self._changed.update(AREAS)
        self._wake.set()

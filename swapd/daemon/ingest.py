"""Face ingest and the face index.

Every file dropped into faces/<set>/ is checked once it has settled (a copy in progress is not
read half-written) and recorded in the state database's face index: content hash, size,
channels, landmarks, pose, source, status. A bad file is moved to .swapd/quarantine/<set>/ with
a reason file, indexed as quarantined with the reason, and reported as a problem; nothing else
stops. Re-scans are incremental: a file whose size and mtime match its index row is not read
again, so re-scanning thousands of unchanged faces costs one ``stat`` each.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import sqlite3
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from swapd.fsutil import is_disk_full, printable_name
from swapd.state import FaceRecord, StateStore
from swapd.workspace import Workspace

if TYPE_CHECKING:
    from swapd.extract.detectors.base import Detector

log = logging.getLogger(__name__)

# From this many files on, checks run in worker processes rather than threads: parsing the
# faceswap header (ast.literal_eval) holds the GIL, so threads stop scaling; process start-up
# (~1 s) pays off only for a big batch such as a whole set dropped in at once.
PROCESS_POOL_FROM = 300


@dataclass
class ScanResult:
    accepted: int = 0
    quarantined: int = 0
    removed: int = 0
    unchanged: int = 0
    settling: bool = False  # some files changed too recently: look again shortly


def ingest_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class FaceIngest:
    def __init__(self, ws: Workspace, store: StateStore, min_size: int,
                 settle_seconds: float, landmark_detector: str = "mtcnn") -> None:
        """``landmark_detector``: the plugin that finds landmarks for faces whose files lack
        them (see swapd.extract.face_landmarks), or "none"."""
        self.ws, self.store = ws, store
        self.min_size, self.settle = min_size, settle_seconds
        self.landmark_detector = landmark_detector
        self._failed_sets: set[str] = set()  # sets whose last scan failed (a problem says why)

    def scan(self) -> ScanResult:
        """Check new and changed files of every set, update the index."""
        total = ScanResult()
        if not self.ws.faces.is_dir():
            return total
        present = sorted(p for p in self.ws.faces.iterdir() if p.is_dir())
        for gone in set(self.store.face_sets()) - {p.name for p in present}:
            self.store.forget_face_set(gone)  # the folder was removed: so are its faces
        for set_dir in present:
            shown = f"faces/{printable_name(set_dir.name)}"
            try:
                if printable_name(set_dir.name) != set_dir.name:
                    raise ValueError("the folder's name is not valid UTF-8: rename it")
                result = self.scan_set(set_dir)
            except Exception as exc:  # one set's trouble (a vanished folder, a full disk, a
                # broken pool) must not stop the service; the next scan tries again
                if shown in self._failed_sets:  # (said, with its traceback, the first time)
                    log.debug("scanning %s failed again: %s", shown, exc)
                else:
                    log.exception("scanning %s failed", shown)
                with contextlib.suppress(sqlite3.Error):  # (a full disk fails these too)
                    self.store.report_problem(shown, "face", f"{shown}: could not be scanned "
                                              f"({type(exc).__name__}: {exc}); the next scan "
                                              "tries again")
                    self.store.log_event(f"scanning {shown} failed: {exc}", level="error")
                self._failed_sets.add(shown)
                continue
            if shown in self._failed_sets:
                self._failed_sets.discard(shown)
                self.store.clear_problems(shown)
            total.accepted += result.accepted
            total.quarantined += result.quarantined
            total.removed += result.removed
            total.unchanged += result.unchanged
            total.settling |= result.settling
        return total

    def scan_set(self, set_dir: Path) -> ScanResult:
        from swapd.faces.validate import face_files

        result = ScanResult()
        set_name = set_dir.name
        known = self.store.face_stamps(set_name)
        left = self.store.faces_left_in_place(set_name)
        present: set[str] = set()
        to_check: list[tuple[Path, int, int]] = []
        odd: list[tuple[Path, int, int]] = []  # names that are not UTF-8: each a bad file
        now = time.time()
        for path, st in face_files(set_dir):
            name = printable_name(path.name)
            present.add(name)
            stamp = (st.st_size, st.st_mtime_ns)
            # A quarantined row does not cover a file back in the set: check it again; one
            # left where it was (outside the workspace) is covered while it is unchanged.
            covered = [(*stamp, "ok"), *([(*stamp, "quarantined")] if name in left else [])]
            if known.get(name) in covered:
                result.unchanged += 1
                continue
            if now - st.st_mtime_ns / 1e9 < self.settle:
                result.settling = True
                continue
            (odd if name != path.name else to_check).append((path, *stamp))
        records = self._check(set_name, to_check, now, result, odd)
        removed = [n for n, (_, _, status) in known.items() if status == "ok" and n not in present]
        result.removed = len(removed)
        if records or removed:
            self.store.index_faces(records, removed, set_name)
        return result

    def _check(self, set_name: str, files: list[tuple[Path, int, int]], now: float,
               result: ScanResult, odd: list[tuple[Path, int, int]]) -> list[FaceRecord]:
        from swapd.faces.validate import BadFaceError

        check = partial(index_record, set_name, now=now, min_size=self.min_size,
                        landmark_detector=self.landmark_detector)
        pool: Executor
        # Processes on POSIX only: under the Windows service sys.executable is not python.
        if len(files) >= PROCESS_POOL_FROM and ingest_threads() > 1 and os.name == "posix":
            # spawn, not fork: the service has threads (watcher, dashboard) a fork would copy.
            pool = ProcessPoolExecutor(ingest_threads(),
                                       mp_context=multiprocessing.get_context("spawn"))
        else:
            pool = ThreadPoolExecutor(ingest_threads())
        with pool:
            outcomes: list[FaceRecord | Exception] = list(pool.map(check, files, chunksize=32))
        files = [*files, *odd]
        outcomes += [BadFaceError(path, "its name is not valid UTF-8 (shown here with its odd "
                                  "bytes as \\xNN): rename it")
                     for path, _, _ in odd]
        records = []
        for file, outcome in zip(files, outcomes, strict=True):
            if isinstance(outcome, FaceRecord):
                records.append(outcome)
                result.accepted += 1
                continue
            assert isinstance(outcome, BadFaceError)
            record = self._set_aside(set_name, file, outcome.reason, now)
            if record is not None:
                records.append(record)
                result.quarantined += 1
        return records

    def _set_aside(self, set_name: str, file: tuple[Path, int, int], reason: str,
                   now: float) -> FaceRecord | None:
        """Move a bad face file to the quarantine with its reason, and record it; a file that
        lives outside the workspace (a set folder linked in from elsewhere) is never moved:
        it is recorded as set aside, where it is. None when it vanished meanwhile."""
        from swapd.faces.validate import quarantine_file

        path, size, mtime_ns = file
        name = printable_name(path.name)
        shown = f"faces/{printable_name(set_name)}/{name}"  # as the user sees it, not a link's
        moved, kept = None, " (left where it is: it lives outside the workspace)"
        if self._inside_workspace(path.parent):
            try:
                moved = quarantine_file(path, self.ws.quarantine, set_name, reason)
            except FileNotFoundError:  # removed while it was being checked
                return None
            except OSError as exc:  # (a read-only folder): recorded, left where it is
                if is_disk_full(exc):
                    raise  # the set's scan fails, said, and is tried again
                kept = f" (left where it is: it could not be moved: {exc.strerror or exc})"
        where = str(Path(self.ws.relative(moved.parent)) / moved.name) if moved else None
        kept = "" if moved else kept
        self.store.report_problem(shown, "face", f"{shown}: {reason}{kept}", moved_to=where)
        self.store.log_event(f"set aside {shown}: {reason}{kept}", level="warning")
        return FaceRecord(set_name, name, "quarantined", size, mtime_ns, reason=reason,
                          moved_to=where, first_seen=now, checked_at=now)

    def _inside_workspace(self, folder: Path) -> bool:
        try:
            return folder.resolve().is_relative_to(self.ws.root.resolve())
        except OSError:
            return False


@functools.cache
def _landmark_detector(name: str) -> Detector:
    """One detector per process (pool workers included), made when a face first needs it."""
    from swapd.extract.detectors.registry import create_detector

    return create_detector(name)


def index_record(set_name: str, file: tuple[Path, int, int], now: float,
                 min_size: int, landmark_detector: str = "mtcnn") -> FaceRecord | Exception:
    """The index row of a good face file, or the BadFaceError saying what is wrong with it.
    (A module-level function, so process pools can run it.)

    A face whose file has no landmarks in its image's pixels (plain images, faceswap's own
    PNGs) gets them from the detector; one it cannot find stays in the set, unaligned.
    """
    from swapd.extract.face_landmarks import add_found_landmarks
    from swapd.faces.validate import BadFaceError, inspect_face_file

    path, size, mtime_ns = file
    try:
        info = inspect_face_file(path, min_size=min_size)
    except BadFaceError as exc:
        return exc
    except Exception as exc:  # a check that fails in a way nobody foresaw: still this file's
        return BadFaceError(path, f"could not be checked ({type(exc).__name__}: {exc})")
    try:
        if info.landmarks is None and landmark_detector != "none":
            add_found_landmarks(info, _landmark_detector(landmark_detector))
    except Exception:  # the file is good; only its landmarks stay unknown
        log.exception("finding landmarks in %s failed", path)
    try:
        described = info.describe()
    except Exception as exc:
        return BadFaceError(path, f"could not be described ({type(exc).__name__}: {exc})")
    pose = described["pose"] or {}
    return FaceRecord(
        set_name, path.name, "ok", size, mtime_ns, hash=info.content_hash, kind=info.kind,
        width=info.width, height=info.height, channels=info.channels,
        landmarks=described["landmarks"], landmarks_from=info.landmarks_from,
        centering=info.centering, mask_source=info.mask_source,
        yaw=pose.get("yaw"), pitch=pose.get("pitch"),
        roll=pose.get("roll"), source=described["source_filename"], first_seen=now,
        checked_at=now)

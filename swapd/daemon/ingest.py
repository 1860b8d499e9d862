"""Face ingest and the face index.

Every file dropped into faces/<set>/ is checked once it has settled (a copy in progress is not
read half-written) and recorded in the state database's face index: content hash, size,
channels, landmarks, pose, source, status. A bad file is moved to .swapd/quarantine/<set>/ with
a reason file, indexed as quarantined with the reason, and reported as a problem; nothing else
stops. Re-scans are incremental: a file whose size and mtime match its index row is not read
again, so re-scanning thousands of unchanged faces costs one ``stat`` each.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

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

    def scan(self) -> ScanResult:
        """Check new and changed files of every set, update the index."""
        total = ScanResult()
        if not self.ws.faces.is_dir():
            return total
        present = sorted(p for p in self.ws.faces.iterdir() if p.is_dir())
        for gone in set(self.store.face_sets()) - {p.name for p in present}:
            self.store.forget_face_set(gone)  # the folder was removed: so are its faces
        for set_dir in present:
            try:
                result = self.scan_set(set_dir)
            except Exception as exc:  # one set's trouble (a vanished folder, a full disk, a
                # broken pool) must not stop the service; the next scan tries again
                log.exception("scanning %s failed", set_dir)
                self.store.log_event(f"scanning faces/{set_dir.name} failed: {exc}",
                                     level="error")
                continue
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
        present: set[str] = set()
        to_check: list[tuple[Path, int, int]] = []
        now = time.time()
        for path, st in face_files(set_dir):
            present.add(path.name)
            old = known.get(path.name)
            # A quarantined row does not cover a file back in the set: check it again.
            if old is not None and old == (st.st_size, st.st_mtime_ns, "ok"):
                result.unchanged += 1
                continue
            if now - st.st_mtime_ns / 1e9 < self.settle:
                result.settling = True
                continue
            to_check.append((path, st.st_size, st.st_mtime_ns))
        records = self._check(set_name, to_check, now, result)
        removed = [n for n, (_, _, status) in known.items() if status == "ok" and n not in present]
        result.removed = len(removed)
        if records or removed:
            self.store.index_faces(records, removed, set_name)
        return result

    def _check(self, set_name: str, files: list[tuple[Path, int, int]], now: float,
               result: ScanResult) -> list[FaceRecord]:
        from swapd.faces.validate import BadFaceError, quarantine_file

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
            outcomes = list(pool.map(check, files, chunksize=32))
        records = []
        for (path, size, mtime_ns), outcome in zip(files, outcomes, strict=True):
            if isinstance(outcome, FaceRecord):
                records.append(outcome)
                result.accepted += 1
                continue
            assert isinstance(outcome, BadFaceError)
            shown = self.ws.relative(path)
            try:
                moved = self.ws.relative(
                    quarantine_file(path, self.ws.quarantine, set_name, outcome.reason))
            except FileNotFoundError:  # removed while it was being checked
                continue
            self.store.report_problem(shown, "face", f"{shown}: {outcome.reason}",
                                      moved_to=moved)
            self.store.log_event(f"set aside {shown}: {outcome.reason}", level="warning")
            records.append(FaceRecord(set_name, path.name, "quarantined", size, mtime_ns,
                                      reason=outcome.reason, moved_to=moved, first_seen=now,
                                      checked_at=now))
            result.quarantined += 1
        return records


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

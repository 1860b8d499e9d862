"""`swapd verify` for the outputs page: run in one background thread, once per file version
(path, size, mtime), so a page that lists many videos never waits on decoding them. Only each
file's newest version is kept, and at most :data:`MAX_RESULTS` files (the oldest checked go
first), so a dashboard that runs for months holds what its pages can show."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

_Key = tuple[str, int, int]
MAX_RESULTS = 10_000


class VerifyCache:
    def __init__(self) -> None:
        self._results: dict[_Key, dict[str, Any]] = {}
        self._pending: dict[_Key, Future[None]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="swapd-verify")
        self._anchors: bytes | None = None
        self._generation = 0  # one more each time the anchors change: older checks are stale

    def trust(self, pem_file: str | None) -> None:
        """Check C2PA manifests against these CA certificates (a PEM file; None: none) from
        now on: results so far are dropped."""
        from swapd.merger.content_credentials import read_trust_anchors

        anchors = read_trust_anchors(pem_file) if pem_file else None
        with self._lock:
            if anchors != self._anchors:
                self._anchors = anchors
                self._generation += 1
                self._results.clear()

    def result(self, path: Path) -> dict[str, Any] | None:
        """What verify found in this version of the file, or None while it is being checked
        (the check starts on the first call)."""
        try:
            stat = path.stat()
        except OSError:
            return {"error": "the file is gone"}
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._results:
                return self._results[key]
            if key not in self._pending:
                self._pending[key] = self._pool.submit(self._check, key, path,
                                                       self._anchors, self._generation)
        return None

    def _check(self, key: _Key, path: Path, anchors: bytes | None, generation: int) -> None:
        from swapd.media import UnreadableMediaError
        from swapd.merger.provenance import verify_file
        from swapd.merger.verdict import verdict_record

        try:
            # what `swapd verify --json` prints for it, its line included
            result: dict[str, Any] = verdict_record(verify_file(path, anchors))
        except UnreadableMediaError as exc:
            result = {"error": str(exc)}
        except Exception as exc:  # a page shows it; it never takes the dashboard down
            result = {"error": f"verify failed: {exc}"}
        with self._lock:
            if generation == self._generation:  # else checked with anchors since replaced
                for old in [k for k in self._results if k[0] == key[0]]:  # older versions
                    del self._results[old]
                self._results[key] = result
                while len(self._results) > MAX_RESULTS:
                    del self._results[next(iter(self._results))]
            self._pending.pop(key, None)


def describe(result: dict[str, Any] | None) -> str:
    """The line `swapd verify` prints for the file, or why there is none (yet)."""
    if result is None:
        return "checking the marks…"
    if "error" in result:
        return f"cannot check: {result['error']}"
    return str(result["verdict"])


def shown_state(result: dict[str, Any] | None) -> str:
    """The verdict's colour on a page: checking, ok (marked, the marks agreeing), doubt
    (marked but the marks disagree, a tampered manifest among them; or not marked but an
    inconclusive watermark) or bad (not marked, or not checkable)."""
    if result is None:
        return "checking"
    if "error" in result:
        return "bad"
    if result["marked"]:
        return "doubt" if result["marks_disagree"] else "ok"
    return "doubt" if result["watermark_inconclusive"] else "bad"

"""Workers that end badly: why (in words), and when to try again.

A training or merge worker that crashes is started again after a back-off that doubles with
each crash in a row, up to :data:`MAX_DELAY`, and is never given up on: the causes that crash a
worker on a machine left alone (a full disk, memory, a GPU that went away, a kill) clear by
themselves. Causes that will not clear (a corrupt model the user must restore, an options
error) are not crashes: the worker says so itself and exits with ``EXIT_BAD_INPUT``.
"""

from __future__ import annotations

import re
import signal
import time
from dataclasses import dataclass

FIRST_DELAY = 2.0  # seconds before the first retry; doubled at each crash in a row
MAX_DELAY = 600.0
STABLE_RUN_SECONDS = 120.0  # a worker that ran this long starts the count again

_OUT_OF_MEMORY = ("out of memory", "memoryerror", "cannot allocate memory",
                  "std::bad_alloc", "defaultcpuallocator: can't allocate")
_GPU_GONE = ("no cuda gpus are available", "cuda error", "cudnn_status", "cublas_status",
             "device-side assert", "nccl error", "cuda driver", "unknown error")
# The last line of a Python traceback: "ValueError: ...", "sqlite3.OperationalError: ...".
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*)$")


def crash_cause(code: int, log_tail: str) -> str:
    """Why a worker ended with exit status ``code`` (negative: the signal that killed it), in
    a few words, from the end of its log."""
    text = log_tail.lower()
    if any(mark in text for mark in _OUT_OF_MEMORY):
        return "out of memory"
    if "cuda" in text and any(mark in text for mark in _GPU_GONE):
        return "the GPU failed or went away"
    if code == -signal.SIGKILL:
        return "killed by SIGKILL (often the system's out-of-memory killer)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    for line in reversed(lines):
        found = _EXCEPTION_LINE.match(line)
        if found:
            return f"exit status {code}: {found.group(1)[:300]}"
    return f"exit status {code}"


@dataclass
class Backoff:
    """Crashes in a row of one job (or one merge) and when it may start again."""

    count: int = 0
    not_before: float = 0.0

    def crashed(self, ran_seconds: float) -> float:
        """Count a crash of a worker that ran ``ran_seconds``; the delay before the next try."""
        if ran_seconds > STABLE_RUN_SECONDS:
            self.count = 0
        self.count += 1
        delay = min(MAX_DELAY, FIRST_DELAY * 2.0 ** (self.count - 1))
        self.not_before = time.monotonic() + delay
        return delay

    def waiting(self) -> bool:
        return self.not_before > time.monotonic()

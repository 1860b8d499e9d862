"""Worker processes: training and merging run apart from the service, so a crash, an
out-of-memory kill or a NaN in one job never takes the service down.

Each worker is `python -m swapd.daemon.<module>` in its own session (Ctrl-C in a terminal reaches
only the service, which then stops the workers in order), with its output in .swapd/logs/.
Stopping asks twice: a "stop" control in the state store (works on every platform) and SIGTERM
(POSIX); a worker that has not saved and exited by the timeout is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from swapd.state import StateStore

# Exit codes a worker uses to tell the service what happened.
EXIT_OK = 0  # finished, or stopped cleanly after saving
EXIT_BAD_INPUT = 3  # the job or its input is wrong: do not retry until it changes
EXIT_NON_FINITE = 4  # training diverged (NaN/inf loss) and could not recover
EXIT_DISK_FULL = 5  # refused to write: too little free space (the job waits for it)
EXIT_BUSY = 6  # the model folder is held by another process (the job waits for it)
EXIT_NOT_FINISHED = 7  # a merge's output could not be finished (signed): the footage stays,
#                        not tried again until it changes (or the service restarts)


@dataclass
class WorkerProcess:
    """One running worker and what the service knows about it."""

    job: str
    kind: str  # train | merge
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)
    stop_requested: float | None = None
    source: Path | None = None  # the footage file a merge worker is working on
    output: Path | None = None  # the folder it writes into

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def request_stop(self, store: StateStore) -> None:
        if self.stop_requested is not None:
            return
        self.stop_requested = time.monotonic()
        if self.kind == "train":
            store.request_control(self.job, "stop")
        if sys.platform != "win32" and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)

    def kill_if_overdue(self, timeout: float) -> bool:
        """Kill a worker that was asked to stop `timeout` seconds ago and still runs."""
        if (self.stop_requested is not None and self.process.poll() is None
                and time.monotonic() - self.stop_requested > timeout):
            self.process.kill()
            self.process.wait()
            return True
        return False

    def log_tail(self, lines: int = 8) -> str:
        """The end of the worker's log, for error reports."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


def start_worker(module: str, args: list[str], job: str, kind: str, log_path: Path,
                 source: Path | None = None, output: Path | None = None,
                 env_extra: dict[str, str] | None = None) -> WorkerProcess:
    """Start `python -m swapd.daemon.<module> ARGS` with its output appended to log_path
    (``env_extra``: more environment variables for it)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", f"swapd.daemon.{module}", *args]
    kwargs: dict[str, object] = {}
    if sys.platform == "win32":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    else:
        kwargs["start_new_session"] = True
    env = dict(os.environ, SWAPD_PARENT_PID=str(os.getpid()), PYTHONUNBUFFERED="1")
    # OpenMP threads that spin while waiting starve everything else on a small CPU (measured
    # 1.5-4x slower training on 2 shared cores); passive waiting costs nothing when idle.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.update(env_extra or {})
    with open(log_path, "ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, **kwargs)  # type: ignore[call-overload]
    return WorkerProcess(job=job, kind=kind, process=process, log_path=log_path, source=source,
                         output=output)


def parent_alive() -> bool:
    """Workers stop (after saving) when the service that started them is gone."""
    expected = os.environ.get("SWAPD_PARENT_PID")
    if not expected:
        return True
    if sys.platform == "win32":
        # No cheap parent check there: a Windows worker relies on the "stop" control.
        return True
    return os.getppid() == int(expected)

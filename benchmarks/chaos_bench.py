"""The chaos suite's bench (benchmarks/chaos.py runs the scenarios): a workspace with its
service, restartable, and looks into its state, its checkpoint and its processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swapd.state import StateStore  # noqa: E402
from swapd.trainer.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from tests.support import (  # noqa: E402
    FAST_CONFIG,
    TINY_JOB,
    ServiceProcess,
)

JOB = TINY_JOB.format(iterations=0, save_every=5)


@dataclass
class Result:
    scenario: str
    tries: int = 0
    survived: int = 0
    lost: int = 0
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def tried(self, ok: bool, why: str = "") -> None:
        self.tries += 1
        self.survived += ok
        if not ok:
            self.failures.append(why)


def within(predicate: Callable[[], Any], timeout: float, poll: float = 0.2) -> Any:
    """predicate()'s first truthy value within ``timeout`` seconds, else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 (a file half-there, a database busy: look again)
            value = None
        if value:
            return value
        time.sleep(poll)
    return None


class Bench:
    """One workspace, its service (restartable) and looks into its state."""

    def __init__(self, root: Path, sets: dict[str, Path], clip: Path | None = None) -> None:
        self.root, self.ws = root, root / "ws"
        (root / "swapd.toml").write_text(FAST_CONFIG)
        self.started = 0
        self.svc = self.start()
        within(lambda: (self.ws / ".swapd" / "state.db").exists(), 60)
        self.store = StateStore(self.ws / ".swapd" / "state.db", readonly=True)
        for name in ("alice", "bob"):
            subprocess.run(["cp", "-r", str(sets[name]), str(self.ws / "faces" / name)],
                           check=True)
        if clip is not None:
            (self.ws / "footage" / "tiny").mkdir(parents=True, exist_ok=True)
        (self.ws / "jobs" / "tiny.toml").write_text(JOB)
        self.model = self.ws / "models" / "tiny" / "model.pt"

    def start(self) -> ServiceProcess:
        svc = ServiceProcess(self.ws, self.root / "swapd.toml",
                             self.root / f"service{self.started}.log")
        svc.start()
        self.started += 1
        return svc

    def alive(self) -> bool:
        return self.svc.process is not None and self.svc.process.poll() is None

    def iteration(self) -> int:
        row = self.store.job("tiny")
        return row.iteration if row else 0

    def saved(self) -> int | None:
        """The checkpoint's iteration; None when it does not load (a lost model)."""
        try:
            return int(load_checkpoint(self.model)["iteration"])
        except (CheckpointError, OSError, KeyError, RuntimeError):
            return None

    def trains_past(self, iteration: int, timeout: float = 120) -> bool:
        return bool(within(lambda: self.iteration() > iteration, timeout))

    def workers(self, module: str) -> list[int]:
        """Pids of this workspace's worker processes of ``module`` (train_worker, ...)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                words = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"swapd.daemon.{module}".encode() in words and str(self.ws).encode() in words:
                found.append(int(entry.name))
        return found

    def close(self) -> None:
        self.store.close()
        if self.alive():
            self.svc.terminate(timeout=60)
        self.svc.kill()
        for pid in self.workers("train_worker") + self.workers("merge_worker"):
            kill(pid)


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def sample(pid: int) -> tuple[int, int]:
    """(resident memory in kB, open descriptors) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines()
               if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))

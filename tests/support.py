"""Helpers for tests that run swapd as real processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             process: subprocess.Popen[bytes] | None = None, poll: float = 0.25) -> object:
    """Poll until predicate() is truthy; fail naming `what` (and the service's log) if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"service exited ({process.returncode}) while waiting for {what}")
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


class ServiceProcess:
    """`swapd run` as a real subprocess, its output in a log file."""

    def __init__(self, workspace: Path, config: Path, log: Path) -> None:
        self.workspace, self.config, self.log_path = workspace, config, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "swapd", "run", "--workspace", str(self.workspace),
             "--config", str(self.config), "--no-dashboard"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        return self.process

    def terminate(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM; returns (exit status, seconds it took)."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self._log.close()
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if hasattr(self, "_log"):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


FAST_CONFIG = """\
[service]
poll_seconds = 0.2
stop_timeout = 25.0
[dashboard]
enabled = false
[ingest]
settle_seconds = 0.3
min_face_size = 64
"""

TINY_JOB = """\
[train]
a = "faces/alice"
b = "faces/bob"
model = "lightweight"
batch_size = 4
iterations = {iterations}
save_every = {save_every}

[train.options]
input_size = 32
width = 0.125
dense_dim = 64
learning_rate = 0.0005

[merge]
footage = "footage/tiny"
"""


def copy_set(src: Path, dst: Path) -> None:
    """Copy a face set into a watched workspace the way a user would, file by file."""
    shutil.copytree(src, dst)

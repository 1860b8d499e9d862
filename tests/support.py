"""Helpers for tests that run swapd as real processes."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.trainer.loop import Trainer
from swapd.trainer.options import TrainerOptions


def in_ci() -> bool:
    """Under CI (CI=true, as .ci/run sets): a test never skips for want of a tool."""
    return os.environ.get("CI", "").lower() == "true"


def require_tools(*names: str) -> None:
    """Skip the test when a command it needs (ffprobe, ffmpeg) is not on PATH; under CI fail
    it instead: a CI machine without them would pass while testing less than it claims."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        message = f"needs {' and '.join(missing)} on PATH (apt install ffmpeg)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


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


def write_clip_frames(clip: Path, folder: Path, names: Callable[[int], str | None],
                      count: int) -> list[Path]:
    """Save frames of ``clip`` as PNG images: frame ``i`` (of the first ``count``) as
    ``folder / names(i)``, skipped where that is None."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    capture = cv2.VideoCapture(str(clip))
    for i in range(count):
        ok, image = capture.read()
        assert ok, f"{clip}: frame {i} does not decode"
        name = names(i)
        if name is not None:
            cv2.imwrite(str(folder / name), image)
            written.append(folder / name)
    capture.release()
    return written


def fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` to 0 bytes free; the file that fills it."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    if os.write(fd, block) < chunk:
                        break
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def wait_for_a_save_in_progress(model_dir: Path, timeout: float = 30.0) -> bool:
    """Spin until the trainer's temp checkpoint exists (it is being written); False if none
    appeared within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with os.scandir(model_dir) as entries:
            if any(e.name.startswith(".model.pt.") and e.name.endswith(".tmp") for e in entries):
                return True
        time.sleep(0.0005)  # a save of this model takes milliseconds
    return False


class ServiceProcess:
    """`swapd run` as a real subprocess, its output in a log file."""

    def __init__(self, workspace: Path, config: Path, log: Path,
                 wrapper: tuple[str, ...] = ()) -> None:
        """``wrapper``: a command the service runs under (e.g. a sandbox), its arguments
        first."""
        self.workspace, self.config, self.log_path = workspace, config, log
        self.wrapper = wrapper
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", "swapd", "run", "--workspace",
             str(self.workspace), "--config", str(self.config), "--no-dashboard"],
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


def state_db_made(db: Path) -> bool:
    """Whether the service has made the state database's tables (the file alone appears first:
    a look before its tables are made fails with "no such table")."""
    if not db.is_file():
        return False
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return connection.execute(
                "SELECT 1 FROM meta WHERE key='schema_version'").fetchone() is not None
        finally:
            connection.close()
    except sqlite3.OperationalError:
        return False


def start_with_face_sets(service: Callable[..., ServiceProcess], sets: dict[str, Path],
                         ws: Path, wrapper: tuple[str, ...] = ()) -> ServiceProcess:
    """Start a service (the ``service`` fixture's factory) on an empty workspace ``ws``, then
    drop the two face sets in, as a user would."""
    svc = service(wrapper)
    wait_for(lambda: state_db_made(ws / ".swapd" / "state.db"), 60, "the state database",
             svc.process)
    copy_set(sets["alice"], ws / "faces" / "alice")
    copy_set(sets["bob"], ws / "faces" / "bob")
    return svc


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


# -- cartoon faces for fast trainer tests --------------------------------------------------

FACE_PX = 48  # on-disk face side; the model crop is smaller
TINY = {"input_size": 32, "width": 0.125, "dense_dim": 32}

# Two identities that differ in every feature a swap should carry over.
IDENTITIES = {
    "a": {"skin": (80, 140, 220), "eyes": (200, 60, 20), "mouth": (40, 40, 160), "axes": (15, 20)},
    "b": {
        "skin": (160, 200, 120),
        "eyes": (20, 160, 40),
        "mouth": (160, 40, 120),
        "axes": (18, 17),
    },
}


def draw_face(identity: str, rng: np.random.Generator, size: int = FACE_PX) -> np.ndarray:
    """A cartoon face: coloured ellipse, two eyes, a mouth; jittered pose and expression."""
    p = IDENTITIES[identity]
    k = size / 48
    img = np.full((size, size, 3), rng.integers(20, 60), np.uint8)
    cx, cy = size / 2 + rng.normal(0, k), size / 2 + rng.normal(0, k)

    def pt(x: float, y: float) -> tuple[int, int]:
        return int(round(cx + x * k)), int(round(cy + y * k))

    def ax(w: float, h: float) -> tuple[int, int]:
        return max(1, int(round(w * k))), max(1, int(round(h * k)))

    cv2.ellipse(img, pt(0, 0), ax(*p["axes"]), rng.normal(0, 4), 0, 360, p["skin"], -1)
    for side in (-1, 1):
        cv2.circle(img, pt(6 * side, -5), max(1, int(3 * k)), p["eyes"], -1)
    cv2.ellipse(img, pt(0, 9), ax(7, rng.uniform(1, 4)), 0, 0, 360, p["mouth"], -1)
    return img


def write_faces(folder: Path, identity: str, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{identity}_{i:03d}.png"
        cv2.imwrite(str(path), draw_face(identity, rng))
        paths.append(path)
    return paths


def make_trainer(faces: tuple[Path, Path], model_dir: Path, **opts: object) -> Trainer:
    options = TrainerOptions(**{"learning_rate": 1e-3, "seed": 3, "preview_faces": 3, **opts})
    return Trainer("lightweight", TINY, options, faces[0], faces[1], model_dir, batch_size=4)



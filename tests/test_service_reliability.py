"""The service's supervision, driven a step at a time on a temp workspace (no main loop, no real
workers): the temp files of merges cut short go, at start and after a failed merge."""

from __future__ import annotations

import os
import signal
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from swapd.config import ServiceConfig
from swapd.daemon import merges, service
from swapd.daemon.service import Service
from swapd.daemon.workers import WorkerProcess
from swapd.workspace import Workspace
from tests.support import write_faces

CONFIG = """\
[service]
max_workers = 1
[dashboard]
enabled = false
[ingest]
settle_seconds = 0
min_face_size = 32
landmark_detector = "none"
"""

JOB = """\
[train]
a = "{a}"
b = "{b}"
model = "lightweight"
batch_size = 2
iterations = 10
save_every = 5
[train.options]
input_size = 32
width = 0.125
dense_dim = 16
"""


class FakeProcess:
    """A worker process that has exited with ``code`` (None: still running)."""

    def __init__(self, code: int | None = None) -> None:
        self.code, self.pid = code, 99999

    def poll(self) -> int | None:
        return self.code

    def kill(self) -> None:
        self.code = -9

    def wait(self) -> int | None:
        return self.code


def fake_worker(job: str, kind: str, log: Path, code: int | None = None, tail: str = "",
                **fields: object) -> WorkerProcess:
    log.write_text(tail)
    return WorkerProcess(job=job, kind=kind, process=FakeProcess(code),  # type: ignore[arg-type]
                         log_path=log, **fields)  # type: ignore[arg-type]


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    ws = Workspace.open(tmp_path / "ws")
    write_faces(ws.faces / "alice", "a", 3, seed=1)
    write_faces(ws.faces / "bob", "b", 3, seed=2)
    return ws


@pytest.fixture
def svc(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    """The service of ``ws``, its workers fakes that never run (``svc.started`` lists them)."""
    made = Service(ws, ServiceConfig.model_validate(tomllib.loads(CONFIG)))
    started: list[str] = []

    def start(module: str, args: list[str], job: str, kind: str, log_path: Path,
              **fields: object) -> WorkerProcess:
        started.append(job)
        return fake_worker(job, kind, log_path, **fields)

    monkeypatch.setattr(service, "start_worker", start)
    monkeypatch.setattr(merges, "start_worker", start)
    made.started = started  # type: ignore[attr-defined]
    yield made
    made.store.close()


def test_merge_temp_files_go_at_start_and_after_a_failed_merge(svc: Service,
                                                               ws: Workspace) -> None:
    (ws.root / "m.onnx").write_bytes(b"an export")
    (ws.jobs / "clip.toml").write_text('[merge]\nfootage = "footage/clip"\nmodel = "m.onnx"\n')
    source = ws.footage / "clip" / "take.mp4"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"footage")
    os.utime(source, (time.time() - 60, time.time() - 60))
    output = ws.output / "clip"
    output.mkdir(parents=True)
    stale = output / ".take_swapd.0123abcd.part.mp4"  # left by a merge killed mid-write
    stale.write_bytes(b"x" * 1000)
    mine = output / ".notes.part.mp4"  # not a merge's temp file name: left alone
    mine.write_bytes(b"mine")
    svc._recover_after_restart()
    assert not stale.exists() and mine.exists()

    svc.jobs.scan()
    svc.merges.start_next()
    assert svc.started == ["clip"]
    worker = svc.merges.worker
    assert worker is not None and worker.source == source and worker.output == output
    (output / ".take_swapd.89abcdef.part.mp4").write_bytes(b"half")  # killed alone
    worker.process.code = -signal.SIGKILL  # type: ignore[attr-defined]
    assert svc.merges.reap()
    assert sorted(p.name for p in output.iterdir()) == [mine.name]

"""The service's supervision, driven a step at a time on a temp workspace (no main loop, no real
workers): crash loops keep backing off and never end in a dead job, a killed merge is tried
again and its temp files go, a job without usable faces waits without taking a slot, and two
jobs on one model folder are the second job's error before any worker starts."""

from __future__ import annotations

import os
import signal
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from swapd.config import ServiceConfig
from swapd.daemon import merges, training
from swapd.daemon.crashes import MAX_DELAY, Backoff, crash_cause
from swapd.daemon.service import Service
from swapd.daemon.workers import EXIT_BAD_INPUT, EXIT_BUSY, EXIT_NOT_FINISHED, WorkerProcess
from swapd.fsutil import FolderLock
from swapd.state import StateStore
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
    environments: dict[str, dict] = {}

    def start(module: str, args: list[str], job: str, kind: str, log_path: Path,
              **fields: object) -> WorkerProcess:
        started.append(job)
        environments[job] = fields.pop("env_extra", None) or {}  # type: ignore[assignment]
        return fake_worker(job, kind, log_path, **fields)

    monkeypatch.setattr(training, "start_worker", start)
    monkeypatch.setattr(merges, "start_worker", start)
    made.started = started  # type: ignore[attr-defined]
    made.environments = environments  # type: ignore[attr-defined]
    yield made
    made.store.close()


def _job(ws: Workspace, name: str, a: str = "faces/alice", b: str = "faces/bob") -> None:
    (ws.jobs / f"{name}.toml").write_text(JOB.format(a=a, b=b))


def _merge_job(ws: Workspace) -> Path:
    """A merge job "clip" (an export, and footage settled long ago); the footage file."""
    (ws.root / "m.onnx").write_bytes(b"an export")
    (ws.jobs / "clip.toml").write_text('[merge]\nfootage = "footage/clip"\nmodel = "m.onnx"\n')
    source = ws.footage / "clip" / "take.mp4"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"footage")
    os.utime(source, (time.time() - 60, time.time() - 60))
    return source


def _pass(svc: Service) -> None:
    svc.ingest.scan()
    svc.jobs.scan(recheck_failed=True)
    svc.training.schedule(svc.config.service.max_workers)


@pytest.mark.parametrize(("code", "tail", "cause"), [
    (1, "Traceback...\nRuntimeError: CUDA out of memory. Tried to allocate", "out of memory"),
    (1, "MemoryError", "out of memory"),
    (1, "RuntimeError: CUDA error: unspecified launch failure", "the GPU failed"),
    (-signal.SIGKILL, "", "SIGKILL"),
    (-signal.SIGSEGV, "", "killed by SIGSEGV"),
    (1, "Traceback (most recent call last):\n  File x\nsqlite3.OperationalError: locked\n",
     "exit status 1: sqlite3.OperationalError: locked"),
    (2, "", "exit status 2"),
])
def test_a_crash_is_named_by_its_cause(code: int, tail: str, cause: str) -> None:
    assert cause in crash_cause(code, tail)


def test_the_back_off_doubles_to_its_cap_and_a_stable_run_starts_it_again() -> None:
    backoff = Backoff()
    delays = [backoff.crashed(1.0) for _ in range(15)]
    assert delays[:4] == [2.0, 4.0, 8.0, 16.0] and delays[-1] == MAX_DELAY
    assert backoff.crashed(3600.0) == 2.0


def test_a_crash_loop_keeps_trying_and_says_why(svc: Service, ws: Workspace) -> None:
    _job(ws, "tiny")
    _pass(svc)
    assert svc.started == ["tiny"]
    tail = "Traceback (most recent call last):\nRuntimeError: CUDA out of memory."
    for crash in range(1, 9):  # past the 5 that used to end in "error"
        worker = svc.training.workers.pop("tiny")
        worker.process.code = 1  # type: ignore[attr-defined]
        worker.log_path.write_text(tail)
        svc.training.exited("tiny", worker, 1)
        row = svc.store.job("tiny")
        assert row is not None and row.state == "queued", row
        assert "out of memory" in (row.error or "") and f"crash {crash} in a row" in row.error
        _pass(svc)
        assert "tiny" not in svc.training.workers  # backing off
        svc.training.backoff["tiny"].not_before = 0.0  # its delay is over
        _pass(svc)
        assert "tiny" in svc.training.workers, "started again"
    assert svc.started == ["tiny"] * 9
    assert [p for p in svc.store.problems() if p.kind == "worker"]
    # a cause that will not clear is the worker's own word: exit 3, no restart
    worker = svc.training.workers.pop("tiny")
    svc.store.set_job_state("tiny", "error", "model.pt: truncated or corrupt checkpoint")
    svc.training.exited("tiny", worker, EXIT_BAD_INPUT)
    _pass(svc)
    assert "tiny" not in svc.training.workers and svc.store.job("tiny").state == "error"


def test_a_killed_merge_is_tried_again_and_its_temp_files_go(svc: Service,
                                                            ws: Workspace) -> None:
    source = _merge_job(ws)
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
    problem = next(p for p in svc.store.problems() if p.kind == "footage")
    assert "SIGKILL" in problem.message
    svc.merges.start_next()
    assert svc.started == ["clip"], "retried only after its back-off"
    svc.merges._backoff[source].not_before = 0.0
    svc.merges.start_next()
    assert svc.started == ["clip", "clip"], "tried again without a restart"


def test_a_merge_whose_output_cannot_be_signed_keeps_its_footage_and_waits(
        svc: Service, ws: Workspace) -> None:
    """The worker's EXIT_NOT_FINISHED (its output could not be signed): the footage stays
    where it is, and is not merged again, over and over, until it changes."""
    source = _merge_job(ws)
    svc.jobs.scan()
    svc.merges.start_next()
    worker = svc.merges.worker
    assert worker is not None and worker.source == source
    worker.process.code = EXIT_NOT_FINISHED  # type: ignore[attr-defined]
    assert svc.merges.reap()
    svc.merges.start_next()
    assert svc.started == ["clip"] and svc.merges.worker is None and source.exists()
    later = source.stat().st_mtime + 5
    os.utime(source, (later, later))  # the footage changed: merged again
    svc.merges.start_next()
    assert svc.started == ["clip", "clip"]


def test_a_merge_waits_for_room_for_its_output(svc: Service, ws: Workspace,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from swapd.daemon import disk

    _merge_job(ws)
    svc.jobs.scan()
    room = disk.free_bytes
    monkeypatch.setattr(disk, "free_bytes", lambda _path: 1000)
    for _ in range(3):
        svc.merges.start_next()
    assert svc.started == []
    said = [m for _, _, _, m in svc.store.events(20, "clip") if m.startswith("disk full on")]
    assert len(said) == 1 and "1000 bytes free" in said[0] and "a merge of footage/clip" in said[0]
    monkeypatch.setattr(disk, "free_bytes", room)  # the space is back
    svc.merges.start_next()
    assert svc.started == ["clip"]


def test_jobs_without_usable_faces_wait_without_taking_a_slot(svc: Service, ws: Workspace,
                                                               tmp_path: Path) -> None:
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    (ws.faces / "empty").mkdir()
    (ws.faces / "broken").mkdir()
    (ws.faces / "broken" / "x.png").write_bytes(b"not a face")
    _job(ws, "aa_outside", a=str(outside))
    _job(ws, "ab_empty", b="faces/empty")
    _job(ws, "ac_broken", a="faces/broken")
    _job(ws, "zz_good")
    _pass(svc)
    assert svc.started == ["zz_good"], "the job that can train took the one slot"
    reasons = {name: svc.store.job(name) for name in ("aa_outside", "ab_empty", "ac_broken")}
    assert all(row.state == "waiting" for row in reasons.values())
    assert f"no usable faces in {outside} (no image files)" in reasons["aa_outside"].error
    assert "no usable faces in faces/empty (none indexed yet)" in reasons["ab_empty"].error
    assert "no usable faces in faces/broken (1 set aside)" in reasons["ac_broken"].error
    # faces arrive: it may train (once the slot is free)
    write_faces(ws.faces / "empty", "b", 2, seed=5)
    svc.training.workers.pop("zz_good")
    svc.store.set_job_state("zz_good", "done")
    _pass(svc)
    assert svc.started == ["zz_good", "ab_empty"]


def test_two_jobs_on_one_model_folder(svc: Service, ws: Workspace) -> None:
    (ws.models / "x").mkdir(parents=True)
    (ws.models / "y").symlink_to(ws.models / "x")  # one folder, two names
    _job(ws, "x")
    _job(ws, "y")
    svc.config = svc.config.model_copy(update={
        "service": svc.config.service.model_copy(update={"max_workers": 2})})
    _pass(svc)
    assert svc.started == ["x"]
    row = svc.store.job("y")
    assert row.state == "error" and row.error.startswith("models/x is in use by job x")
    _pass(svc)
    assert svc.started == ["x"]
    # the other job goes: the folder is y's
    svc.training.workers.pop("x")
    (ws.jobs / "x.toml").unlink()
    _pass(svc)
    assert svc.started == ["x", "y"]
    # two may train side by side: each worker is told, and takes half the cores and memory
    assert svc.environments["y"] == {"SWAPD_TRAINING_PROCESSES": "2"}


def test_a_folder_held_by_another_process_waits(svc: Service, ws: Workspace) -> None:
    (ws.models / "x").mkdir(parents=True)
    lock = FolderLock(ws.models / "x" / ".trainer.lock")  # (swapd train holds it)
    assert lock.acquire()
    _job(ws, "x")
    _pass(svc)
    assert svc.started == []
    assert "in use by another process" in svc.store.job("x").error
    lock.release()
    _pass(svc)
    assert svc.started == ["x"]


def test_the_worker_says_a_busy_folder_without_a_traceback(ws: Workspace,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    """A second trainer on a held folder (a race past the service's check) exits EXIT_BUSY
    with the job's state saying why, and the service tries again later."""
    from swapd.daemon import train_worker
    from swapd.daemon.jobs import JobRegistry

    _job(ws, "x")
    store = StateStore(ws.state_db)
    JobRegistry(ws, store).scan()
    lock = FolderLock(ws.models / "x" / ".trainer.lock")
    assert lock.acquire()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert train_worker.run(ws, "x") == EXIT_BUSY
    finally:
        lock.release()
        for sig, handler in handlers.items():  # (the worker installs its own)
            signal.signal(sig, handler)
    row = store.job("x")
    assert row.state == "waiting" and "models/x is in use by another process" in row.error
    assert "Traceback" not in capsys.readouterr().err
    store.close()

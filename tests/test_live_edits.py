"""Edits of a job file while its job trains (issue 18, item 7).

What an edit changes is sorted into live changes (the worker takes them between two steps),
the service's own sections, and the rest (the worker saves and starts again); the driver takes
a live change at the next step; and a real service, with a real worker, is edited through its
job file: a new learning rate and cadence apply at once, a bad edit keeps the running version
and says why, a change of the batch size restarts the worker from its checkpoint, a touch of a
paused job leaves it paused, and a target lowered below the current iteration ends the job.
The state the store shows is the worker's at every look: never "queued" while a worker runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from swapd.config import JobFile
from swapd.daemon.edits import job_edit
from swapd.state import StateStore
from swapd.trainer.driver import Cadence, Driver, Hooks, Request
from swapd.trainer.loop import StepStats
from tests.support import TINY_JOB, make_trainer, start_with_face_sets, wait_for


def _spec(text: str) -> JobFile:
    import tomllib

    return JobFile.model_validate(tomllib.loads(text))


def test_an_edit_is_sorted_into_live_service_and_restart_changes() -> None:
    base = TINY_JOB.format(iterations=1000, save_every=20)
    edit = job_edit(_spec(base), _spec(
        base.replace("iterations = 1000", "iterations = 480")
        .replace("save_every = 20", "save_every = 10\nsnapshot_every = 50")
        .replace("learning_rate = 0.0005", "learning_rate = 0.0001\nfocus_weight = 5")
        + '\n[schedule]\nwindows = ["22:00-07:00"]\n[export]\non = ["done"]\n'))
    assert edit.cadence == {"iterations": 480, "save_every": 10, "snapshot_every": 50,
                            "export_on": ["done"]}
    assert edit.options == {"learning_rate": 0.0001, "focus_weight": 5}
    assert edit.restart == () and edit.service == ("schedule",)
    # options built into the model, the loss or the data need a new worker
    edit = job_edit(_spec(base), _spec(base.replace("batch_size = 4", "batch_size = 2")
                                       .replace("width = 0.125", "width = 0.25")
                                       .replace("dense_dim = 64", "dense_dim = 64\nloss = 'mae'")))
    assert edit.restart == ("train.batch_size", "train.options.loss", "train.options.width")
    assert not edit.live
    # an option taken away goes back to its default (None in the request)
    edit = job_edit(_spec(base), _spec(base.replace("learning_rate = 0.0005\n", "")))
    assert edit.options == {"learning_rate": None} and not edit.restart
    assert not job_edit(_spec(base), _spec(base)).live


class Queue(Hooks):
    """Hands the driver the requests queued for each step; keeps every step's stats and the
    answers."""

    def __init__(self) -> None:
        self.queued: list[Request] = []
        self.answers: list[str] = []
        self.steps: list[StepStats] = []

    def requests(self) -> Iterable[Request]:
        asked, self.queued = self.queued, []
        return asked

    def request_done(self, request: Request, result: str) -> None:
        self.answers.append(result)

    def stepped(self, stats: StepStats) -> None:
        self.steps.append(stats)


def test_the_driver_takes_a_retune_at_the_next_step(faces: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    trainer = make_trainer(faces, tmp_path / "model", focus_weight=2)
    hooks = Queue()
    driver = Driver(trainer, Cadence(preview=tmp_path / "p.png", iterations=0, save_every=4),
                    hooks)
    try:
        for _ in range(3):
            driver.step()
        assert hooks.steps[-1].learning_rate == 1e-3
        trainer.set_a.set_focus({"a_000.png"}, trainer.options.focus_weight)
        assert driver.act(Request("retune", {
            "cadence": {"save_every": 2, "export_on": ["done"]},
            "options": {"learning_rate": 2e-4, "focus_weight": 6}})) == (
            "from iteration 3: save_every = 2, export_on = [done], learning_rate = 0.0002, "
            "focus_weight = 6")
        driver.step()
        assert hooks.steps[-1].learning_rate == 2e-4  # the very next step
        assert driver.cadence.save_every == 2 and driver.cadence.export_on == {"done"}
        assert trainer.set_a.focus_weight == 6 and trainer.set_a.focus == {"a_000.png"}
        assert driver.saved_iteration == 4  # saved at 4, under the new cadence
        # a bad value changes nothing
        assert driver.act(Request("retune", {"options": {"learning_rate": -1}})).startswith(
            "not changed: learning_rate: Input should be greater than 0")
        assert trainer.options.learning_rate == 2e-4
        # a target below the current iteration: the session ends at once, saved, "done"
        hooks.queued = [Request("retune", {"cadence": {"iterations": 2}})]
        outcome = driver.train()
        assert hooks.answers[-1].endswith("(the target is reached: it ends at iteration 4)")
        assert (outcome.end, outcome.saved, trainer.iteration) == ("done", 4, 4)
    finally:
        trainer.close()


# -- a real service ----------------------------------------------------------------------------

def _states(store: StateStore, name: str, seconds: float) -> set[str]:
    """The job's states seen over ``seconds``, looked at every 50 ms."""
    seen, end = set(), time.monotonic() + seconds
    while time.monotonic() < end:
        row = store.job(name)
        seen.add(row.state if row else "(none)")
        time.sleep(0.05)
    return seen


def _answer(store: StateStore, name: str, action: str, timeout: float = 60) -> str:
    def done() -> str | None:
        asked = [r for r in store.control_requests(name) if r.action == action]
        return asked[0].result if asked and asked[0].done_at else None
    return str(wait_for(done, timeout, f"the worker's answer to {action}"))


def test_edits_while_the_service_trains(service, synthetic_sets, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    svc = start_with_face_sets(service, synthetic_sets, ws)
    job = ws / "jobs" / "tiny.toml"
    text = TINY_JOB.format(iterations=100_000, save_every=20)
    job.write_text(text)
    store = StateStore(ws / ".swapd" / "state.db", readonly=True)

    def iteration() -> int:
        row = store.job("tiny")
        return row.iteration if row else 0

    def events() -> list[str]:
        return [m for _, _, _, m in store.events(500)]

    wait_for(lambda: iteration() >= 25, 240, "training to pass iteration 25", svc.process)

    # 1. live: a new learning rate and save cadence, from the next step, the worker unmoved
    text = text.replace("learning_rate = 0.0005", "learning_rate = 0.0002").replace(
        "save_every = 20", "save_every = 7")
    job.write_text(text)
    assert _states(store, "tiny", 3.0) == {"training"}
    answer = _answer(store, "tiny", "retune")
    taken = int(answer.split(":")[0].removeprefix("from iteration "))
    assert answer.endswith("save_every = 7, learning_rate = 0.0002"), answer
    rows = wait_for(lambda: [r for r in store.loss_rows("tiny", since=taken)], 60,
                    "steps after the edit", svc.process)
    assert {r.learning_rate for r in rows} == {0.0002}
    assert {r.learning_rate for r in store.loss_rows("tiny", since=taken - 5, limit=5)} == {
        0.0005}
    assert any("tiny.toml changed (save_every, learning_rate): applied from the next step"
               in m for m in events())

    # 2. a bad edit: the running version goes on, the state says why, the problem is listed
    at = iteration()
    job.write_text(text.replace("batch_size = 4", "batch_size = 0"))
    row = wait_for(lambda: (r := store.job("tiny")) and r.error and r, 30, "the bad edit")
    assert row.state == "training" and "train.batch_size" in row.error
    assert "training goes on with the file's last valid version" in row.error
    assert any(p.key == "train.batch_size" for p in store.problems())
    wait_for(lambda: iteration() > at + 10, 60, "training to go on", svc.process)
    job.write_text(text)  # put back: the error goes, nothing restarts
    wait_for(lambda: not store.job("tiny").error, 30, "the error to clear")
    assert not [p for p in store.problems() if p.kind == "job"]

    # 3. a change built into the data: saved, then a new worker with the new batch size
    starts = sum("training from iteration" in m for m in events())
    text = text.replace("batch_size = 4", "batch_size = 2")
    job.write_text(text)
    seen: set[str] = set()

    def restarted() -> bool:
        seen.add(store.job("tiny").state)
        return sum("training from iteration" in m for m in events()) > starts
    wait_for(restarted, 120, "the worker to start again", svc.process, poll=0.05)
    assert seen <= {"training", "stopped", "interrupted", "queued"}  # (between the workers)
    assert "batch_size" in next(m for m in events() if "saves and starts again" in m)
    saved = int(next(m for m in events() if m.startswith("training from iteration")).split()[-1])
    assert saved >= at + 10  # from its checkpoint, saved at the stop
    wait_for(lambda: store.job("tiny").state == "training", 60, "training", svc.process)

    # 4. pause, then touch the file: it stays paused, its iteration stands still
    wait_for(lambda: iteration() > saved, 60, "steps after the restart", svc.process)
    from swapd.state import StateStore as Writer
    writer = Writer(ws / ".swapd" / "state.db")
    writer.request_control("tiny", "pause")
    wait_for(lambda: store.job("tiny").state == "paused", 60, "the pause", svc.process)
    paused_at = iteration()
    job.touch()
    job.write_text(text)  # saved unchanged
    assert _states(store, "tiny", 3.0) == {"paused"}
    assert iteration() == paused_at
    writer.request_control("tiny", "resume")
    wait_for(lambda: iteration() > paused_at + 3, 60, "training after the resume", svc.process)

    # 5. the target lowered below the current iteration: done at once, saved there
    job.write_text(text.replace("iterations = 100000", f"iterations = {paused_at}"))
    row = wait_for(lambda: (r := store.job("tiny")) and r.state == "done" and r, 60,
                   "the job to end", svc.process)
    assert row.iteration > paused_at
    assert f"done at iteration {row.iteration}" in events()
    assert store.latest_artifact("tiny", "checkpoint").iteration == row.iteration
    writer.close()
    store.close()
    code, _ = svc.terminate()
    assert code == 0


def test_a_service_killed_under_its_worker_trains_on_when_started_again(
        service, synthetic_sets, tmp_path: Path) -> None:
    """SIGKILL of the service alone: its worker sees it gone, saves and stops as
    "interrupted" (not "stopped", the user's stop, which a new service would leave alone), and
    the next service trains on; a paused job stays paused through the same."""
    import os
    import signal

    ws = tmp_path / "ws"
    svc = start_with_face_sets(service, synthetic_sets, ws)
    (ws / "jobs" / "tiny.toml").write_text(TINY_JOB.format(iterations=0, save_every=20))
    store = StateStore(ws / ".swapd" / "state.db")

    def kill_the_service_alone(svc) -> str:
        os.kill(svc.process.pid, signal.SIGKILL)
        svc.process.wait()
        # (the worker's last act is its state: a service started before it exits finds the
        # model folder held, and tries again)
        row = wait_for(lambda: (r := store.job("tiny")) and r.state not in ("training",) and r,
                       60, "the orphaned worker to stop")
        return row.state

    wait_for(lambda: (r := store.job("tiny")) and r.iteration > 5, 240, "training",
             svc.process)
    assert kill_the_service_alone(svc) == "interrupted"
    at = store.job("tiny").iteration
    svc = service()
    wait_for(lambda: store.job("tiny").iteration > at, 120, "training again", svc.process)

    store.request_control("tiny", "pause")
    wait_for(lambda: store.job("tiny").state == "paused", 60, "the pause", svc.process)
    assert kill_the_service_alone(svc) == "paused"
    svc = service()
    assert _states(store, "tiny", 5.0) == {"paused"}
    store.close()
    code, _ = svc.terminate()
    assert code == 0


def test_reading_a_job_file_keeps_the_state_the_user_or_the_worker_gave(tmp_path: Path
                                                                       ) -> None:
    """The registry alone (no service): a new version of a file leaves a paused, stopped or
    training job as it is, queues a job in error or a done one given more iterations, and an
    unchanged file read again changes nothing."""
    from swapd.daemon.jobs import JobRegistry
    from swapd.workspace import Workspace
    from tests.support import write_faces

    ws = Workspace.open(tmp_path / "ws")
    write_faces(ws.faces / "alice", "a", 2)
    write_faces(ws.faces / "bob", "b", 2)
    store = StateStore(ws.state_db)
    registry = JobRegistry(ws, store)
    job = ws.jobs / "tiny.toml"
    text = TINY_JOB.format(iterations=100, save_every=20)
    job.write_text(text)
    registry.scan()
    assert store.job("tiny").state == "queued"

    def edited(state: str, new_text: str, iteration: int = 50) -> str:
        store.set_job_state("tiny", state)
        store.set_job_progress("tiny", iteration)
        job.write_text(new_text)
        os.utime(job, ns=(time.time_ns(), time.time_ns() + 10**9))  # (a new stamp for sure)
        registry.scan()
        return store.job("tiny").state

    lower = text.replace("learning_rate = 0.0005", "learning_rate = 0.0001")
    for state in ("paused", "stopped", "training", "waiting", "queued"):
        assert edited(state, lower) == state
        assert edited(state, text) == state
    assert edited("error", text) == "queued"  # a touch tries a job in error again
    assert edited("done", text, iteration=100) == "done"  # touched
    assert edited("done", lower, iteration=100) == "done"  # nothing more to train
    assert edited("done", text.replace("iterations = 100", "iterations = 200"),
                  iteration=100) == "queued"
    store.close()

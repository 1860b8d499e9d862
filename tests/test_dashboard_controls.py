"""Controls asked through the dashboard reach the model: answered by the service for a job
without a worker, taken by the real worker between iterations for one that trains."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from swapd.daemon.idle_controls import answer_idle_controls
from swapd.dashboard.server import DashboardServer
from swapd.state import StateStore
from swapd.trainer.checkpoint import load_checkpoint
from swapd.workspace import Workspace
from tests.browser import choose, chrome, click, wait, wait_text
from tests.dashboard_support import TRACKED_JOB, TrainedWorkspace
from tests.support import ServiceProcess, wait_for


def test_the_service_answers_requests_for_a_job_without_a_worker(
        trained_ws: TrainedWorkspace, tmp_path: Path) -> None:
    copy = trained_ws.copy(tmp_path / "ws")
    ws = copy.workspace
    store = StateStore(ws.state_db)
    try:
        store.set_job_state("tiny", "queued")
        pause = store.request_control("tiny", "pause")
        answer_idle_controls(ws, store, busy=set())
        assert store.job("tiny").state == "paused"
        assert "will not start until resumed" in store.control_request(pause).result
        resume = store.request_control("tiny", "resume")
        save = store.request_control("tiny", "save")
        answer_idle_controls(ws, store, busy={"tiny"})  # a worker runs: its requests wait
        assert store.control_request(resume).taken_at is None
        answer_idle_controls(ws, store, busy=set())
        assert store.job("tiny").state == "queued"
        assert store.control_request(resume).result == "queued to train"
        assert "nothing new to save" in store.control_request(save).result

        # a restore runs aside (it loads checkpoints) and records what it did
        assert load_checkpoint(ws.model_dir("tiny") / "model.pt")["iteration"] == 12
        restore = store.request_control("tiny", "restore", {"snapshot": 8})
        answer_idle_controls(ws, store, busy=set())
        wait_for(lambda: store.control_request(restore).result, 120, "the restore's result")
        result = store.control_request(restore).result
        assert "restored the snapshot at iteration 8" in result, result
        assert load_checkpoint(ws.model_dir("tiny") / "model.pt")["iteration"] == 8
        assert len(list((ws.model_dir("tiny") / "replaced").glob("model-12-*.pt"))) == 1
        assert [(m.kind, m.iteration, m.info) for m in store.marks("tiny")] == [
            ("restore", 8, {"what": "snapshot 8"})]
        assert max(row[0] for row in store.losses("tiny")) == 8
        assert store.job("tiny").iteration == 8
        assert sorted({s["iteration"] for s in store.tracker_snapshots("tiny")}) == [4, 8]

        missing = store.request_control("tiny", "restore", {"snapshot": 12})  # set aside now
        answer_idle_controls(ws, store, busy=set())
        wait_for(lambda: store.control_request(missing).result, 120, "the refusal")
        assert store.control_request(missing).result.startswith("not restored:")
        assert load_checkpoint(ws.model_dir("tiny") / "model.pt")["iteration"] == 8
    finally:
        store.close()


def test_focus_faces_are_drawn_focus_weight_times_as_often(tmp_path: Path) -> None:
    from swapd.trainer.data import FaceSet
    from tests.support import write_faces

    write_faces(tmp_path / "faces", "a", 48, seed=3)
    face_set = FaceSet(tmp_path / "faces", 32)
    names = [p.name for p in face_set.paths]
    focus = set(names[::8])  # 6 of 48

    def draws(rounds: int = 20_000) -> np.ndarray:
        rng = np.random.default_rng(1)
        counts = np.zeros(len(names))
        for _ in range(rounds):  # batches of 4, as a trainer draws them
            counts[face_set.draw(rng, 4, face_set.arrays)] += 1
        return counts

    chosen = np.array([name in focus for name in names])
    reference = draws(2_000)
    before = draws()
    face_set.set_focus(focus, 3.0)
    after = draws()
    share_before, share_after = before[chosen].sum() / 80_000, after[chosen].sum() / 80_000
    assert share_before == pytest.approx(6 / 48, rel=0.05)
    # per draw a focus face is 3x as likely (a batch of 4 holds each face once: a little less)
    ratio = after[chosen].mean() / after[~chosen].mean()
    assert 2.6 < ratio < 3.1, ratio
    assert share_after == pytest.approx(3 * 6 / (3 * 6 + 42), rel=0.06)
    face_set.set_focus(set(), 3.0)  # unmarked: even again, drawn exactly as before
    assert not face_set.arrays.weighted
    assert np.array_equal(draws(2_000), reference)


def test_the_worker_takes_snapshot_restore_focus_and_records_its_run(
        trained_ws: TrainedWorkspace, tmp_path: Path) -> None:
    from swapd.config import load_job_file
    from swapd.daemon.train_worker import TrainingRun

    copy = trained_ws.copy(tmp_path / "ws")
    ws = copy.workspace
    job_path = ws.jobs / "tiny.toml"
    job_path.write_text(job_path.read_text().replace(
        "[train.options]\n", "[train.options]\npreview_history = 2\nfocus_weight = 4\n"))
    store = StateStore(ws.state_db)
    store.upsert_job("tiny", str(job_path), "train", "training",
                     config=load_job_file(job_path).model_dump())
    store.set_focus("tiny", "a", ["nobody.png", sorted(p.name for p in
                                                       ws.face_set("alice").iterdir())[0]], True)
    run = TrainingRun(ws, "tiny", load_job_file(job_path), store)
    try:
        run.hooks.starting()
        assert len(run.trainer.set_a.focus) == 2 and run.trainer.set_a.arrays.weighted
        assert run.trainer.set_a.focus_weight == 4 and not run.trainer.set_b.focus
        for _ in range(8):  # saves at 16 and 20: two previews kept in the history
            run.driver.step()
        asked = [store.request_control("tiny", "snapshot"),
                 store.request_control("tiny", "restore", {"snapshot": 8}),
                 store.request_control("tiny", "focus", {"side": "a"}),
                 store.request_control("tiny", "stop")]
        store.set_focus("tiny", "a", ["nobody.png"], False)
        assert run.driver.train().end == "stopped"
    finally:
        run.close()
    results = [store.control_request(i).result for i in asked]
    assert results[0] == "snapshot at iteration 20"
    assert results[1].startswith("restored the snapshot at iteration 8; the checkpoint it "
                                 "replaced is kept as replaced/model-20-")
    assert results[2] == "focus: 1 faces of A, 0 of B drawn 4x as often"
    assert results[3].startswith("stopping at iteration 8")
    assert all(store.control_request(i).taken_at for i in asked)
    assert load_checkpoint(ws.model_dir("tiny") / "model.pt")["iteration"] == 8
    assert [(m.kind, m.iteration) for m in store.marks("tiny")] == [("restore", 8)]
    assert sorted({s["iteration"] for s in store.tracker_snapshots("tiny")}) == [4, 8]
    assert max(row[0] for row in store.losses("tiny", max_points=10_000)) == 8

    # what the dashboard reads of the run: the model, the sessions, the steps' rate and speed
    info = store.job("tiny").info
    assert info["parameters"] > 10_000 and info["model_options"]["input_size"] == 32
    sessions = store.sessions("tiny")
    # the run before, from its checkpoint; this one: from 12, 8 steps, back to 8 at the end
    assert [(s.start_iteration, s.end_iteration, s.steps) for s in sessions] == [
        (0, 12, 12), (12, 8, 8)]
    assert sessions[-1].egs and sessions[-1].examples == 8 * 2 * 4
    rows = store.loss_rows("tiny")
    assert all(r.learning_rate == pytest.approx(5e-4) and r.egs > 0 for r in rows[-8:])
    history = sorted((ws.previews_dir("tiny") / "history").glob("*.webp"))
    assert [p.stem for p in history] == ["00000016", "00000020"]
    assert store.latest_artifact("tiny", "preview").path == str(history[-1])
    store.close()


@pytest.mark.browser
def test_pause_resume_and_restore_a_real_worker_from_the_page(
        service: Callable[[], ServiceProcess], synthetic_sets: dict[str, Path],
        tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    for name in ("alice", "bob"):
        shutil.copytree(synthetic_sets[name], ws / "faces" / name)
    (ws / "jobs").mkdir(parents=True)
    (ws / "jobs" / "tiny.toml").write_text(TRACKED_JOB.format(snapshot_every=4))
    svc = service()
    store = StateStore(wait_for(lambda: (ws / ".swapd" / "state.db").is_file() and ws / ".swapd"
                                / "state.db", 60, "the state database", svc.process))

    def iteration() -> int:
        row = store.job("tiny")
        return row.iteration if row is not None else 0

    wait_for(lambda: iteration() >= 8 and (ws / "models/tiny/backup/backup.json").is_file(),
             240, "training with a backup", svc.process)
    driver = chrome(tmp_path)
    try:
        with DashboardServer(Workspace.open(ws, create=False), port=0,
                             refresh_ms=700) as server:
            driver.get(f"{server.url}jobs/tiny")
            wait_text(driver, "#job-header", "training")
            click(driver, "#control-pause")
            wait_for(lambda: store.job("tiny").state == "paused", 60, "the worker to pause")
            held = iteration()
            time.sleep(3)
            assert iteration() == held  # the real worker stands still
            wait_text(driver, "#control-log-table", "pause", f"paused at iteration {held}")
            wait_text(driver, "#job-header", "paused")

            # restore while paused (no save moves the backup meanwhile), then go on
            backup = json.loads((ws / "models/tiny/backup/backup.json").read_text())
            choose(driver, "#restore-target", "backup")
            click(driver, "#control-restore")
            WebDriverWait(driver, 10).until(expected_conditions.alert_is_present())
            alert = driver.switch_to.alert
            assert f"with the backup from iteration {backup['iteration']}" in alert.text
            assert "is kept in models/tiny/replaced/" in alert.text
            alert.accept()
            wait_text(driver, "#control-log-table", "restore backup", "restored the backup at "
                      f"iteration {backup['iteration']}", timeout=120)
            assert iteration() == backup["iteration"]
            assert load_checkpoint(ws / "models/tiny/model.pt")["iteration"] == \
                backup["iteration"]

            click(driver, "#control-resume")
            wait_for(lambda: iteration() > backup["iteration"] + 2, 120, "training to go on",
                     svc.process)
            wait_text(driver, "#control-log-table", "resume", "training from iteration")
            marks = store.marks("tiny")
            assert [(m.kind, m.iteration) for m in marks][-1] == ("restore", backup["iteration"])
            assert list((ws / "models/tiny/replaced").glob("model-*.pt"))
            graph = "document.querySelector('#loss-graph .js-plotly-plot')"
            wait(driver, f"!!({graph} && {graph}.layout.shapes.length >= 1)",
                 "the restore marked on the graph")
    finally:
        driver.quit()
        store.close()
    code, _ = svc.terminate()
    assert code == 0

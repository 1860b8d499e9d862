"""Controls asked through the dashboard reach the model: answered by the service for a job
without a worker, taken by the real worker between iterations for one that trains."""

from __future__ import annotations

from pathlib import Path

from swapd.daemon.idle_controls import answer_idle_controls
from swapd.state import StateStore
from swapd.trainer.checkpoint import load_checkpoint
from tests.dashboard_support import TrainedWorkspace
from tests.support import wait_for


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

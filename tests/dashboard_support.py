"""A workspace as the dashboard finds it after real training: two indexed face sets (the demo
identities, with poses), a tiny job trained by the service's own worker code with snapshots and
tracker data, its previews, backup and export."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from swapd.config import load_job_file
from swapd.state import StateStore
from swapd.workspace import Workspace

JOB = "tiny"
SNAPSHOT_EVERY = 4
ITERATIONS = 12  # snapshots at 4, 8, 12

TRACKED_JOB = """\
[train]
a = "faces/alice"
b = "faces/bob"
model = "lightweight"
batch_size = 4
iterations = 400
save_every = 4
snapshot_every = {snapshot_every}

[train.options]
input_size = 32
width = 0.125
dense_dim = 32
learning_rate = 0.0005
coverage = 0.7

[export]
on = ["save", "done"]
"""


@dataclass(frozen=True)
class TrainedWorkspace:
    root: Path
    job: str
    snapshots: list[int]
    faces_per_side: int

    @property
    def workspace(self) -> Workspace:
        return Workspace.open(self.root, create=False)

    def copy(self, to: Path) -> TrainedWorkspace:
        """A copy to change (controls, focus) without touching the shared one."""
        shutil.copytree(self.root, to, symlinks=True)
        return TrainedWorkspace(to, self.job, self.snapshots, self.faces_per_side)


def make_trained_workspace(root: Path, sets: dict[str, Path],
                           iterations: int = ITERATIONS) -> TrainedWorkspace:
    """Index ``sets`` (alice, bob) and train JOB for ``iterations`` with the worker's own
    TrainingRun, a snapshot every SNAPSHOT_EVERY."""
    from swapd.daemon.ingest import FaceIngest
    from swapd.daemon.train_worker import TrainingRun

    ws = Workspace.open(root)
    for name in ("alice", "bob"):
        shutil.copytree(sets[name], ws.face_set(name))
    store = StateStore(ws.state_db)
    try:
        FaceIngest(ws, store, min_size=64, settle_seconds=0).scan()
        job_path = ws.jobs / f"{JOB}.toml"
        job_path.write_text(TRACKED_JOB.format(snapshot_every=SNAPSHOT_EVERY))
        spec = load_job_file(job_path)
        store.upsert_job(JOB, str(job_path), "train", "training", model="lightweight",
                         target=400, config=spec.model_dump())
        run = TrainingRun(ws, JOB, spec, store)
        try:
            for _ in range(iterations):
                run.driver.step()
            run.hooks.flush()
        finally:
            run.close()
        store.set_job_state(JOB, "stopped")
        faces = len(list(sets["alice"].glob("*.png")))
    finally:
        store.close()
    return TrainedWorkspace(root, JOB, list(range(SNAPSHOT_EVERY, iterations + 1,
                                                  SNAPSHOT_EVERY)), faces)

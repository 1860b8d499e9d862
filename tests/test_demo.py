"""The demo workspace: synthetic faces, a valid job, a clip with audio; re-running keeps it."""

from __future__ import annotations

from pathlib import Path

import torch

from swapd.config import JobFile, load_job_file
from swapd.daemon.jobs import validate_job
from swapd.demo import DEMO_JOB, PRETRAINED_IN_PACKAGE, create_demo_workspace
from swapd.demo_pretrain import pretrain
from swapd.faces.validate import inspect_face_file
from swapd.media import probe_media
from swapd.trainer.checkpoint import load_checkpoint
from swapd.trainer.loop import Trainer
from swapd.trainer.options import split_options
from swapd.workspace import Workspace


def demo_trainer(ws: Workspace, job: JobFile, start_from: Path | None) -> Trainer:
    """The demo job's Trainer, as the worker builds it."""
    assert job.train is not None
    trainer_options, model_options = split_options(job.train.model, job.train.options)
    return Trainer(job.train.model, model_options.model_dump(), trainer_options,
                   ws.resolve(job.train.a), ws.resolve(job.train.b), ws.model_dir(DEMO_JOB),
                   job.train.batch_size, iterations_target=job.train.iterations,
                   start_from=start_from)


def test_demo_workspace_is_complete_and_valid(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "demo")
    create_demo_workspace(ws, faces_per_set=12)
    for name in ("demo_a", "demo_b"):
        faces = sorted(ws.face_set(name).glob("*.png"))
        assert len(faces) == 12
        info = inspect_face_file(faces[0])
        assert info.width == info.height == 256 and info.meta is not None
    job_path = ws.jobs / f"{DEMO_JOB}.toml"
    job = load_job_file(job_path)
    validate_job(ws, job, "jobs/demo.toml")  # raises if the demo's own job were wrong
    assert job.merge is not None and ws.resolve(job.merge.footage).is_dir()
    clip = ws.footage / DEMO_JOB / "demo_clip.mp4"
    kinds = sorted(s["codec_type"] for s in probe_media(clip)["streams"])
    assert kinds == ["audio", "video"]
    assert list(ws.cache.iterdir()) == []  # no staging leftovers

    # A second run keeps what is there (training resumes on the same faces and job).
    job_path.write_text(job_path.read_text() + "\n# edited by the user\n")
    stamp = clip.stat().st_mtime_ns
    create_demo_workspace(ws, faces_per_set=12)
    assert "# edited by the user" in job_path.read_text()
    assert clip.stat().st_mtime_ns == stamp
    create_demo_workspace(ws, fresh=True, faces_per_set=12)
    assert "# edited by the user" not in job_path.read_text()


def test_the_demo_starts_from_the_shipped_pretrained_model(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "demo")
    create_demo_workspace(ws, faces_per_set=12)
    job = load_job_file(ws.jobs / f"{DEMO_JOB}.toml")
    assert job.train is not None and job.train.start_from == "pretrained/demo.pt"
    copy = ws.resolve(job.train.start_from)
    assert copy.read_bytes() == PRETRAINED_IN_PACKAGE.read_bytes()
    shipped = load_checkpoint(copy)
    assert "synthetic" in shipped["pretrained"]["what"]
    # The shipped weights fit the demo's model: a change to the demo's model options must come
    # with new weights (python -m swapd.demo_pretrain).
    with demo_trainer(ws, job, copy) as trainer:
        assert trainer.iteration == 0 and trainer.started_from is not None
        state = trainer.model.state_dict()
        for name, tensor in shipped["model_state"].items():
            assert torch.equal(state[name], tensor.float()), name

    # A kept job whose copy was deleted gets it back; --fresh removes the demo's copy only.
    copy.unlink()
    create_demo_workspace(ws, faces_per_set=12)
    assert copy.read_bytes() == PRETRAINED_IN_PACKAGE.read_bytes()
    users = copy.with_name("mine.pt")
    users.write_bytes(b"a user's own pretrained model")
    create_demo_workspace(ws, fresh=True, faces_per_set=12, pretrained=False)
    job = load_job_file(ws.jobs / f"{DEMO_JOB}.toml")
    assert job.train is not None and job.train.start_from is None
    assert not copy.exists() and users.exists()


def test_demo_pretraining_writes_half_precision_weights_of_the_demo_model(
        tmp_path: Path) -> None:
    out = pretrain(tmp_path / "start.pt", identities=2, faces_per_identity=4, iterations=2,
                   show_progress=False, preview=tmp_path / "preview.png")
    state = load_checkpoint(out)
    assert state["iteration"] == 0 and "optimizer_state" not in state
    assert {t.dtype for t in state["model_state"].values()} == {torch.float16}
    note = state["pretrained"]
    assert (note["identities"], note["faces_per_identity"], note["iterations"]) == (2, 4, 2)
    assert (tmp_path / "preview.png").stat().st_size > 0
    ws = Workspace.open(tmp_path / "demo")
    create_demo_workspace(ws, faces_per_set=12, pretrained=False)
    with demo_trainer(ws, load_job_file(ws.jobs / f"{DEMO_JOB}.toml"), out) as trainer:
        assert trainer.started_from is not None
        assert trainer.started_from["pretrained"]["identities"] == 2
        trainer.step()  # half-precision weights load into a float32 model that trains

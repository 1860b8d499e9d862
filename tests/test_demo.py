"""The demo workspace: synthetic faces, a valid job, a clip with audio; re-running keeps it."""

from __future__ import annotations

from pathlib import Path

from swapd.config import load_job_file
from swapd.daemon.jobs import validate_job
from swapd.demo.workspace import DEMO_JOB, create_demo_workspace
from swapd.faces.validate import inspect_face_file
from swapd.media import probe_media
from swapd.workspace import Workspace


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

"""End to end: `swapd run` as a real process on a temp workspace.

Faces and a job are dropped in, training starts, a checkpoint and an ONNX export appear, a clip
dropped into footage/ is merged (video + audio of the source's duration, provenance mark found by
`swapd verify`), SIGTERM exits 0 with a loadable checkpoint, and a restart resumes from it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swapd.media import probe_media
from swapd.state import StateStore
from swapd.trainer.checkpoint import load_checkpoint
from tests.support import TINY_JOB, start_with_face_sets, wait_for


def _store(ws: Path) -> StateStore:
    return StateStore(ws / ".swapd" / "state.db", readonly=True)


def _duration(info: dict, kind: str) -> float:
    stream = next(s for s in info["streams"] if s["codec_type"] == kind)
    return float(stream.get("duration") or info["format"]["duration"])


def test_service_trains_exports_merges_and_resumes(service, synthetic_sets, synthetic_clip,
                                                   tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    svc = start_with_face_sets(service, synthetic_sets, ws)
    (ws / "jobs" / "tiny.toml").write_text(TINY_JOB.format(iterations=0, save_every=20))

    model = ws / "models" / "tiny" / "model.pt"
    export = ws / "models" / "tiny" / "exports" / "a_to_b.onnx"
    wait_for(model.exists, 180, "the first checkpoint", svc.process)
    wait_for(export.exists, 120, "the first ONNX export", svc.process)
    assert (ws / "models" / "tiny" / "previews" / "latest.png").exists()
    status = json.loads((ws / "jobs" / "tiny.status.json").read_text())
    assert status["state"] == "training"

    footage = ws / "footage" / "tiny"
    footage.mkdir(parents=True, exist_ok=True)
    shutil.copy(synthetic_clip, footage / "clip.mp4")

    store = _store(ws)

    def merged() -> Path | None:
        artifact = store.latest_artifact("tiny", "merge")
        return Path(artifact.path) if artifact else None

    output = wait_for(merged, 240, "the merged clip", svc.process)
    assert isinstance(output, Path) and output.parent == ws / "output" / "tiny"
    assert not [p for p in output.parent.iterdir() if p != output], "temp files left behind"
    source_info, merged_info = probe_media(synthetic_clip), probe_media(output)
    kinds = sorted(s["codec_type"] for s in merged_info["streams"])
    assert kinds == ["audio", "video"]
    for kind in ("video", "audio"):
        assert abs(_duration(merged_info, kind) - _duration(source_info, kind)) < 0.15, kind

    verify = subprocess.run([sys.executable, "-m", "swapd", "verify", str(output), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    evidence = json.loads(verify.stdout)
    assert evidence["marked"] is True
    assert evidence["metadata_tag"] is True
    # each mark on its own: "marked" is true with the tag alone
    watermark = evidence["watermark"]
    assert watermark["marked"] is True, watermark
    assert watermark["score"] >= watermark["threshold"] and watermark["frames_checked"] > 0

    # SIGTERM: the worker saves, everything exits 0 within 30 s, the checkpoint loads.
    code, seconds = svc.terminate(timeout=30)
    assert code == 0, svc.log()[-3000:]
    assert seconds < 30
    saved = load_checkpoint(model)
    saved_iteration = int(saved["iteration"])
    assert saved_iteration >= 20
    assert store.job("tiny").iteration == saved_iteration
    store.close()

    # A restart resumes from that iteration: the new worker's first loss comes after it.
    again = service()
    store = _store(ws)

    def resumed() -> bool:
        losses = store.losses("tiny", max_points=100_000)
        return any(it > saved_iteration for it, _, _ in losses)

    wait_for(resumed, 180, "training to resume", again.process)
    log = (ws / ".swapd" / "logs" / "tiny.train.log").read_text()
    assert f"training from iteration {saved_iteration}" in "\n".join(
        m for _, _, _, m in store.events(200)), log[-2000:]
    store.close()
    code, _ = again.terminate(timeout=30)
    assert code == 0


def test_bad_input_is_set_aside_and_the_valid_job_trains(service, synthetic_sets,
                                                         tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    svc = start_with_face_sets(service, synthetic_sets, ws)
    good = next((ws / "faces" / "alice").glob("*.png")).read_bytes()
    bad_files = {
        "corrupt.png": good[: len(good) // 2],  # truncated mid-stream
        "empty.png": b"",
        "notes.png": b"these are my notes, not an image\n",
    }
    for name, data in bad_files.items():
        (ws / "faces" / "bob" / name).write_bytes(data)
    (ws / "jobs" / "typo.toml").write_text(
        TINY_JOB.format(iterations=40, save_every=20).replace("batch_size", "batch_sise"))
    (ws / "jobs" / "tiny.toml").write_text(TINY_JOB.format(iterations=40, save_every=20))
    (ws / "footage" / "tiny").mkdir(parents=True)
    (ws / "footage" / "tiny" / "holiday.mp4").write_bytes(b"not a video, just text\n")

    store = _store(ws)

    def quarantined() -> bool:
        sources = {Path(p.source).name for p in store.problems() if p.kind == "face"}
        return set(bad_files) <= sources

    wait_for(quarantined, 60, "the bad faces to be set aside", svc.process)
    for name in bad_files:
        assert not (ws / "faces" / "bob" / name).exists()
        moved = ws / ".swapd" / "quarantine" / "bob" / name
        assert moved.exists(), f"{name} was not moved to quarantine"
        note = moved.with_name(name + ".reason.txt").read_text()
        problem = next(p for p in store.problems() if Path(p.source).name == name)
        assert problem.message.startswith(f"faces/bob/{name}: ")
        assert problem.message.split(": ", 1)[1] in note
        assert problem.moved_to == f".swapd/quarantine/bob/{name}"
    problems = wait_for(lambda: {Path(p.source).name: p for p in store.problems()
                                 if p.kind == "job"}, 30, "the typo's problem record")
    typo = problems["typo.toml"]
    assert typo.key == "train.batch_sise"
    assert "unknown key" in typo.message and "batch_size" in typo.message
    assert store.job("typo").state == "error"
    wait_for(lambda: (ws / "jobs" / "typo.status.json").exists(), 10, "typo's status file")
    status = json.loads((ws / "jobs" / "typo.status.json").read_text())
    assert status["state"] == "error" and "batch_sise" in status["error"]

    # The valid job trains to its target regardless, and the service is still up.
    wait_for(lambda: store.job("tiny") and store.job("tiny").state == "done", 240,
             "the valid job to finish", svc.process)
    # Its export is merged with the footage: the broken clip is set aside, named, not retried.
    footage = wait_for(lambda: [p for p in store.problems() if p.kind == "footage"], 120,
                       "the broken footage to be set aside", svc.process)
    assert footage[0].message.startswith("footage/tiny/holiday.mp4: ")
    assert footage[0].moved_to == ".swapd/quarantine/footage/tiny/holiday.mp4"
    assert (ws / footage[0].moved_to).exists()
    assert not (ws / "footage" / "tiny" / "holiday.mp4").exists()
    assert svc.process.poll() is None
    store.close()
    code, _ = svc.terminate()
    assert code == 0


@pytest.mark.parametrize("payload", [b"", b"not a video at all\n"])
def test_verify_exit_codes_for_unreadable_files(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(payload)
    result = subprocess.run([sys.executable, "-m", "swapd", "verify", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "broken.mp4" in result.stderr


def test_verify_unmarked_clip_is_not_marked(synthetic_clip: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "swapd", "verify", str(synthetic_clip)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not marked" in result.stdout

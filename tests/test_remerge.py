"""Re-merging (``[merge] remerge``): footage already merged is merged again when a newer
export appears, beside the old output, with the model's iteration in its name.

The service test runs ``swapd run`` for real (its merge workers, MTCNN, onnxruntime, ffmpeg,
the SQLite state store); the test plays the trainer's part the way train_worker.py's
``export`` does it: it replaces ``models/<job>/exports/a_to_b.onnx`` and records an "export"
artifact with the iteration.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest

from swapd.config import MergeSection
from swapd.daemon.merges import MergeQueue
from swapd.merger.provenance import verify_file
from swapd.state import StateStore
from swapd.workspace import Workspace
from tests.support import ServiceProcess, require_tools, wait_for
from tests.test_merger import export_model


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("remerge", "state", "iteration", "merged_with", "due"), [
    ("never", "done", 200, 100, False),
    ("on_export", "training", 200, 100, True),
    ("on_export", "training", 100, 100, False),  # the same export: nothing new
    ("on_export", "training", None, -1, False),  # a model from elsewhere: no iteration
    ("on_done", "training", 200, 100, False),  # only once training is done
    ("on_done", "done", 200, 100, True),
    ("on_done", "done", 200, 200, False),
])
def test_when_a_merge_is_due_again(remerge: str, state: str, iteration: int | None,
                                   merged_with: int, due: bool) -> None:
    merge = MergeSection(footage="f", remerge=remerge)  # type: ignore[arg-type]
    assert MergeQueue._remerge_due(merge, state, iteration, merged_with) is due


def test_a_newer_export_is_merged_again_beside_the_old_output(
        tmp_path: Path, synthetic_clip: Path,
        service: object) -> None:
    require_tools("ffprobe")
    ws = Workspace.open(tmp_path / "ws")
    exports = ws.exports_dir("clip")
    exports.mkdir(parents=True, exist_ok=True)
    model = exports / "a_to_b.onnx"
    export_model(model)
    footage = ws.footage / "clip"
    footage.mkdir(parents=True)
    shutil.copy(synthetic_clip, footage / "take.mp4")
    (ws.jobs / "clip.toml").write_text(
        '[merge]\nfootage = "footage/clip"\nmodel = "models/clip/exports/a_to_b.onnx"\n'
        'remerge = "on_export"\ncodec = "h264"\ncrf = 23\n')
    store = StateStore(ws.state_db)
    store.add_artifact("clip", "export", str(model), 100)  # as train_worker records one

    svc: ServiceProcess = service()  # type: ignore[operator]
    output = ws.output / "clip"
    first = output / "take_swapd.mp4"

    def merges() -> list:
        return store.artifacts("clip", "merge")

    wait_for(lambda: len(merges()) == 1, 180, "the first merge", svc.process)
    assert merges()[0].info["model_iteration"] == 100 and first.is_file()
    before = (digest(first), first.stat().st_mtime_ns)
    time.sleep(1.5)  # a few turns of the loop: the same export is not merged again
    assert len(merges()) == 1

    export_model(model)  # the trainer's next export, then its record
    store.add_artifact("clip", "export", str(model), 200)
    wait_for(lambda: len(merges()) == 2, 180, "the re-merge", svc.process)
    again = output / "take_swapd_200.mp4"
    newest = merges()[0]
    assert newest.path == str(again) and newest.info["model_iteration"] == 200
    assert newest.info["remerge"] is True and again.is_file()
    assert (digest(first), first.stat().st_mtime_ns) == before  # the old output untouched
    assert verify_file(again).marked
    time.sleep(1.5)
    assert len(merges()) == 2  # once per newer export
    assert sorted(p.name for p in output.iterdir()) == ["take_swapd.mp4", "take_swapd_200.mp4"]
    code, _ = svc.terminate()
    assert code == 0
    store.close()


@pytest.mark.slow  # a service of its own (about 20 s)
def test_the_service_merges_an_image_sequence_folder(tmp_path: Path, synthetic_clip: Path,
                                                     service: object) -> None:
    """A folder of frames dropped into the footage folder is merged as one clip, frame names
    kept, in the job's image_format."""
    import cv2

    from swapd.media import probe_video, read_frames

    require_tools("ffprobe")
    ws = Workspace.open(tmp_path / "ws")
    export_model(ws.root / "m.onnx")
    shot = ws.footage / "clip" / "shot"
    shot.mkdir(parents=True)
    for n, frame in enumerate(list(read_frames(probe_video(synthetic_clip)))[:4], start=1):
        cv2.imwrite(str(shot / f"shot_{n:04d}.png"), frame)
    (ws.jobs / "clip.toml").write_text(
        '[merge]\nfootage = "footage/clip"\nmodel = "m.onnx"\nimage_format = "jpeg"\n'
        'frame_ranges = ["2-4"]\n')
    svc: ServiceProcess = service()  # type: ignore[operator]
    store = StateStore(ws.state_db)
    wait_for(lambda: store.artifacts("clip", "merge"), 180, "the sequence's merge",
             svc.process)
    record = store.artifacts("clip", "merge")[0]
    out = ws.output / "clip" / "shot_swapd"
    assert record.path == str(out) and record.info["frames"] == 4
    assert record.info["faces_swapped"] == 3  # frames 2-4 only
    assert sorted(p.name for p in out.iterdir()) == [f"shot_{n:04d}.jpg" for n in range(1, 5)]
    assert all(verify_file(p).metadata_tag for p in out.iterdir())
    svc.terminate()
    store.close()

"""faceswap's alignments file: swapd writes it for a video it extracts (checked against
faceswap's serializer and dataclasses, re-derived in tests/faceswap_reference.py); the merger
replays one as it replays its own record; bad ones are refused in one line, running nothing."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zlib
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.extract.alignments import (
    AlignmentsError,
    RecordedFaces,
    load_alignments,
    read_alignments,
    record_beside,
    video_frame_name,
    video_frame_names,
)
from swapd.extract.extract import extract
from swapd.faces.faceswap_fsa import FsaError, FsaFace, decode_fsa, encode_fsa
from swapd.faces.faceswap_png import read_aligned_png
from swapd.media import probe_video, read_frames
from tests import faceswap_reference as faceswap

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def extracted(synthetic_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fsa") / "faces"
    report = extract(synthetic_clip, out, size=128)
    assert [p.name for p in report.alignments] == [
        f"{synthetic_clip.stem}.alignments.jsonl", f"{synthetic_clip.stem}_alignments.fsa"]
    return out


class _Never:
    """A detector the replay must never need."""

    landmark_points = 5

    def detect(self, frame: np.ndarray) -> list:
        raise AssertionError("searched a frame the record holds")


def test_extraction_writes_faceswaps_alignments_file(extracted: Path,
                                                     synthetic_clip: Path) -> None:
    loaded = faceswap.load_fsa((extracted / "clip_alignments.fsa").read_bytes())
    assert loaded["__meta__"] == {"version": 2.4}
    data = loaded["__data__"]
    assert list(data) == [f"clip_{i:06d}.mp4" for i in range(1, 51)]
    for name, entry in data.items():
        assert entry["video_meta"] == {} and len(entry["faces"]) == 1
        face = entry["faces"][0]
        _, meta = read_aligned_png(extracted / f"{Path(name).stem}_0.png")
        assert meta is not None
        assert (face["x"], face["y"], face["w"], face["h"]) == (meta.x, meta.y, meta.w, meta.h)
        assert np.allclose(face["landmarks_xy"], meta.landmarks_xy)
        thumb = cv2.imdecode(np.asarray(face["thumb"], np.uint8), cv2.IMREAD_COLOR)
        assert thumb.shape == (96, 96, 3)


def test_the_merger_replays_a_fsa(extracted: Path, synthetic_clip: Path,
                                  tmp_path: Path) -> None:
    footage = tmp_path / "footage"
    footage.mkdir()
    (footage / synthetic_clip.name).write_bytes(synthetic_clip.read_bytes())
    (footage / "clip_alignments.fsa").write_bytes(
        (extracted / "clip_alignments.fsa").read_bytes())
    record = record_beside(footage / synthetic_clip.name)
    assert record is not None and record.name == "clip_alignments.fsa"
    frames = load_alignments(record)
    replay = RecordedFaces(frames, partial(video_frame_names, synthetic_clip), _Never())
    jsonl = read_alignments(extracted / "clip.alignments.jsonl")
    for i, image in enumerate(read_frames(probe_video(synthetic_clip))):
        found = replay.detect(image)
        recorded = np.asarray(jsonl[f"clip_{i + 1:06d}.mp4"][0]["landmarks"])
        assert len(found) == 1 and found[0].landmarks is not None
        # the .fsa holds the 68 points the landmark plugin placed, as the record does
        assert recorded.shape == (68, 2)
        assert np.allclose(found[0].landmarks, recorded, atol=0.01)
    assert replay.replayed == 50


def test_records_named_as_before_still_resume_and_replay(synthetic_clip: Path,
                                                         tmp_path: Path) -> None:
    """A record from swapd before faceswap's naming (frames from 0, no extension)."""
    out = tmp_path / "faces"
    report = extract(synthetic_clip, out, size=64)
    record = report.alignments[0]
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    for i, entry in enumerate(lines):
        entry["frame"] = video_frame_name("clip", i)
    record.write_text("".join(json.dumps(e) + "\n" for e in lines[:20]))
    frames = load_alignments(record)
    replay = RecordedFaces(frames, partial(video_frame_names, synthetic_clip), _Never())
    assert [len(replay.detect(np.zeros((8, 8, 3), np.uint8))) for _ in range(20)] == [1] * 20
    again = extract(synthetic_clip, out, size=64)
    assert again.frames_skipped == 20 and again.frames == 30
    fsa = faceswap.load_fsa((out / "clip_alignments.fsa").read_bytes())["__data__"]
    assert list(fsa) == [f"clip_{i:06d}.mp4" for i in range(1, 51)]


def test_an_old_faceswap_file_reads() -> None:
    """Before 2.0 a frame was its list of faces; before 2.2 landmarks were numpy arrays."""
    face = {"x": 1, "y": 2, "w": 30, "h": 40, "landmarks_xy": np.ones((68, 2), np.float32),
            "mask": {}, "thumb": np.frombuffer(b"\xff\xd8jpeg", np.uint8)}
    data = zlib.compress(pickle.dumps({"__meta__": {"version": 2.1},
                                       "__data__": {"a.png": [face], "b.png": []}}))
    version, frames = decode_fsa(data)
    assert version == 2.1 and len(frames["a.png"]) == 1 and frames["b.png"] == []
    assert frames["a.png"][0].thumb == b"\xff\xd8jpeg"
    version, frames = decode_fsa(encode_fsa({"c.png": [FsaFace(0, 0, 9, 9, np.ones((68, 2)))]}))
    assert version == 2.4 and frames["c.png"][0].w == 9


class _Boom:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_bad_fsa_files_are_refused_running_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    good = encode_fsa({"clip_000001.mp4": [FsaFace(0, 0, 9, 9, np.ones((68, 2)))]})
    cases = {
        "hostile.fsa": (zlib.compress(pickle.dumps({"__meta__": {"version": 2.4},
                                                    "__data__": {"x": _Boom(marker)}})),
                        "hostile or broken pickle: refused global posix.system"),
        "truncated.fsa": (good[:len(good) // 2], "truncated"),
        "noise.fsa": (b"not zlib at all", "corrupt"),
        "list.fsa": (zlib.compress(pickle.dumps([1, 2])), "no '__data__' dict"),
        "five.fsa": (encode_fsa({"f.png": [FsaFace(0, 0, 9, 9, np.ones((5, 2)))]}),
                     "landmarks of shape \\(5, 2\\); swapd replays 68"),
    }
    for name, (data, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(AlignmentsError, match=reason) as refused:
            load_alignments(path)
        assert str(path) in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(FsaError):
        decode_fsa(zlib.compress(pickle.dumps({"__data__": {"x": [{"x": 1}]}})))
    assert not marker.exists()


def test_swapd_merge_refuses_a_bad_fsa(tmp_path: Path) -> None:
    bad = tmp_path / "clip_alignments.fsa"
    bad.write_bytes(b"\x78\x9c truncated")
    out = tmp_path / "merged"
    result = subprocess.run(
        [sys.executable, "-m", "swapd", "merge", str(tmp_path / "clip.mp4"), "--model",
         str(tmp_path / "none.onnx"), "--alignments", str(bad), "--output", str(out)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2
    assert str(bad) in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()

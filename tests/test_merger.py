"""Merger: MTCNN detection, the onnxruntime swap session, blending, and whole-file merges.

Everything runs for real: synthetic faces from swapd.demo.painter, tiny ONNX models exported
with torch, onnxruntime, ffmpeg/ffprobe.  The test model inverts colours, so the swapped region is
easy to see in the output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from swapd.cli import main as swapd_main
from swapd.daemon.merge_worker import _recorded_faces
from swapd.demo.clip import ClipTruth, truth_path
from swapd.demo.identity import DEMO_A, DEMO_B
from swapd.demo.painter import make_background, render_face
from swapd.extract.alignments import AlignmentsError, load_alignments, record_beside
from swapd.extract.detectors.base import Detection
from swapd.extract.detectors.mtcnn import MtcnnDetector
from swapd.extract.detectors.registry import create_detector
from swapd.extract.extract import extract
from swapd.extract.face_tracker import FaceTracker
from swapd.faces.alignment import model_crop_matrix, warp_face
from swapd.faces.landmarks import five_points
from swapd.media import (
    UnreadableMediaError,
    _probe_with_opencv,
    ffmpeg_exe,
    ffprobe_exe,
    probe_video,
    read_frames,
)
from swapd.merger.blend import face_mask, match_colour, paste_back
from swapd.merger.merge import MergeError, MergeOptions, Merger, merge_file
from swapd.merger.provenance import verify_file
from swapd.merger.session import ModelLoadError, SwapSession
from swapd.merger.video import VideoWriter
from swapd.merger.watermark import AMP_TEXTURE
from swapd.runtime import select_providers
from swapd.state import StateStore
from swapd.workspace import Workspace
from tests.support import require_tools


@pytest.fixture(autouse=True, scope="module")
def _needs_ffprobe() -> None:
    require_tools("ffprobe")  # (a skip locally, a failure under CI)


SIZE = (640, 360)  # the shared synthetic_clip fixture: 2 s of DEMO_A at 25 fps, with audio


class _Invert(nn.Module):
    """1x1 conv computing 1 - x: a 'swap' whose effect is unmistakable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(-torch.eye(3).reshape(3, 3, 1, 1))
            self.conv.bias.fill_(1.0)

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        return self.conv(face)


def export_model(path: Path, size: int = 64, coverage: float = 0.875) -> Path:
    """Export the inverting model the way swapd's exporter lays models out."""
    import onnx

    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(_Invert().eval(), torch.rand(1, 3, size, size), str(path),
                          input_names=["face"], output_names=["swapped"],
                          dynamic_axes={"face": {0: "batch"}, "swapped": {0: "batch"}},
                          opset_version=17, dynamo=False)
    proto = onnx.load(str(path))
    for key, value in {"input_size": str(size), "coverage": str(coverage),
                       "centering": "face", "model": "invert"}.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(proto, str(path))
    return path


def ffprobe(path: Path) -> dict:
    out = subprocess.run([ffprobe_exe(), "-v", "error", "-count_packets", "-print_format", "json",
                          "-show_streams", "-show_format", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def streams(info: dict, kind: str) -> list[dict]:
    return [s for s in info["streams"] if s["codec_type"] == kind]


def first_frame(path: Path) -> np.ndarray:
    return next(iter(read_frames(probe_video(path))))


def face_box(landmarks: np.ndarray, shrink: float = 0.0) -> tuple[slice, slice]:
    x0, y0 = landmarks.min(axis=0)
    x1, y1 = landmarks.max(axis=0)
    dx, dy = (x1 - x0) * shrink, (y1 - y0) * shrink
    return slice(int(y0 + dy), int(y1 - dy)), slice(int(x0 + dx), int(x1 - dx))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("merger")


@pytest.fixture(scope="module")
def model(work: Path) -> Path:
    return export_model(work / "invert64.onnx")


@pytest.fixture(scope="module")
def clip(synthetic_clip: Path) -> Path:
    return synthetic_clip


@pytest.fixture(scope="module")
def truth(clip: Path) -> ClipTruth:
    return ClipTruth.load(truth_path(clip))


@pytest.fixture(scope="module")
def detector() -> MtcnnDetector:
    return MtcnnDetector()


@pytest.fixture(scope="module")
def merged(work: Path, clip: Path, model: Path) -> tuple:
    calls: list[tuple[int, int | None]] = []
    result = merge_file(clip, work / "out", model, progress=lambda d, t: calls.append((d, t)))
    return result, calls


# --- detection ------------------------------------------------------------------------------


@pytest.mark.parametrize(("identity", "pose"), [(DEMO_A, (0, 0, 0)), (DEMO_B, (0, 0, 0)),
                                                (DEMO_A, (20, 8, 5)), (DEMO_B, (-20, -5, -8))])
def test_mtcnn_finds_synthetic_face_with_accurate_points(detector: MtcnnDetector, identity,
                                                         pose) -> None:
    face = render_face(identity, pose, frame_size=SIZE, face_height_px=150, background=3)
    found = detector.detect(face.image)
    assert len(found) == 1
    truth = five_points(face.landmarks)
    eye_distance = np.linalg.norm(truth[1] - truth[0])
    error = np.linalg.norm(found[0].landmarks5 - truth, axis=1) / eye_distance
    assert error.mean() < 0.12, error
    assert error.max() < 0.25, error
    x0, y0, x1, y1 = found[0].box
    assert x0 < truth[:, 0].min() and truth[:, 0].max() < x1
    assert y0 < truth[:, 1].min() and truth[:, 1].max() < y1
    assert found[0].score >= 0.9


def test_mtcnn_finds_face_in_clip_frames_and_nothing_in_background(
        detector: MtcnnDetector, clip: Path, truth: ClipTruth) -> None:
    frames = list(read_frames(probe_video(clip)))
    assert len(frames) == truth.frame_count
    errors = []
    for index in range(0, len(frames), 5):  # the head turns +-25 degrees, nods and talks
        found = detector.detect(frames[index])
        assert len(found) == 1, f"frame {index}"
        points = five_points(truth.landmarks[index])
        error = np.linalg.norm(found[0].landmarks5 - points, axis=1)
        errors.append(error / np.linalg.norm(points[1] - points[0]))
    assert np.mean(errors) < 0.08 and np.max(errors) < 0.3
    assert detector.detect(make_background(SIZE, 5)) == []


def test_detector_options_and_registry() -> None:
    small = render_face(DEMO_A, frame_size=SIZE, face_height_px=60, background=1)
    assert len(MtcnnDetector(min_face_size=20).detect(small.image)) == 1
    assert MtcnnDetector(min_face_size=150).detect(small.image) == []
    assert isinstance(create_detector("mtcnn"), MtcnnDetector)
    with pytest.raises(Exception, match="unknown detector 'nope'"):
        create_detector("nope")


def test_tracker_follows_face_with_few_full_detections(detector: MtcnnDetector) -> None:
    class Counting:
        def __init__(self) -> None:
            self.full = 0

        def detect(self, frame: np.ndarray) -> list[Detection]:
            self.full += 1
            return detector.detect(frame)

        def refine(self, frame: np.ndarray, previous: list[Detection]) -> list[Detection]:
            return detector.refine(frame, previous)

    counting = Counting()
    tracker = FaceTracker(counting, redetect_every=5)
    background = make_background(SIZE, 2)
    for i in range(10):
        face = render_face(DEMO_B, (2.0 * i, 0, 0), frame_size=SIZE, centre=(280 + 6 * i, 180),
                           face_height_px=150, background=background)
        found = tracker.detect(face.image)
        assert len(found) == 1
        truth = five_points(face.landmarks)
        assert np.linalg.norm(found[0].landmarks5 - truth, axis=1).mean() < 12
    assert counting.full == 2  # frames 0 and 5
    # A cut to an empty shot loses the face and falls back to a full search at once.
    assert tracker.detect(make_background(SIZE, 9)) == []
    assert counting.full == 3


# --- session -----------------------------------------------------------------------------


def test_swap_session_runs_exported_model(model: Path) -> None:
    session = SwapSession(model, device="auto")
    assert session.providers[-1] == "CPUExecutionProvider"
    assert (session.input_size, session.coverage, session.centering) == (64, 0.875, "face")
    crops = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    out = session.swap(crops)
    assert out.shape == crops.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - (255 - crops.astype(int))).max() <= 1
    assert session.swap(crops[:0]).shape == (0, 64, 64, 3)
    with pytest.raises(ValueError, match="crops must be uint8"):
        session.swap(crops[:, :32])


def test_swap_session_runs_dfm_style_model(tmp_path: Path) -> None:
    """DeepFaceLive layout: NHWC input in_face:0, three outputs, batch fixed at 1, no metadata."""

    class Dfm(nn.Module):
        def forward(self, face: torch.Tensor) -> tuple[torch.Tensor, ...]:
            mask = face.mean(dim=3, keepdim=True)
            return mask, 1.0 - face, mask

    path = tmp_path / "celeb.dfm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(Dfm().eval(), torch.rand(1, 32, 32, 3), str(path),
                          input_names=["in_face:0"], opset_version=17, dynamo=False,
                          output_names=["out_face_mask:0", "out_celeb_face:0",
                                        "out_celeb_face_mask:0"])
    session = SwapSession(path, device="cpu")
    assert session.info.channels_last and session.input_size == 32
    assert session.max_batch == 1
    crops = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert np.abs(session.swap(crops).astype(int) - (255 - crops.astype(int))).max() <= 1


def test_provider_choice_falls_back_to_cpu() -> None:
    assert select_providers("cpu") == ["CPUExecutionProvider"]
    assert select_providers("cuda")[-1] == "CPUExecutionProvider"
    with pytest.raises(ValueError):
        select_providers("tpu")


def test_bad_model_files_name_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    with pytest.raises(ModelLoadError, match="junk.onnx"):
        SwapSession(junk)
    with pytest.raises(ModelLoadError, match="missing.onnx.*does not exist"):
        SwapSession(tmp_path / "missing.onnx")


# --- blending ----------------------------------------------------------------------------


def test_face_mask_is_feathered_and_inside_crop() -> None:
    mask = face_mask(64, 0.875)
    assert mask.shape == (64, 64) and mask.dtype == np.float32
    assert mask.min() >= 0 and mask.max() <= 1
    assert mask[32, 32] > 0.99
    assert mask[0].max() == 0 and mask[:, 0].max() == 0 and mask[-1].max() == 0
    soft = np.count_nonzero((mask > 0.05) & (mask < 0.95))
    assert soft > 0.1 * np.count_nonzero(mask > 0.05)  # a real feather, not a hard edge


def test_colour_match_moves_swapped_face_to_original_colours() -> None:
    face = render_face(DEMO_A, frame_size=SIZE, face_height_px=150, background=1)
    matrix = model_crop_matrix(five_points(face.landmarks), 64, 0.875)
    original = warp_face(face.image, matrix, 64)
    tinted = np.clip(original.astype(int) + (60, -30, 10), 0, 255).astype(np.uint8)
    mask = face_mask(64, 0.875)
    inside = mask > 0.5
    matched = match_colour(tinted, original, mask)
    before = np.abs(tinted[inside].mean(0) - original[inside].mean(0)).max()
    after = np.abs(matched[inside].mean(0) - original[inside].mean(0)).max()
    assert before > 25 and after < 4


def test_paste_back_changes_only_the_face_region() -> None:
    face = render_face(DEMO_A, frame_size=SIZE, face_height_px=150, background=1)
    frame = face.image.copy()
    matrix = model_crop_matrix(five_points(face.landmarks), 64, 0.875)
    crop = warp_face(frame, matrix, 64)
    paste_back(frame, 255 - crop, face_mask(64, 0.875), matrix)
    rows, cols = face_box(face.landmarks, shrink=0.3)
    assert np.abs(frame[rows, cols].astype(int) - face.image[rows, cols]).mean() > 60
    changed = np.any(frame != face.image, axis=2)
    ys, xs = np.nonzero(changed)
    lm = face.landmarks
    assert xs.min() > lm[:, 0].min() - 30 and xs.max() < lm[:, 0].max() + 30
    assert ys.min() > lm[:, 1].min() - 60 and ys.max() < lm[:, 1].max() + 30


# --- whole files -------------------------------------------------------------------------


def test_video_merge_keeps_audio_length_frames_and_marks_output(clip: Path, truth: ClipTruth,
                                                                merged: tuple) -> None:
    result, calls = merged
    out = result.output_path
    assert out.name == "clip_swapd.mp4" and out.is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip_swapd.mp4"]  # no temp files
    src, dst = ffprobe(clip), ffprobe(out)
    (src_video,), (dst_video,) = streams(src, "video"), streams(dst, "video")
    assert len(streams(src, "audio")) == 1 and len(streams(dst, "audio")) == 1
    assert dst_video["codec_name"] == "h264" and dst_video["pix_fmt"] == "yuv420p"
    assert int(dst_video["nb_read_packets"]) == int(src_video["nb_read_packets"]) == result.frames
    assert abs(float(dst["format"]["duration"]) - float(src["format"]["duration"])) <= 0.1
    assert result.faces_swapped == result.frames
    assert calls[-1] == (result.frames, result.frames)

    before, after = first_frame(clip), first_frame(out)
    rows, cols = face_box(truth.landmarks[0], shrink=0.25)
    diff = np.abs(after.astype(int) - before.astype(int))
    # the face was replaced (an untouched face differs by the re-encoding only, under 5)
    assert diff[rows, cols].mean() > 30
    far = np.concatenate([diff[:40, :80].ravel(), diff[:40, -80:].ravel()])
    assert far.mean() < 4  # background: only the watermark and re-encoding

    verdict = verify_file(out)
    assert verdict.marked and verdict.metadata_tag and verdict.watermark.marked
    assert verify_file(clip).marked is False


def test_image_merge_swaps_every_or_largest_face(work: Path, model: Path) -> None:
    small = render_face(DEMO_A, frame_size=SIZE, centre=(170, 180), face_height_px=110,
                        background=4)
    both = render_face(DEMO_B, frame_size=SIZE, centre=(470, 180), face_height_px=150,
                       background=small.image)
    src = work / "two faces.jpg"
    cv2.imwrite(str(src), both.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    out_dir = work / "images"
    merger = Merger(model, MergeOptions(colour_match=False))  # keep the inversion stark
    result = merger.merge_file(src, out_dir)
    assert result.output_path == out_dir / "two faces_swapd.png"
    assert (result.frames, result.faces_swapped) == (1, 2)
    image = cv2.imread(str(result.output_path))
    for landmarks in (small.landmarks, both.landmarks):
        rows, cols = face_box(landmarks, shrink=0.3)
        assert np.abs(image[rows, cols].astype(int) - both.image[rows, cols]).mean() > 40
    verdict = verify_file(result.output_path)
    assert verdict.metadata_tag and verdict.watermark.marked

    largest = merge_file(src, work / "largest", model,
                         MergeOptions(faces="largest", colour_match=False))
    assert largest.faces_swapped == 1
    image = cv2.imread(str(largest.output_path))
    for landmarks, changed in ((small.landmarks, False), (both.landmarks, True)):
        rows, cols = face_box(landmarks, shrink=0.3)
        diff = np.abs(image[rows, cols].astype(int) - both.image[rows, cols]).mean()
        assert diff > 40 if changed else diff < 6


def _one_second(clip: Path, dst: Path, *extra: str) -> int:
    """Re-encode the clip's first second (plus extra ffmpeg options) to dst; its frame count."""
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(clip), *extra, "-t", "1",
                    "-c:v", "libx264", "-preset", "ultrafast", str(dst)], check=True)
    return int(streams(ffprobe(dst), "video")[0]["nb_read_packets"])


def test_frame_without_face_passes_through_but_is_marked(tmp_path: Path, model: Path) -> None:
    src = tmp_path / "empty room.png"
    room = make_background(SIZE, 8)
    cv2.imwrite(str(src), room)
    result = merge_file(src, tmp_path / "out", model)
    assert result.faces_swapped == 0
    image = cv2.imread(str(result.output_path))
    change = np.abs(image.astype(int) - room)
    # only the watermark: +-1.5 levels (dithered) on the flat backdrop, more by its lines
    assert change.max() <= AMP_TEXTURE and change.mean() < 1.5, (change.max(), change.mean())
    verdict = verify_file(result.output_path)
    assert verdict.metadata_tag and verdict.watermark.marked


def test_clip_without_audio(work: Path, clip: Path, model: Path) -> None:
    silent = work / "silent.mov"
    frames = _one_second(clip, silent, "-an")
    result = merge_file(silent, work / "silent_out", model)
    info = ffprobe(result.output_path)
    assert streams(info, "audio") == []
    assert int(streams(info, "video")[0]["nb_read_packets"]) == frames == result.frames
    assert verify_file(result.output_path).marked


def test_short_foreign_audio_never_cuts_video(work: Path, clip: Path, model: Path) -> None:
    # PCM audio (not mp4-friendly) lasting 0.6 s of a 1 s video, in a Matroska file.
    src = work / "short audio.mkv"
    frames = _one_second(clip, src, "-f", "lavfi", "-t", "0.6", "-i",
                         "sine=frequency=300:sample_rate=22050", "-map", "0:v", "-map", "1:a",
                         "-c:a", "pcm_s16le")
    result = merge_file(src, work / "mkv_out", model)
    info = ffprobe(result.output_path)
    (video,), (audio,) = streams(info, "video"), streams(info, "audio")
    assert int(video["nb_read_packets"]) == frames == result.frames
    assert audio["codec_name"] == "aac"
    assert abs(float(audio["duration"]) - 0.6) < 0.1


def test_without_ffprobe_audio_is_still_carried_over(tmp_path: Path, clip: Path) -> None:
    info = _probe_with_opencv(clip)  # what probe_video uses when ffprobe is not installed
    assert (info.width, info.height, info.fps) == (*SIZE, 25)
    assert not info.audio_known
    out = tmp_path / "first ten.mp4"
    with VideoWriter(out, info.width, info.height, info.fps, info) as writer:
        for _, frame in zip(range(10), read_frames(info), strict=False):
            writer.write(frame)
    probe = ffprobe(out)
    assert int(streams(probe, "video")[0]["nb_read_packets"]) == 10
    (audio,) = streams(probe, "audio")
    assert abs(float(audio["duration"]) - 10 / 25) < 0.05  # cut to the video, never longer
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def _truncated(clip: Path, dst: Path, faststart: bool) -> Path:
    whole = dst.with_suffix(".whole.mp4")
    flags = ["-movflags", "+faststart"] if faststart else []
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(clip), "-c", "copy", *flags,
                    str(whole)], check=True)
    data = whole.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    whole.unlink()
    return dst


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "truncated_faststart",
                                  "bad_png", "unsupported"])
def test_corrupt_input_names_file_and_leaves_nothing(tmp_path: Path, clip: Path, model: Path,
                                                     kind: str) -> None:
    src = tmp_path / {"bad_png": "broken.png", "unsupported": "notes.txt"}.get(kind, "broken.mp4")
    if kind == "empty":
        src.write_bytes(b"")
    elif kind in ("text", "bad_png", "unsupported"):
        src.write_text("this is not media\n")
    else:
        _truncated(clip, src, faststart=kind == "truncated_faststart")
    out_dir = tmp_path / "out"
    with pytest.raises((UnreadableMediaError, MergeError)) as caught:
        merge_file(src, out_dir, model)
    assert str(src) in str(caught.value)
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


# --- alignments records ---------------------------------------------------------------------


class _CountingDetector:
    """MTCNN, counting the frames it is asked to search."""

    name = "counting"
    landmark_points = 5

    def __init__(self) -> None:
        self.inner, self.calls = MtcnnDetector(), 0

    def detect(self, frame: np.ndarray) -> list[Detection]:
        self.calls += 1
        return self.inner.detect(frame)


def test_merge_replays_the_alignments_record_beside_the_footage(tmp_path: Path, clip: Path,
                                                                model: Path) -> None:
    """Frames in the record get exactly their recorded faces (none where the user deleted a
    detection); only frames missing from it are searched."""
    footage = tmp_path / "footage"
    footage.mkdir()
    source = footage / clip.name
    source.write_bytes(clip.read_bytes())
    extract(source, tmp_path / "faces")
    lines = [json.loads(line) for line in
             (tmp_path / "faces" / f"{source.stem}.alignments.jsonl").read_text().splitlines()]
    for entry in lines[10:20]:
        entry["faces"] = []  # deleted by hand: these frames keep their own face
    kept = lines[:40]  # the last 10 frames are not in the record: they are searched
    (footage / f"{source.stem}.alignments.jsonl").write_text(
        "".join(json.dumps(entry) + "\n" for entry in kept))
    record = record_beside(source)
    assert record is not None

    counting = _CountingDetector()
    merger = Merger(model, detector=counting)
    result = merger.merge_file(source, tmp_path / "out", alignments=load_alignments(record))
    assert result.frames == 50
    assert result.faces_swapped == 40
    assert counting.calls <= 10  # only the unrecorded tail (tracked: fewer full searches)

    frames = list(read_frames(probe_video(result.output_path)))
    originals = list(read_frames(probe_video(source)))
    truth = ClipTruth.load(truth_path(clip))

    def face_change(i: int) -> float:
        rows, cols = face_box(truth.landmarks[i], shrink=0.25)
        return float(np.abs(frames[i].astype(int) - originals[i].astype(int))[rows, cols].mean())

    assert face_change(5) > 40 and face_change(45) > 40  # swapped (recorded / detected)
    assert face_change(15) < 6  # the deleted detection: left alone


def test_a_broken_alignments_record_names_its_line(tmp_path: Path, clip: Path,
                                                   model: Path) -> None:
    record = tmp_path / "clip.alignments.jsonl"
    good = {"frame": "clip_000000", "faces": [
        {"box": [1, 2, 3, 4], "score": 1, "landmarks": [[1, 2]] * 5}]}
    bad = {"frame": "clip_000001", "faces": [{"box": [1, 2, 3], "landmarks": [[1, 2]] * 5}]}
    record.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(AlignmentsError, match=r"line 2: box must have shape \(4,\)"):
        load_alignments(record)
    record.write_text(json.dumps(good) + "\n{not json\n" + json.dumps(good) + "\n")
    with pytest.raises(AlignmentsError, match="line 2 is not JSON"):
        load_alignments(record)
    nan = dict(good, faces=[dict(good["faces"][0], landmarks=[[float("nan"), 1]] * 68)])
    record.write_text(json.dumps(good) + "\n" + json.dumps(nan) + "\n")
    with pytest.raises(AlignmentsError, match="line 2: landmarks holds NaN"):
        load_alignments(record)
    for hostile, problem in ((dict(good["faces"][0], landmarks=[[10**400, 1]] * 5), "line 2: "),
                             ('{"frame": "x", "faces": [{"score": 1' + "0" * 5000 + "}]}",
                              "line 2 is not"),
                             ('{"frame": "x", "faces": ' + "[" * 100_000 + "]" * 100_000 + "}",
                              "line 2 is not")):
        line = hostile if isinstance(hostile, str) else json.dumps(
            dict(good, faces=[hostile]))
        record.write_text(json.dumps(good) + "\n" + line + "\n")
        with pytest.raises(AlignmentsError, match=problem):
            load_alignments(record)
    # A torn last line is an interrupted extraction, not an error.
    record.write_text(json.dumps(good) + "\n" + json.dumps(good)[:20])
    assert list(load_alignments(record)) == ["clip_000000"]

    # The CLI refuses a broken record it was given, naming the file and line.
    record.write_text(json.dumps(bad) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "swapd", "merge", str(clip), "--model", str(model), "--output",
         str(tmp_path / "out"), "--alignments", str(record)], capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 2
    assert str(record) in result.stderr and "line 1" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_merge_worker_ignores_a_broken_record_and_says_so(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    source = ws.root / "footage" / "job" / "clip.mp4"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"")
    (source.parent / "clip.alignments.jsonl").write_text('{"frame": 5}\n')
    store = StateStore(ws.state_db)
    assert _recorded_faces(ws, store, "job", source) is None
    [problem] = store.problems()
    assert "clip.alignments.jsonl" in problem.message and "line 1" in problem.message


def test_a_video_too_small_to_watermark_is_refused_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Frames under the watermark's minimum: a clear error naming the file (the service sets
    such footage aside), not a traceback after the first frame, for a merge and a preview."""
    model = export_model(tmp_path / "invert.onnx")
    clip = tmp_path / "tiny.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc=size=96x48:rate=10:duration=1", "-pix_fmt", "yuv420p", str(clip)],
                   check=True)
    for extra in ([], ["--preview", "0"]):
        code = swapd_main(["merge", str(clip), "--model", str(model), "--output",
                           str(tmp_path / "out"), *extra])
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"{clip}: " in err and "96x48 is too small to watermark (minimum 64x64)" in err
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_temp_files_of_a_merge_killed_while_signing_are_removed(tmp_path: Path) -> None:
    """A merge killed while it tags or signs its part file in place leaves that part file and
    the atomic write's own temp file beside it: both go; the user's files stay."""
    from swapd.merger.video import _temp_path, remove_temp_files

    part = _temp_path(tmp_path / "clip_swapd.mp4", ".mp4")
    part.write_bytes(b"encoded")
    killed = subprocess.run([sys.executable, "-c", (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from swapd.fsutil import atomic_path\n"
        "part = Path(sys.argv[1])\n"
        "with atomic_path(part, keep_mode=True, suffix=part.suffix) as tmp:\n"
        "    Path(tmp).write_bytes(b'signed, half written')\n"
        "    os._exit(9)\n"), str(part)], timeout=60)
    assert killed.returncode == 9
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and left[0].startswith(f".{part.name}.")
    kept = ["clip_swapd.mp4", ".hidden.mp4", "notes.part.txt", ".a.part.mp4"]
    for name in kept:
        (tmp_path / name).write_bytes(b"mine")
    assert remove_temp_files(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)

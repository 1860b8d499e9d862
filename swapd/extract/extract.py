"""Extraction: find the faces in new footage and write them as aligned faces.

``extract(INPUT, OUTPUT)`` reads a video, a folder of images or one image; for every frame it
detects faces (a detector plugin from :mod:`swapd.extract.detectors`), aligns each by its landmarks
(:func:`swapd.faces.alignment.aligned_matrix`) and writes it as a faceswap-format PNG
(``<source>_<frame>_<face>.png``, head-centred by default, so any training centering can be
cut from it), with the landmarks, the source frame and swapd's extras (centering, size, aligned
landmarks, pose, detector) in its header.

Beside the faces, ``<source>.alignments.jsonl`` (see :mod:`swapd.extract.alignments`) gets
one line per frame: the frame, and for each face its index, box, score, frame landmarks (all
the plugin found: 5 for MTCNN, 68 for dlib), the 2x3 frame->aligned matrix and the file
written. The file is appended as frames finish, so an interrupted extraction resumes where it
stopped: frames already recorded are skipped (for a video they are still decoded, not
searched). The merger replays the record when it lies beside the footage.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from swapd.extract.alignments import record_path, recorded_frames, video_frame_name
from swapd.extract.detectors.base import Detection, Detector
from swapd.extract.detectors.registry import create_detector
from swapd.extract.face_tracker import FaceTracker
from swapd.faces.alignment import Centering, aligned_matrix, transform_points, warp_face
from swapd.faces.faceswap_png import FaceswapMeta, write_aligned_png
from swapd.faces.pose import PoseError, estimate_pose
from swapd.media import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    UnreadableMediaError,
    probe_video,
    read_frames,
    read_image,
)

Progress = Callable[[int, int | None], None]
STAGES = ("decode", "detect", "align", "write")


@dataclass
class ExtractReport:
    """What an extraction did, and where its time went (seconds per stage)."""

    frames: int = 0  # frames processed this run
    frames_skipped: int = 0  # already in the alignments record (resumed)
    faces: int = 0
    frames_without_face: int = 0
    alignments: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    wall_seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else 0.0


@dataclass(frozen=True)
class _Source:
    """One stream of frames: a video, or images under one name."""

    name: str  # the stem faces and the alignments record are named after
    is_video: bool
    frames: Callable[[], Iterator[tuple[str, np.ndarray | None]]]  # (frame name, image)
    total: int | None


def _video_source(path: Path) -> _Source:
    info = probe_video(path)

    def frames() -> Iterator[tuple[str, np.ndarray | None]]:
        for i, frame in enumerate(read_frames(info)):
            yield video_frame_name(path.stem, i), frame

    return _Source(path.stem, True, frames, info.expected_frames)


def _image_source(paths: list[Path], name: str) -> _Source:
    stems = [p.stem for p in paths]
    # a.jpg and a.png would both write a_0.png: such names keep their suffix
    names = [p.stem if stems.count(p.stem) == 1 else p.name.replace(".", "_") for p in paths]

    def frames() -> Iterator[tuple[str, np.ndarray | None]]:
        for path, frame_name in zip(paths, names, strict=True):
            try:
                yield frame_name, read_image(path)
            except UnreadableMediaError:
                yield frame_name, None  # recorded with the error; the rest goes on

    return _Source(name, False, frames, len(paths))


def open_source(path: Path) -> _Source:
    """The frames of a video file, an image file or a folder of images."""
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise UnreadableMediaError(path, "folder holds no images")
        return _image_source(images, path.name)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return _video_source(path)
    if suffix in IMAGE_SUFFIXES:
        return _image_source([path], path.stem)
    raise UnreadableMediaError(path, f"not a video, image or folder ({suffix or 'no suffix'})")


def _face_meta(detection: Detection, matrix: np.ndarray, size: int, centering: Centering,
               frame_name: str, face_name: str, index: int, frame_shape: tuple[int, ...],
               is_video: bool, detector: str) -> FaceswapMeta:
    points = detection.points
    try:
        pose: list[float] | None = list(estimate_pose(points).as_tuple())
    except PoseError:
        pose = None
    x0, y0, x1, y1 = detection.box
    return FaceswapMeta(
        x=int(x0), y=int(y0), w=int(x1 - x0), h=int(y1 - y0),
        landmarks_xy=points.astype(np.float32), original_filename=face_name, face_index=index,
        source_filename=frame_name, source_is_video=is_video,
        source_frame_dims=(int(frame_shape[0]), int(frame_shape[1])),
        swapd={"centering": centering, "size": size, "pose": pose, "detector": detector,
               "score": round(float(detection.score), 4), "landmark_points": len(points),
               "aligned_landmarks": transform_points(points, matrix).round(2).tolist()},
    )


def _drop_torn_line(record: Path) -> None:
    """Cut a last line a crash left unfinished, so the record stays one JSON object a line."""
    if not record.is_file():
        return
    data = record.read_bytes()
    if data and not data.endswith(b"\n"):
        os.truncate(record, data.rfind(b"\n") + 1)


def extract(source_path: str | os.PathLike[str], output: str | os.PathLike[str],
            size: int = 512, centering: Centering = "head", detector: str | Detector = "mtcnn",
            min_face_size: int = 40, redetect_every: int = 5,
            progress: Progress | None = None) -> ExtractReport:
    """Extract every face of ``source_path`` into ``output`` (see the module doc).

    In a video, faces found are followed from frame to frame by the detector's cheap refine
    step, with a full search every ``redetect_every`` frames (and whenever a face is lost);
    separate images are always searched in full."""
    started = time.perf_counter()
    source = open_source(Path(source_path))
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    plugin = (create_detector(detector, min_face_size=min_face_size)
              if isinstance(detector, str) else detector)
    plugin_name = getattr(plugin, "name", type(plugin).__name__)
    finder = FaceTracker(plugin, redetect_every if source.is_video else 1)
    record = record_path(out, source.name)
    done = recorded_frames(record)
    report = ExtractReport(alignments=[record])
    timings = report.seconds
    clock = time.perf_counter()
    _drop_torn_line(record)
    with record.open("a", encoding="utf-8") as log:
        for frame_name, frame in source.frames():
            timings["decode"] += time.perf_counter() - clock
            if frame_name in done:
                report.frames_skipped += 1
                clock = time.perf_counter()
                continue
            entry: dict[str, object] = {"frame": frame_name, "faces": []}
            if frame is None:
                entry["error"] = "unreadable image"
                detections: list[Detection] = []
            else:
                clock = time.perf_counter()
                detections = finder.detect(frame)
                timings["detect"] += time.perf_counter() - clock
            for index, detection in enumerate(detections):
                assert frame is not None
                clock = time.perf_counter()
                matrix = aligned_matrix(detection.points, size, centering)
                face = warp_face(frame, matrix, size)
                timings["align"] += time.perf_counter() - clock
                clock = time.perf_counter()
                face_name = f"{frame_name}_{index}.png"
                meta = _face_meta(detection, matrix, size, centering, frame_name, face_name,
                                  index, frame.shape, source.is_video, plugin_name)
                write_aligned_png(out / face_name, face, meta, durable=False)
                timings["write"] += time.perf_counter() - clock
                entry["faces"].append({  # type: ignore[attr-defined]
                    "index": index, "file": face_name,
                    "box": np.round(detection.box, 2).tolist(),
                    "score": round(float(detection.score), 4),
                    "landmarks": np.round(detection.points, 3).tolist(),
                    "matrix": np.round(matrix, 6).tolist(),
                })
            clock = time.perf_counter()
            # The record line goes last: a frame counts as done only once its faces exist.
            log.write(json.dumps(entry) + "\n")
            log.flush()
            timings["write"] += time.perf_counter() - clock
            report.frames += 1
            report.faces += len(detections)
            report.frames_without_face += not detections
            if progress is not None:
                progress(report.frames + report.frames_skipped, source.total)
            clock = time.perf_counter()
    report.wall_seconds = time.perf_counter() - started
    return report

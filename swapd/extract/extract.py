"""Extraction: find the faces in new footage and write them as aligned faces.

``extract(INPUT, OUTPUT)`` reads a video, a folder of images or one image; for every frame it
detects faces (a detector plugin from :mod:`swapd.extract.detectors`), places 68 landmarks on
each (a landmark plugin from :mod:`swapd.extract.landmarkers`: MediaPipe's face mesh by
default; a face the plugin cannot see keeps the detector's points) and writes each as
faceswap's aligned PNG, exactly as faceswap's extract would from the same 68 landmarks
(faceswap's head-centred crop, its header, its file and frame names: ``clip_000001_0.png``
from the first frame of ``clip.mp4``), with swapd's extras (centering, size, the landmarks the
detector found moved into the face, pose, detector) in a second chunk; or, with
``face_format="dfl"``, as DeepFaceLab's aligned JPG. See :mod:`swapd.extract.writers`.

Beside the faces, ``<source>.alignments.jsonl`` (see :mod:`swapd.extract.alignments`) gets
one line per frame: the frame, and for each face its index, box, score, frame landmarks (68
from the landmark plugin; with ``landmarker="detector"`` the detector's own: 5 for MTCNN), the
name of what placed them, the 2x3 frame->aligned matrix and the file
written. The file is appended as frames finish, so an interrupted extraction resumes where it
stopped: frames already recorded are skipped (for a video they are still decoded, not
searched). The merger replays the record when it lies beside the footage. A video's finished
extraction also gets faceswap's alignments file, ``<stem>_alignments.fsa``
(:mod:`swapd.extract.fsa_export`), for faceswap's convert and tools.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from swapd.extract.alignments import fsa_path, record_path, recorded_frames
from swapd.extract.detectors.base import Detection, Detector
from swapd.extract.detectors.registry import create_detector
from swapd.extract.face_tracker import FaceTracker
from swapd.extract.frames import open_source
from swapd.extract.fsa_export import Thumbs, write_video_fsa
from swapd.extract.landmarkers.base import Landmarker
from swapd.extract.landmarkers.registry import (
    create_landmarker,
    default_landmarker,
    place_landmarks,
)
from swapd.extract.writers import FaceFormat, FaceWriter
from swapd.faces.faceswap_align import FaceswapCentering

Progress = Callable[[int, int | None], None]
STAGES = ("decode", "detect", "landmarks", "align", "write")


@dataclass
class ExtractReport:
    """What an extraction did, and where its time went (seconds per stage)."""

    frames: int = 0  # frames processed this run
    frames_skipped: int = 0  # already in the alignments record (resumed)
    faces: int = 0
    frames_without_face: int = 0
    landmarks_kept: int = 0  # faces written with the detector's points although a plugin ran
    alignments: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    wall_seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else 0.0


def _drop_torn_line(record: Path) -> None:
    """Cut a last line a crash left unfinished, so the record stays one JSON object a line."""
    if not record.is_file():
        return
    data = record.read_bytes()
    if data and not data.endswith(b"\n"):
        os.truncate(record, data.rfind(b"\n") + 1)


def extract(source_path: str | os.PathLike[str], output: str | os.PathLike[str],
            size: int = 512, centering: FaceswapCentering = "head",
            detector: str | Detector = "mtcnn", min_face_size: int = 40, redetect_every: int = 5,
            progress: Progress | None = None, face_format: FaceFormat = "faceswap",
            face_type: str = "whole_face",
            landmarker: str | Landmarker | None = None) -> ExtractReport:
    """Extract every face of ``source_path`` into ``output`` (see the module doc).

    In a video, faces found are followed from frame to frame by the detector's cheap refine
    step, with a full search every ``redetect_every`` frames (and whenever a face is lost);
    separate images are always searched in full. ``face_format`` "dfl" writes DeepFaceLab's
    aligned JPGs of ``face_type`` (whole_face, full_face, head) instead of faceswap's PNGs.
    ``landmarker``: a landmark plugin or its name (None: ``face_mesh``, or ``detector`` when
    the detector gives 68 points itself)."""
    started = time.perf_counter()
    source = open_source(Path(source_path))
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    plugin = (create_detector(detector, min_face_size=min_face_size)
              if isinstance(detector, str) else detector)
    if landmarker is None:
        landmarker = default_landmarker(plugin)
    marker = create_landmarker(landmarker) if isinstance(landmarker, str) else landmarker
    writer = FaceWriter(out, size, face_format, centering, face_type,
                        getattr(plugin, "name", type(plugin).__name__), source.is_video)
    finder = FaceTracker(plugin, redetect_every if source.is_video else 1)
    record = record_path(out, source.name)
    done = recorded_frames(record)
    report = ExtractReport(alignments=[record])
    timings = report.seconds
    thumbs: Thumbs = {}
    clock = time.perf_counter()
    _drop_torn_line(record)
    with record.open("a", encoding="utf-8") as log:
        for frame in source.frames():
            timings["decode"] += time.perf_counter() - clock
            if frame.name in done or frame.legacy in done:
                report.frames_skipped += 1
                clock = time.perf_counter()
                continue
            entry: dict[str, object] = {"frame": frame.name, "faces": []}
            detections: list[Detection] = []
            placed_by: list[str] = []  # per face, the plugin whose landmarks it has
            if frame.image is None:
                entry["error"] = "unreadable image"
            else:
                clock = time.perf_counter()
                detections = finder.detect(frame.image)
                timings["detect"] += time.perf_counter() - clock
                clock = time.perf_counter()
                detections, placed_by = place_landmarks(marker, frame.image, detections,
                                                        writer.detector)
                report.landmarks_kept += sum(name == writer.detector for name in placed_by
                                             ) if marker is not None else 0
                timings["landmarks"] += time.perf_counter() - clock
            for index, detection in enumerate(detections):
                assert frame.image is not None
                clock = time.perf_counter()
                cut = writer.cut(frame.image, detection)
                timings["align"] += time.perf_counter() - clock
                clock = time.perf_counter()
                written = writer.save(frame, frame.image.shape, detection, index, cut,
                                      placed_by[index])
                timings["write"] += time.perf_counter() - clock
                if written.thumb is not None:
                    thumbs[(frame.name, index)] = written.thumb
                entry["faces"].append({  # type: ignore[attr-defined]
                    "index": index, "file": written.file,
                    "box": np.round(detection.box, 2).tolist(),
                    "score": round(float(detection.score), 4),
                    "landmarks": np.round(detection.points, 3).tolist(),
                    "landmarker": placed_by[index],
                    "matrix": np.round(written.matrix, 6).tolist(),
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
    if source.is_video and face_format == "faceswap":
        report.alignments.append(write_video_fsa(record, fsa_path(out, source.name),
                                                 source.path, out, thumbs))
    report.wall_seconds = time.perf_counter() - started
    return report

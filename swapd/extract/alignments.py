"""Alignments records: what extraction found in each frame, for resuming and for merging.

``swapd faces extract`` writes ``<source>.alignments.jsonl`` beside the faces it extracts: one
JSON line per frame, ``{"frame": NAME, "faces": [{"index", "file", "box", "score",
"landmarks", "matrix"}, ...]}`` (an ``"error"`` key marks a frame that could not be read).
Frames are named as faceswap names them (see :mod:`swapd.extract.frames`): an image by its file
name, a video's frame ``<stem>_<number from 1, 6 digits><extension>``; records written before
used the image's stem and ``<stem>_<number from 0, 6 digits>``, and still resume and replay.
For a video it also writes faceswap's own alignments file, ``<stem>_alignments.fsa``.

The merger replays a record found beside the footage (``clip.mp4`` + ``clip.alignments.jsonl``,
or faceswap's ``clip_alignments.fsa``; for images also the record of their whole folder,
``<folder>/<folder>.alignments.jsonl`` or faceswap's ``<folder>/alignments.fsa``) instead of
detecting: a frame in the record gets exactly its recorded faces (none, if the user deleted a
wrong detection), a frame missing from it is searched as usual. So faces fixed or removed by
hand stay fixed in every merge. Records are named by stem: ``clip.mp4`` and ``clip.mkv`` in
one folder would share one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from swapd.errors import FileProblem
from swapd.extract.detectors.base import Detection, Detector
from swapd.faces.faceswap_fsa import FsaError, read_fsa
from swapd.faces.landmarks import five_points

SUFFIX = ".alignments.jsonl"
FSA_SUFFIX = "_alignments.fsa"  # faceswap's alignments file of a video
MAX_RECORD_BYTES = 512 * 1024 * 1024


class AlignmentsError(FileProblem, ValueError):
    """An alignments record that cannot be used; the reason names the line."""


def video_frame_name(stem: str, index: int) -> str:
    """A video frame's name in swapd's records before they took faceswap's (from 0)."""
    return f"{stem}_{index:06d}"


def faceswap_frame_name(video_name: str, index: int) -> str:
    """faceswap's name for frame ``index`` (from 0) of the video file ``video_name``."""
    stem, ext = os.path.splitext(video_name)
    return f"{stem}_{index + 1:06d}{ext}"


def video_frame_names(video: Path, index: int) -> tuple[str, ...]:
    """Every name a record may give frame ``index`` of ``video``: faceswap's (swapd's now),
    swapd's before, and faceswap's before its alignments 2.4 (a ``.png`` extension)."""
    return (faceswap_frame_name(video.name, index), video_frame_name(video.stem, index),
            faceswap_frame_name(f"{video.stem}.png", index))


def image_frame_names(image: Path) -> tuple[str, ...]:
    """Every name a record may give an image: its file name, then its stem (swapd's before),
    then the stem with its suffix (swapd's for a.jpg beside a.png)."""
    return image.name, image.stem, image.name.replace(".", "_")


def record_path(folder: str | os.PathLike[str], source_name: str) -> Path:
    return Path(folder) / f"{source_name}{SUFFIX}"


def fsa_path(folder: str | os.PathLike[str], source_name: str) -> Path:
    """faceswap's alignments file of a video: ``<stem>_alignments.fsa``."""
    return Path(folder) / f"{source_name}{FSA_SUFFIX}"


def record_beside(media: str | os.PathLike[str]) -> Path | None:
    """The alignments record of a footage file, when one lies beside it: swapd's
    ``<stem>.alignments.jsonl`` or faceswap's ``<stem>_alignments.fsa`` for a video or image,
    else (an image of a folder extracted as a whole) ``<folder name>.alignments.jsonl`` or
    faceswap's ``alignments.fsa``."""
    path = Path(media)
    folder = path.parent
    for candidate in (record_path(folder, path.stem), fsa_path(folder, path.stem),
                      record_path(folder, folder.name), folder / "alignments.fsa"):
        if candidate.is_file():
            return candidate
    return None


def read_alignments(record: str | os.PathLike[str]) -> dict[str, list[dict[str, object]]]:
    """An alignments record as {frame name: faces} (raw), for tests and tools."""
    frames: dict[str, list[dict[str, object]]] = {}
    with Path(record).open(encoding="utf-8") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            frames[entry["frame"]] = entry["faces"]
    return frames


def recorded_frames(record: Path) -> set[str]:
    """Frames already done in an alignments record. A line cut short by a crash is ignored,
    and so is a frame recorded with an error: a resumed run tries it again."""
    done = set()
    if record.exists():
        with record.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    entry = json.loads(line)
                    if not entry.get("error"):
                        done.add(entry["frame"])
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                    continue
    return done


def _numbers(value: object, shape: tuple[int, ...] | None, what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not numeric") from exc
    if shape is not None and array.shape != shape:
        raise ValueError(f"{what} must have shape {shape}, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} holds NaN or infinite values")
    return array


def _detection(face: object) -> Detection:
    if not isinstance(face, dict):
        raise ValueError("a face must be an object")
    points = _numbers(face.get("landmarks"), None, "landmarks")
    if points.shape not in ((5, 2), (68, 2)):
        raise ValueError(f"landmarks must be 5x2 or 68x2, got shape {points.shape}")
    box = _numbers(face.get("box"), (4,), "box")
    score = face.get("score", 1.0)
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise ValueError("score must be a number")
    if len(points) == 68:
        return Detection(box, float(score), five_points(points), landmarks=points)
    return Detection(box, float(score), points)


def load_alignments(record: str | os.PathLike[str]) -> dict[str, list[Detection]]:
    """A record's faces per frame, checked; AlignmentsError names the line that is wrong.

    Frames recorded with an error are left out (the merger searches them); a torn last line
    (an extraction cut short) is ignored. A faceswap ``.fsa`` is read by
    :func:`load_fsa_alignments`.
    """
    path = Path(record)
    if path.suffix.lower() == ".fsa":
        return load_fsa_alignments(path)
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            raise AlignmentsError(path, f"over {MAX_RECORD_BYTES} bytes")
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AlignmentsError(path, f"cannot read it ({exc})") from exc
    frames: dict[str, list[Detection]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break  # the torn last line of an interrupted extraction
            raise AlignmentsError(path, f"line {number} is not JSON ({exc.msg})") from exc
        except (ValueError, RecursionError) as exc:  # e.g. a 5,000-digit number, deep nesting
            raise AlignmentsError(path, f"line {number} is not usable JSON "
                                        f"({type(exc).__name__})") from exc
        try:
            if not isinstance(entry, dict) or not isinstance(entry.get("frame"), str):
                raise ValueError('each line must be an object with a "frame" name')
            if entry.get("error"):
                continue
            faces = entry.get("faces")
            if not isinstance(faces, list):
                raise ValueError('"faces" must be a list')
            frames[entry["frame"]] = [_detection(face) for face in faces]
        except (ValueError, TypeError, OverflowError) as exc:
            raise AlignmentsError(path, f"line {number}: {exc}") from exc
    return frames


def load_fsa_alignments(path: Path) -> dict[str, list[Detection]]:
    """faceswap's alignments file as the merger replays it (its 68 landmarks per face, the
    five derived from them); AlignmentsError (one line, naming the file) when it is
    truncated, corrupt, hostile or holds faces without 68 landmarks."""
    try:
        _, fsa = read_fsa(path)
    except FsaError as exc:
        raise AlignmentsError(path, exc.reason) from None
    frames: dict[str, list[Detection]] = {}
    for name, faces in fsa.items():
        found = []
        for index, face in enumerate(faces):
            if face.landmarks_xy.shape != (68, 2):
                raise AlignmentsError(path, f"frame {name!r} face {index}: landmarks of shape "
                                            f"{face.landmarks_xy.shape}; swapd replays 68")
            points = face.landmarks_xy.astype(np.float64)
            box = np.array([face.x, face.y, face.x + face.w, face.y + face.h], np.float64)
            found.append(Detection(box, 1.0, five_points(points), landmarks=points))
        frames[name] = found
    return frames


class RecordedFaces:
    """A detector that replays an alignments record frame by frame, in order.

    ``names(i)`` is the names a record may give the i-th frame it is called on (see
    :func:`video_frame_names`), the first held wins; frames the record does not hold go to
    ``fallback``.
    """

    name = "alignments"

    def __init__(self, frames: dict[str, list[Detection]],
                 names: Callable[[int], tuple[str, ...]], fallback: Detector) -> None:
        self.frames, self.names, self.fallback = frames, names, fallback
        self.landmark_points = fallback.landmark_points
        self.replayed = 0  # frames answered from the record
        self._index = 0

    def skip(self) -> None:
        """A frame passed over: the record moves on to the next one."""
        self._index += 1
        skip = getattr(self.fallback, "skip", None)
        if callable(skip):
            skip()

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        names = self.names(self._index)
        self._index += 1
        recorded = next((self.frames[n] for n in names if n in self.frames), None)
        if recorded is None:
            return self.fallback.detect(frame_bgr)
        self.replayed += 1
        seed = getattr(self.fallback, "seed", None)
        if callable(seed):  # a tracker follows on from the recorded faces, not stale ones
            seed(recorded)
        return recorded

"""Reading media: ffmpeg/ffprobe, probing, images, and video frames through an ffmpeg pipe.

Every module that shells out to ffmpeg goes through :func:`ffmpeg_exe` so there is one
place that decides which binary is used and one clear error when there is none.
Video is decoded with ``ffmpeg -f rawvideo -pix_fmt bgr24`` (one output frame per decoded
frame); the extractor and the merger both read it here. Writing video is the merger's
(:mod:`swapd.merger.video`), which marks what it writes as synthetic media.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, TypeVar

import cv2
import numpy as np

from swapd.errors import FileProblem

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}

_PROBE_TIMEOUT_S = 30
STDERR_TAIL = 600  # characters of ffmpeg's complaints kept in an error message
T = TypeVar("T")


class MediaToolMissing(RuntimeError):
    """ffmpeg (or another required media tool) cannot be found."""


class UnreadableMediaError(FileProblem, ValueError):
    """A media file is missing, empty, corrupt or of an unsupported kind."""


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: ``ffmpeg`` on PATH first, else the imageio-ffmpeg one."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # ImportError or its own RuntimeError when no binary exists
        raise MediaToolMissing(
            "ffmpeg not found: install ffmpeg (e.g. `apt install ffmpeg`) or the "
            f"imageio-ffmpeg package ({exc})"
        ) from exc


def ffprobe_exe() -> str | None:
    """Path of ffprobe on PATH, or None (imageio-ffmpeg ships no ffprobe)."""
    return shutil.which("ffprobe")


def probe_media(path: str | os.PathLike[str]) -> dict:
    """Return ffprobe's ``-show_streams -show_format`` JSON for *path*.

    Raises :class:`UnreadableMediaError` when the file is missing, empty or ffprobe
    cannot parse it, and :class:`MediaToolMissing` when ffprobe is not installed.
    """
    p = Path(path)
    if not p.is_file():
        raise UnreadableMediaError(p, "file does not exist")
    if p.stat().st_size == 0:
        raise UnreadableMediaError(p, "file is empty (0 bytes)")
    exe = ffprobe_exe()
    if exe is None:
        raise MediaToolMissing("ffprobe not found on PATH: install ffmpeg (it ships ffprobe)")
    cmd = [exe, "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(p)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise UnreadableMediaError(p, f"ffprobe timed out after {_PROBE_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()
        reason = detail[-1] if detail else f"ffprobe exit status {proc.returncode}"
        raise UnreadableMediaError(p, f"not a readable media file ({reason})")
    try:
        info = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise UnreadableMediaError(p, f"ffprobe gave unparsable output ({exc})") from exc
    if not info.get("streams"):
        raise UnreadableMediaError(p, "no audio or video streams found")
    return info


def read_image(path: Path) -> np.ndarray:
    """Decode an image file (unicode paths too) as BGR uint8; UnreadableMediaError says why not."""
    if not path.is_file():
        raise UnreadableMediaError(path, "file does not exist")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise UnreadableMediaError(path, "file is empty (0 bytes)")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise UnreadableMediaError(path, "not a readable image (corrupt or unsupported format)")
    return image


@dataclass(frozen=True)
class VideoInfo:
    """What the merger needs to know about a source video."""

    path: Path
    width: int  # as decoded, i.e. after the container's rotation is applied
    height: int
    fps: Fraction
    frames: int | None  # frame count stored in the container (exact), if any
    duration: float | None  # seconds
    audio_codec: str | None  # codec of the first audio track; None when there is none
    audio_known: bool = True  # False when probed without ffprobe (audio then unknown)

    @property
    def expected_frames(self) -> int | None:
        """The container's frame count, else an estimate from duration x fps."""
        if self.frames:
            return self.frames
        if self.duration:
            return round(self.duration * self.fps)
        return None


def _fraction(text: str | None) -> Fraction | None:
    try:
        value = Fraction(text or "0")
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def display_turn(stream: dict[str, Any]) -> int:
    """Degrees counter-clockwise (0, 90, 180 or 270) a player turns a video stream's coded
    frames to show them, from ffprobe's ``-show_streams`` data: the display matrix's
    ``rotation`` (counter-clockwise, as ffprobe reports it), else the old ``rotate`` tag
    (clockwise; ffprobe before 5 reported both)."""
    try:
        for side in stream.get("side_data_list", []):
            if "rotation" in side:
                return round(float(side["rotation"]) / 90) % 4 * 90
        return round(-float(stream.get("tags", {}).get("rotate", 0)) / 90) % 4 * 90
    except (TypeError, ValueError, OverflowError):
        return 0  # a rotation that is not a (finite) number: shown as coded


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Size, frame rate, frame count, duration and audio codec of a video file.

    Uses ffprobe when installed, else OpenCV (then audio is unknown and the muxer maps the first
    audio track if there is one).  Raises :class:`UnreadableMediaError` for anything unreadable.
    """
    p = Path(path)
    if ffprobe_exe() is None:
        return _probe_with_opencv(p)
    info = probe_media(p)
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not s.get("disposition", {}).get("attached_pic")), None)
    if video is None:
        raise UnreadableMediaError(p, "no video stream")
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if width <= 0 or height <= 0:
        raise UnreadableMediaError(p, f"video stream has no usable size ({width}x{height})")
    if display_turn(video) % 180 == 90:
        width, height = height, width
    fps = _fraction(video.get("avg_frame_rate")) or _fraction(video.get("r_frame_rate"))
    if fps is None:
        raise UnreadableMediaError(p, "video stream has no frame rate")
    frames = int(video["nb_frames"]) if str(video.get("nb_frames", "")).isdigit() else None
    duration = _float(video.get("duration")) or _float(info.get("format", {}).get("duration"))
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    return VideoInfo(p, width, height, fps, frames or None, duration,
                     audio.get("codec_name", "unknown") if audio else None)


@dataclass(frozen=True)
class FrameTimes:
    """A video stream's presentation timestamps: ``pts`` in ticks of ``time_base``, sorted
    (the order frames decode in with ``-fps_mode passthrough``), and ``end``, where the last
    frame stops (its pts plus its duration)."""

    time_base: Fraction
    pts: tuple[int, ...]
    end: int

    @property
    def variable(self) -> bool:
        """Whether the frames are not evenly spaced (a variable frame rate)."""
        steps = {b - a for a, b in zip(self.pts, self.pts[1:], strict=False)}
        return len(steps) > 1

    @property
    def duration(self) -> float:
        return float((self.end - self.pts[0]) * self.time_base) if self.pts else 0.0


def frame_times(path: str | os.PathLike[str]) -> FrameTimes | None:
    """Every frame's timestamp of the first video stream, read from its packets (nothing is
    decoded); None without ffprobe or when the container does not give them."""
    exe = ffprobe_exe()
    if exe is None:
        return None
    cmd = [exe, "-v", "error", "-select_streams", "v:0", "-show_entries",
           "stream=time_base:packet=pts,duration", "-of", "json", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S)
        info = json.loads(proc.stdout or "{}")
        time_base = Fraction(info["streams"][0]["time_base"])
        packets = sorted((int(p["pts"]), int(p.get("duration") or 0))
                         for p in info.get("packets", []))
    except (subprocess.TimeoutExpired, json.JSONDecodeError, KeyError, IndexError, TypeError,
            ValueError, ZeroDivisionError):
        return None
    if proc.returncode != 0 or not packets or time_base <= 0:
        return None
    pts = tuple(p for p, _ in packets)
    last = packets[-1][1] or (pts[-1] - pts[-2] if len(pts) > 1 else 1)
    return FrameTimes(time_base, pts, pts[-1] + last)


def _probe_with_opencv(p: Path) -> VideoInfo:
    if not p.is_file():
        raise UnreadableMediaError(p, "file does not exist")
    if p.stat().st_size == 0:
        raise UnreadableMediaError(p, "file is empty (0 bytes)")
    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise UnreadableMediaError(p, "not a readable video file")
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = Fraction(cap.get(cv2.CAP_PROP_FPS) or 0).limit_denominator(1001)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    if width <= 0 or height <= 0 or fps <= 0:
        raise UnreadableMediaError(p, "no usable video stream (size or frame rate missing)")
    return VideoInfo(p, width, height, fps, None, float(count / fps) if count > 0 else None,
                     None, audio_known=False)


def stderr_tail(stream: IO[bytes]) -> str:
    """The end of what ffmpeg wrote to ``stream`` (a temp file), for an error message."""
    stream.seek(0)
    text = stream.read().decode("utf-8", "replace").strip()
    return text[-STDERR_TAIL:] if text else ""


def read_frames(info: VideoInfo, prefetch: int = 4) -> Iterator[np.ndarray]:
    """Decode every frame of ``info.path`` as a writable (H, W, 3) BGR uint8 array.

    With ``prefetch`` > 0 a background thread keeps up to that many frames decoded ahead, so
    ffmpeg decodes while the caller works.  Raises :class:`UnreadableMediaError` when ffmpeg
    fails or decodes nothing.
    """
    frames = _decode(info)
    return _prefetched(frames, prefetch) if prefetch > 0 else frames


def _decode(info: VideoInfo) -> Iterator[np.ndarray]:
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(info.path), "-map", "0:v:0",
           "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
    size = info.width * info.height * 3
    count = 0
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, bufsize=0)
        assert proc.stdout is not None
        try:
            while True:
                frame = np.empty((info.height, info.width, 3), dtype=np.uint8)
                view, got = memoryview(frame).cast("B"), 0
                while got < size:
                    n = proc.stdout.readinto(view[got:])
                    if not n:
                        break
                    got += n
                if got < size:
                    break
                count += 1
                yield frame
        except BaseException:  # the consumer stopped early or failed: stop decoding
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        if proc.wait() != 0:
            raise UnreadableMediaError(info.path,
                                       f"ffmpeg could not decode it: {stderr_tail(errors)}")
        if count == 0:
            detail = stderr_tail(errors)
            raise UnreadableMediaError(info.path, "no video frames could be decoded"
                                       + (f": {detail}" if detail else ""))


_END = object()


def read_ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead (exceptions
    re-raised in the consumer)."""
    return _prefetched(items, depth)


def _prefetched(items: Iterator[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead.

    Exceptions from ``items`` are re-raised in the consumer; when the consumer stops early,
    ``items`` is closed (in its own thread) so its clean-up runs.
    """
    slots: queue.Queue[tuple[object, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: object, value: object) -> bool:
        while not stop.is_set():
            try:
                slots.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for item in items:
                if not put(None, item):
                    break
            else:
                put(_END, None)
        except BaseException as exc:
            put(exc, None)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=pump, name="swapd-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slots.get()
            if kind is _END:
                return
            if isinstance(kind, BaseException):
                raise kind
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()

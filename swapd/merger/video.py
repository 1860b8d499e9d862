"""Video in and out through ffmpeg pipes: raw BGR frames in, H.264 + the source's audio out.

Reading decodes with ``ffmpeg -f rawvideo -pix_fmt bgr24`` (one output frame per decoded frame).
Writing pipes frames to libx264 (yuv420p) in a hidden temp file in the output folder; when the
source has audio, a second, stream-copying ffmpeg run muxes the new video with the source's first
audio track, cut to the video's exact length (``-t`` on the audio input: unlike ``-shortest`` it
can never shorten the video).  The finished file is moved into place with ``os.replace``, so an
output path only ever holds a complete file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, TypeVar

import cv2
import numpy as np

from swapd.errors import FileProblem
from swapd.media import UnreadableMediaError, ffmpeg_exe, ffprobe_exe, probe_media
from swapd.merger.provenance import ffmpeg_metadata_args

log = logging.getLogger(__name__)
T = TypeVar("T")

# Audio codecs ffmpeg's mp4 muxer takes as they are; anything else is re-encoded to AAC.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus"})
_STDERR_TAIL = 600


class EncodeError(FileProblem, RuntimeError):
    """ffmpeg failed while writing an output file."""


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


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return int(float(side["rotation"]))
    return int(float(stream.get("tags", {}).get("rotate", 0)))


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
    if abs(_rotation(video)) % 180 == 90:
        width, height = height, width
    fps = _fraction(video.get("avg_frame_rate")) or _fraction(video.get("r_frame_rate"))
    if fps is None:
        raise UnreadableMediaError(p, "video stream has no frame rate")
    frames = int(video["nb_frames"]) if str(video.get("nb_frames", "")).isdigit() else None
    duration = _float(video.get("duration")) or _float(info.get("format", {}).get("duration"))
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    return VideoInfo(p, width, height, fps, frames or None, duration,
                     audio.get("codec_name", "unknown") if audio else None)


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


def _tail(stream: IO[bytes]) -> str:
    stream.seek(0)
    text = stream.read().decode("utf-8", "replace").strip()
    return text[-_STDERR_TAIL:] if text else ""


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
            raise UnreadableMediaError(info.path, f"ffmpeg could not decode it: {_tail(errors)}")
        if count == 0:
            detail = _tail(errors)
            raise UnreadableMediaError(info.path, "no video frames could be decoded"
                                       + (f": {detail}" if detail else ""))


_END = object()


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


def _temp_path(final: Path, suffix: str) -> Path:
    return final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}.part{suffix}")


def _run(cmd: list[str], output: Path) -> None:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    if proc.returncode != 0:
        text = proc.stderr.decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
        raise EncodeError(output, f"ffmpeg failed (exit {proc.returncode}): {text}")


class VideoWriter:
    """Encode frames to ``path`` (H.264 mp4) with the audio of ``source``; atomic on close.

    Use as a context manager: leaving it by an exception (or :meth:`abort`) removes every temp
    file and leaves ``path`` as it was.  Frames are handed to ffmpeg by a background thread, so
    encoding overlaps the caller's work; a frame must not be changed after :meth:`write`.
    """

    def __init__(self, path: str | os.PathLike[str], width: int, height: int, fps: Fraction,
                 source: VideoInfo | None = None, *, crf: int = 18,
                 preset: str = "veryfast", provenance: Mapping[str, object] | None = None
                 ) -> None:
        self.path = Path(path)
        self.width, self.height, self.fps = width, height, Fraction(fps)
        self.source = source
        self.provenance = dict(provenance or {})
        self.frames = 0
        self._mux_audio = source is not None and (source.audio_codec is not None
                                                  or not source.audio_known)
        self._video_tmp = _temp_path(self.path, ".mp4")
        self._final_tmp = _temp_path(self.path, ".mp4") if self._mux_audio else self._video_tmp
        cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}",
               "-r", str(self.fps), "-i", "-",
               "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
        if width % 2 or height % 2:  # 4:2:0 needs even sizes: drop the odd last row/column
            cmd += ["-vf", "crop=trunc(iw/2)*2:trunc(ih/2)*2:0:0"]
        if not self._mux_audio:
            cmd += self._metadata_args()
        cmd += ["-f", "mp4", str(self._video_tmp)]
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed in _cleanup)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=self._errors)
        self._closed = False
        self._pending: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=4)
        self._failure: OSError | None = None
        self._feeder = threading.Thread(target=self._feed, name="swapd-encode", daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        assert self._proc.stdin is not None
        while (frame := self._pending.get()) is not None:
            if self._failure is None:  # after a failure, keep draining so write() never blocks
                try:
                    self._proc.stdin.write(frame.data)
                except OSError as exc:  # BrokenPipeError: ffmpeg died
                    self._failure = exc

    def _stop_feeder(self) -> None:
        if self._feeder.is_alive():
            self._pending.put(None)
            self._feeder.join()

    def _fail(self) -> EncodeError:
        self._stop_feeder()
        self._proc.wait()
        return EncodeError(self.path, f"ffmpeg stopped: {_tail(self._errors)}")

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) BGR uint8 frame."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 ({self.height}, {self.width}, 3), "
                             f"got {frame.dtype} {frame.shape}")
        if self._failure is not None:
            raise self._fail() from self._failure
        self._pending.put(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> Path:
        """Finish encoding, add the audio and metadata, and move the file into place."""
        if self._closed:
            return self.path
        try:
            self._stop_feeder()
            if self._failure is not None:
                raise self._fail() from self._failure
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            if self._proc.wait() != 0:
                raise EncodeError(self.path, f"ffmpeg (libx264) failed: {_tail(self._errors)}")
            if self.frames == 0:
                raise EncodeError(self.path, "no frames were written")
            if self._mux_audio:
                self._mux()
            os.replace(self._final_tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._cleanup()
        return self.path

    def _mux(self) -> None:
        assert self.source is not None
        codec = self.source.audio_codec
        audio = ["copy"] if codec in MP4_AUDIO_CODECS else ["aac", "-b:a", "192k"]
        length = float(self.frames / self.fps)
        cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y",
               "-i", str(self._video_tmp), "-t", f"{length:.6f}", "-i", str(self.source.path),
               "-map", "0:v:0", "-map", "1:a:0?", "-c:v", "copy", "-c:a", *audio,
               *self._metadata_args(), "-f", "mp4", str(self._final_tmp)]
        _run(cmd, self.path)

    def _metadata_args(self) -> list[str]:
        # Provenance tags plus faststart: provenance owns -movflags (ffmpeg keeps only one).
        return ffmpeg_metadata_args(".mp4", self.provenance, movflags=("faststart",))

    def abort(self) -> None:
        """Stop ffmpeg and delete every temp file; ``path`` is left untouched."""
        if self._proc.poll() is None:
            self._proc.kill()  # also unblocks a feeder stuck writing to the pipe
            self._proc.wait()
        self._stop_feeder()
        self._closed = True
        self._cleanup()

    def _cleanup(self) -> None:
        with contextlib.suppress(OSError):
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        for tmp in {self._video_tmp, self._final_tmp}:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._errors.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

"""Video out through an ffmpeg pipe: H.264, H.265 or VP9 in MP4 + the source's audio, marked as
synthetic media.

Frames come in as decoded by :func:`swapd.media.read_frames` (raw BGR).
Writing pipes frames to the encoder (yuv420p) in a hidden temp file in the output folder. A
source with a variable frame rate keeps every frame's timestamp: a raw pipe carries none, so
a filter script sets each frame's pts from the source's list (``setpts`` over a balanced tree
of ``if(lt(N,k),...)``, evaluated in log n steps per frame) in the source's time base. When the
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
import re
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path

import numpy as np

from swapd.errors import FileProblem
from swapd.fsutil import durable_replace
from swapd.media import STDERR_TAIL, FrameTimes, VideoInfo, ffmpeg_exe, stderr_tail
from swapd.merger.c2pa_credentials import SigningCredentials
from swapd.merger.content_credentials import sign_file
from swapd.merger.metadata_tag import ffmpeg_metadata_args

log = logging.getLogger(__name__)

# Audio codecs ffmpeg's mp4 muxer takes as they are; anything else is re-encoded to AAC.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus"})
CODECS = ("h264", "h265", "vp9")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow")
# libvpx has no presets: its speed (-cpu-used, 0 slowest .. 8 fastest) stands in for them.
_VP9_SPEED = dict(zip(X264_PRESETS, (8, 8, 6, 5, 4, 3, 2, 1, 0), strict=True))


def encoder_args(codec: str, crf: int, preset: str) -> list[str]:
    """ffmpeg's video encoder options for ``codec`` at quality ``crf`` and speed ``preset``."""
    if codec == "h264":
        return ["-c:v", "libx264", "-preset", preset, "-crf", str(crf)]
    if codec == "h265":  # hvc1: the tag Apple's players need; x265's own log kept quiet
        return ["-c:v", "libx265", "-preset", preset, "-crf", str(crf), "-tag:v", "hvc1",
                "-x265-params", "log-level=error"]
    if codec == "vp9":
        return ["-c:v", "libvpx-vp9", "-crf", str(crf), "-b:v", "0", "-deadline", "good",
                "-cpu-used", str(_VP9_SPEED[preset]), "-row-mt", "1"]
    raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")


def _pts_expression(pts: tuple[int, ...]) -> str:
    """``setpts`` expression giving frame N the timestamp ``pts[N]`` (frames past the list
    continue at its last step, so a decoder that yields one more frame still gets rising pts)."""
    step = pts[-1] - pts[-2] if len(pts) > 1 else 1

    def tree(lo: int, hi: int) -> str:
        if hi - lo == 1:
            return str(pts[lo]) if lo < len(pts) - 1 else f"({pts[lo]}+(N-{lo})*{step})"
        mid = (lo + hi) // 2
        return f"if(lt(N,{mid}),{tree(lo, mid)},{tree(mid, hi)})"

    return tree(0, len(pts))


class EncodeError(FileProblem, RuntimeError):
    """ffmpeg failed while writing an output file."""


def _temp_path(final: Path, suffix: str) -> Path:
    return final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}.part{suffix}")


# A merge's temp files (videos here, images in merge.py): ".<output stem>.<8 hex>.part.<ext>",
# and the temp files fsutil.atomic_path makes beside one while tagging or signing it in place
# (".<that name>.<mkstemp's 8 characters><suffix>").
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.part\.[A-Za-z0-9]+(?:\.[a-z0-9_]{8}\.[A-Za-z0-9]+)?")


def remove_temp_files(folder: str | os.PathLike[str]) -> int:
    """Delete the temp files that merges killed mid-write left in an output folder (none is
    ever a finished output); how many went. Call it only while no merge writes there."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if _TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed


def _run(cmd: list[str], output: Path) -> None:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    if proc.returncode != 0:
        text = proc.stderr.decode("utf-8", "replace").strip()[-STDERR_TAIL:]
        raise EncodeError(output, f"ffmpeg failed (exit {proc.returncode}): {text}")


class VideoWriter:
    """Encode frames to ``path`` (an MP4 of ``codec``) with the audio of ``source``, at the
    source's timestamps ``times`` when they vary (else at ``fps``); atomic on close.

    Use as a context manager: leaving it by an exception (or :meth:`abort`) removes every temp
    file and leaves ``path`` as it was.  Frames are handed to ffmpeg by a background thread, so
    encoding overlaps the caller's work; a frame must not be changed after :meth:`write`.
    """

    def __init__(self, path: str | os.PathLike[str], width: int, height: int, fps: Fraction,
                 source: VideoInfo | None = None, *, crf: int = 18,
                 preset: str = "veryfast", provenance: Mapping[str, object] | None = None,
                 codec: str = "h264", times: FrameTimes | None = None,
                 credentials: SigningCredentials | None = None) -> None:
        self.path = Path(path)
        self.times = times if times is not None and times.variable else None
        self.width, self.height, self.fps = width, height, Fraction(fps)
        self.source = source
        self.codec = codec
        self.provenance = dict(provenance or {})
        self.credentials = credentials  # C2PA: signed last, once the file's bytes are final
        self.frames = 0
        self._mux_audio = source is not None and (source.audio_codec is not None
                                                  or not source.audio_known)
        self._video_tmp = _temp_path(self.path, ".mp4")
        self._final_tmp = _temp_path(self.path, ".mp4") if self._mux_audio else self._video_tmp
        cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}",
               "-r", str(self.fps), "-i", "-",
               *encoder_args(codec, crf, preset), "-pix_fmt", "yuv420p"]
        filters = []
        if width % 2 or height % 2:  # 4:2:0 needs even sizes: drop the odd last row/column
            filters.append("crop=trunc(iw/2)*2:trunc(ih/2)*2:0:0")
        self._script: Path | None = None
        if self.times is not None:
            tb = self.times.time_base
            filters += [f"settb={tb}", f"setpts='{_pts_expression(self.times.pts)}'"]
            # No B-frames: MP4 then stores each frame's time as it is (decode = presentation
            # order), and the last frame's duration (only the last packet's counts) ends the
            # track where the source's ends. Costs a little size, for such sources only.
            last = self.times.end - self.times.pts[-1]
            no_bframes = [] if codec == "vp9" else ["-bf", "0"]
            cmd += ["-fps_mode", "passthrough", "-enc_time_base:v", str(tb), *no_bframes,
                    "-bsf:v", f"setts=duration={last}",
                    "-video_track_timescale", str(tb.denominator)]
        if len(filters) > 1 or self.times is not None:  # a long expression: from a file
            self._script = _temp_path(self.path, ".txt")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._script.write_text(",".join(filters), encoding="utf-8")
            cmd += ["-filter_script:v", str(self._script)]
        elif filters:
            cmd += ["-vf", filters[0]]
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
        return EncodeError(self.path, f"ffmpeg stopped: {stderr_tail(self._errors)}")

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
                raise EncodeError(self.path,
                                  f"ffmpeg ({self.codec}) failed: {stderr_tail(self._errors)}")
            if self.frames == 0:
                raise EncodeError(self.path, "no frames were written")
            if self._mux_audio:
                self._mux()
            if self.credentials is not None:
                sign_file(self._final_tmp, self.source.path if self.source else None,
                          self.credentials, title=self.path.name)
            durable_replace(self._final_tmp, self.path)
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
        if self.times is not None and self.frames == len(self.times.pts):
            length = self.times.duration  # the source's own length, last frame included
        else:
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
        for tmp in {self._video_tmp, self._final_tmp, self._script}:
            if tmp is None:
                continue
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

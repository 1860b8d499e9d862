"""Which frames of a video ``swapd verify`` reads for the watermark: up to
:data:`MAX_VIDEO_FRAMES` frames (a short video's spread over all of it, decoded straight
through by OpenCV; a long or large one's a window of consecutive frames from its middle,
decoded by ffmpeg) and, apart, up to as many keyframes spread over the file (a re-encode codes
the mark afresh in its keyframes only). Frames come as coded: a rotation tag is not applied
(:func:`video_turn` says how a player turns them).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from swapd.media import MediaToolMissing, UnreadableMediaError, display_turn, ffmpeg_exe

MAX_VIDEO_FRAMES = 60
# Decoding a whole video with OpenCV is fine up to about this many pixels (900 frames of
# 640x360, a second or two); past it a window of frames is decoded by ffmpeg (or, without
# ffprobe, frames are seeked).
_SEQUENTIAL_PIXEL_BUDGET = 900 * 640 * 360
_SEQUENTIAL_FRAME_LIMIT = 900


def video_turn(probe: dict | None) -> int:
    """Degrees counter-clockwise a player turns the first video stream's frames."""
    for stream in (probe or {}).get("streams", []):
        if stream.get("codec_type") == "video" and not stream.get("disposition", {}).get(
                "attached_pic"):  # cover art is no frame of the video
            return display_turn(stream)
    return 0


def _frame_count(cap: cv2.VideoCapture, probe: dict | None) -> int:
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if n > 0 or not probe:
        return n
    for stream in probe.get("streams", []):
        if stream.get("codec_type") == "video" and str(stream.get("nb_frames", "")).isdigit():
            return int(stream["nb_frames"])
    return 0


def _video_geometry(probe: dict | None) -> tuple[int, int, float] | None:
    """(width, height, duration s) of the first video stream, if ffprobe told us."""
    if not probe:
        return None
    for stream in probe.get("streams", []):
        if stream.get("codec_type") == "video":
            try:
                duration = float(stream.get("duration") or probe["format"]["duration"])
                width, height = int(stream["width"]), int(stream["height"])
            except (KeyError, TypeError, ValueError):
                return None
            # a hostile header's zero size would read zero-byte frames without end
            return (width, height, duration) if width > 0 and height > 0 else None
    return None


def _keyframes(
    path: Path, width: int, height: int, duration: float, max_frames: int
) -> Iterator[np.ndarray]:
    """Up to *max_frames* keyframes spread over the file, decoded by ffmpeg.

    Only keyframes are decoded (``-skip_frame nokey``), so a long video costs about as
    much as *max_frames* frame decodes; keyframes also carry the cleanest watermark.
    """
    step = max(duration / max_frames, 0.001)
    spread = f"select='isnan(prev_selected_t)+gte(t-prev_selected_t\\,{step:.3f})'"
    return _decoded(path, width, height, ["-skip_frame", "nokey"], ["-vf", spread], max_frames)


def _window(
    path: Path, width: int, height: int, duration: float, max_frames: int
) -> Iterator[np.ndarray]:
    """Up to *max_frames* consecutive frames from the keyframe at or before the middle of the
    file, decoded by ffmpeg: a long video's frames cost *max_frames* decodes (and those up to
    the first), yet pool as many frames as a short video's do (its few keyframes alone left
    a 12 s clip, rotated and re-encoded, 2 over the threshold; these frames, 14)."""
    start = ["-ss", f"{duration / 2:.3f}", "-noaccurate_seek"] if duration > 0 else []
    return _decoded(path, width, height, start, [], max_frames)


def _decoded(path: Path, width: int, height: int, before_input: list[str],
             after_input: list[str], max_frames: int) -> Iterator[np.ndarray]:
    """Frames of *path*'s first video stream as ffmpeg decodes them with these options, as
    coded (no rotation); an UnreadableMediaError when it gives none and fails."""
    cmd = [
        ffmpeg_exe(), "-nostdin", "-v", "error", "-noautorotate", *before_input,
        "-i", str(path),
        "-map", "0:v:0", *after_input, "-fps_mode", "passthrough", "-frames:v", str(max_frames),
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-",
    ]  # fmt: skip
    frame_bytes = width * height * 3
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=errors)
        assert proc.stdout is not None
        produced = 0
        try:
            while len(data := proc.stdout.read(frame_bytes)) == frame_bytes:
                produced += 1
                yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
        finally:
            proc.stdout.close()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if produced == 0 and proc.returncode != 0:
            errors.seek(0)
            lines = errors.read().decode("utf-8", "replace").strip().splitlines()
            reason = lines[-1] if lines else f"ffmpeg exit status {proc.returncode}"
            raise UnreadableMediaError(path, f"cannot decode its video ({reason})")


def sample_video_frames(
    path: str | os.PathLike[str], max_frames: int = MAX_VIDEO_FRAMES, probe: dict | None = None
) -> Iterator[np.ndarray]:
    """Yield up to *max_frames* BGR frames of the video.

    Short videos are decoded straight through with OpenCV, keeping every n-th frame (spread
    evenly over the whole video); long or large ones (with ffprobe data in *probe*) give a
    window of consecutive frames from their middle, decoded by ffmpeg (their keyframes,
    spread over the whole file, are :func:`sample_keyframes`' part).
    """
    p = Path(path)
    cap = _open_coded(p)
    if not cap.isOpened():
        raise UnreadableMediaError(p, "OpenCV cannot open it as a video")
    try:
        total = _frame_count(cap, probe)
        geometry = _video_geometry(probe)
        if _too_large_to_decode_through(total, geometry):
            assert geometry is not None
            cap.release()
            yield from _window(p, *geometry, max_frames)
            return
        if total <= 0:  # unknown length: take the first frames
            for _ in range(max_frames):
                ok, frame = cap.read()
                if not ok:
                    return
                yield frame
            return
        wanted = sorted({int(round(i)) for i in np.linspace(0, total - 1, min(max_frames, total))})
        if total <= _SEQUENTIAL_FRAME_LIMIT:
            targets = set(wanted)
            for index in range(wanted[-1] + 1):
                if not cap.grab():
                    return  # the container over-reported its length
                if index in targets:
                    ok, frame = cap.retrieve()
                    if ok:
                        yield frame
        else:  # long, and no ffprobe: seek (slow with long GOPs, but bounded)
            for index in wanted:
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                ok, frame = cap.read()
                if ok:
                    yield frame
    finally:
        cap.release()


def _open_coded(path: Path) -> cv2.VideoCapture:
    """*path* opened by OpenCV with its frames as coded: a rotation tag is not applied (the
    mark is in the coded pixels, which a tag added to a copy does not turn; and ffmpeg's
    keyframe decode, ``-noautorotate``, sees them so too)."""
    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
    return cap


def _too_large_to_decode_through(total: int, geometry: tuple[int, int, float] | None) -> bool:
    """Is a video of *total* frames (and ffprobe's *geometry*) too large for
    :func:`sample_video_frames` to decode straight through (it decodes a window)?"""
    return geometry is not None and total * geometry[0] * geometry[1] > _SEQUENTIAL_PIXEL_BUDGET


def sample_keyframes(
    path: str | os.PathLike[str], max_frames: int = MAX_VIDEO_FRAMES, probe: dict | None = None
) -> Iterator[np.ndarray]:
    """Yield up to *max_frames* keyframes of a video, decoded apart from the frames
    :func:`sample_video_frames` yields (the watermark's keyframe pooling: a re-encode codes
    the mark afresh in its keyframes only, and every re-encode starts with one).

    Nothing when ffmpeg cannot decode them: the frames are evidence enough.
    """
    p = Path(path)
    cap = _open_coded(p)
    try:
        geometry = _video_geometry(probe)
        if geometry is None:
            total = _frame_count(cap, probe)
            fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
            width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
            height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
            if width <= 0 or height <= 0:
                return
            geometry = (width, height, total / fps if fps > 0 and total > 0 else 1.0)
    finally:
        cap.release()
    try:
        yield from _keyframes(p, *geometry, max_frames)
    except (UnreadableMediaError, MediaToolMissing, OSError):
        return

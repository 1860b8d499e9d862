"""Locating ffmpeg/ffprobe and probing media files.

Every module that shells out to ffmpeg goes through :func:`ffmpeg_exe` so there is one
place that decides which binary is used and one clear error when there is none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

from swapd.errors import FileProblem

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}

_PROBE_TIMEOUT_S = 30


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

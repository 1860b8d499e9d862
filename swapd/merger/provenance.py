"""Provenance of merged output: a metadata tag, and verification of tag + watermark.

Every image or video swapd writes says it is synthetic in two independent ways:

* a metadata tag: a PNG ``iTXt`` chunk or a JPEG ``COM`` segment with keyword
  ``swapd-provenance``, or container tags in a video (``comment``, ``description`` and a
  ``swapd_provenance`` key), each carrying a small JSON payload;
* the invisible luminance watermark of :mod:`swapd.merger.watermark`, which survives
  re-encoding that strips metadata.

:func:`verify_file` reports both; a file counts as marked when either is found.
The tag is inserted into the already written file's bytes (no re-encode of the pixels)
and written atomically: temp file in the same folder, fsync, ``os.replace``.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from swapd import __version__
from swapd.fsutil import atomic_path, atomic_write_bytes
from swapd.media import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    UnreadableMediaError,
    ffmpeg_exe,
    ffprobe_exe,
    probe_media,
)
from swapd.merger import watermark
from swapd.merger.watermark import WatermarkEvidence

PROVENANCE_TEXT = "synthetic media: face-swapped by swapd"
TAG_KEYWORD = "swapd-provenance"
VIDEO_TAG_KEY = "swapd_provenance"
# IPTC NewsCodes digital source type for AI-generated media.
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MAX_VIDEO_FRAMES = 60
# Decoding a whole video with OpenCV is fine up to about this many pixels (900 frames of
# 640x360, a second or two); past it only keyframes are decoded (or, without ffprobe, seeked).
_SEQUENTIAL_PIXEL_BUDGET = 900 * 640 * 360
_SEQUENTIAL_FRAME_LIMIT = 900
_FFMPEG_TIMEOUT_S = 600

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
_JPEG_COM = 0xFE
_JPEG_SOS = 0xDA
_COM_PREFIX = TAG_KEYWORD.encode("ascii") + b"\0"
_MP4_LIKE = {".mp4", ".mov", ".m4v"}


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify_file` found in one file."""

    path: str
    kind: str  # "image" | "video"
    metadata_tag: bool
    metadata: dict | None
    watermark: WatermarkEvidence
    marked: bool

    def to_dict(self) -> dict:
        """Plain JSON-serialisable form."""
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)


def provenance_payload(extra: Mapping[str, object] | None = None) -> dict:
    """The JSON payload of the tag; *extra* (e.g. job, model) is added under its own keys."""
    payload: dict = {
        "provenance": PROVENANCE_TEXT,
        "tool": "swapd",
        "version": __version__,
        "synthetic": True,
        "digital_source_type": DIGITAL_SOURCE_TYPE,
        "watermark": watermark.SCHEME,
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    if extra:
        payload.update({k: v for k, v in extra.items() if k not in payload})
    return payload


def _payload_json(extra: Mapping[str, object] | None) -> str:
    return json.dumps(provenance_payload(extra), separators=(",", ":"), sort_keys=True)


def ffmpeg_metadata_args(
    suffix: str = ".mp4",
    extra: Mapping[str, object] | None = None,
    movflags: tuple[str, ...] = (),
) -> list[str]:
    """ffmpeg output options that make a video carry the provenance tag.

    For mp4/mov/m4v this includes ``-movflags +use_metadata_tags`` (needed for the custom
    ``swapd_provenance`` key), merged with *movflags* (e.g. ``("faststart",)``): callers
    must not pass another ``-movflags``, since ffmpeg keeps only the last one.
    """
    payload = _payload_json(extra)
    args = [
        "-metadata", f"comment={PROVENANCE_TEXT}",
        "-metadata", f"description={payload}",
        "-metadata", f"{VIDEO_TAG_KEY}={payload}",
    ]  # fmt: skip
    if suffix.lower() in _MP4_LIKE:
        flags = ["use_metadata_tags", *(f.lstrip("+") for f in movflags)]
        args += ["-movflags", "".join(f"+{f}" for f in flags)]
    return args


# --- PNG --------------------------------------------------------------------------------


def _png_chunks(path: Path, data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of every chunk; raises UnreadableMediaError on a malformed file."""
    if not data.startswith(_PNG_SIGNATURE):
        raise UnreadableMediaError(path, "not a PNG file (bad signature)")
    chunks: list[tuple[bytes, bytes]] = []
    pos = len(_PNG_SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise UnreadableMediaError(path, f"truncated PNG chunk header at byte {pos}")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise UnreadableMediaError(path, f"truncated PNG chunk {ctype!r} at byte {pos}")
        chunks.append((ctype, data[pos + 8 : pos + 8 + length]))
        pos = end
        if ctype == b"IEND":
            break
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise UnreadableMediaError(path, "PNG lacks its IHDR or IEND chunk")
    return chunks


def _png_chunk_bytes(ctype: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(ctype + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", crc)


def _itxt_keyword(body: bytes) -> bytes:
    return body.split(b"\0", 1)[0]


def _png_itxt_text(body: bytes) -> str | None:
    # keyword \0 compression-flag compression-method language \0 translated-keyword \0 text
    try:
        _, rest = body.split(b"\0", 1)
        flag, rest = rest[0], rest[2:]
        _, rest = rest.split(b"\0", 1)
        _, text = rest.split(b"\0", 1)
        return (zlib.decompress(text) if flag else text).decode("utf-8")
    except (ValueError, IndexError, zlib.error, UnicodeDecodeError):
        return None


def _tag_png(path: Path, data: bytes, payload: str) -> bytes:
    chunks = [
        c for c in _png_chunks(path, data)
        if not (c[0] == b"iTXt" and _itxt_keyword(c[1]) == TAG_KEYWORD.encode("ascii"))
    ]  # fmt: skip
    body = TAG_KEYWORD.encode("ascii") + b"\0\0\0" + b"\0" + b"\0" + payload.encode("utf-8")
    first_idat = next(i for i, c in enumerate(chunks) if c[0] in (b"IDAT", b"IEND"))
    chunks.insert(first_idat, (b"iTXt", body))
    return _PNG_SIGNATURE + b"".join(_png_chunk_bytes(t, b) for t, b in chunks)


def _read_png_tag(path: Path, data: bytes) -> dict | None:
    for ctype, body in _png_chunks(path, data):
        if ctype == b"iTXt" and _itxt_keyword(body) == TAG_KEYWORD.encode("ascii"):
            return _parse_payload(_png_itxt_text(body))
    return None


# --- JPEG -------------------------------------------------------------------------------


def _jpeg_segments(path: Path, data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, start, end) of each header segment from SOI up to (excluding) SOS."""
    if not data.startswith(_JPEG_SOI):
        raise UnreadableMediaError(path, "not a JPEG file (no SOI marker)")
    pos = 2
    while True:
        while data[pos : pos + 2] == b"\xff\xff":
            pos += 1  # optional fill bytes before a marker
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise UnreadableMediaError(path, f"corrupt JPEG header at byte {pos}")
        marker = data[pos + 1]
        if marker == _JPEG_SOS:
            return
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise UnreadableMediaError(path, f"truncated JPEG segment at byte {pos}")
        yield marker, pos, end
        pos = end


def _is_swapd_com(data: bytes, marker: int, start: int) -> bool:
    return marker == _JPEG_COM and data[start + 4 : start + 4 + len(_COM_PREFIX)] == _COM_PREFIX


def _tag_jpeg(path: Path, data: bytes, payload: str) -> bytes:
    body = _COM_PREFIX + payload.encode("utf-8")
    if len(body) > 0xFFFF - 2:
        raise ValueError(f"provenance payload too long for a JPEG comment ({len(body)} bytes)")
    segment = b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body
    out = bytearray(data[:2])
    inserted = False
    header_end = 2
    for marker, start, end in _jpeg_segments(path, data):
        if not inserted and not 0xE0 <= marker <= 0xEF:  # after APPn (JFIF/EXIF must lead)
            out += segment
            inserted = True
        if not _is_swapd_com(data, marker, start):
            out += data[start:end]
        header_end = end
    if not inserted:
        out += segment
    out += data[header_end:]
    return bytes(out)


def _read_jpeg_tag(path: Path, data: bytes) -> dict | None:
    for marker, start, end in _jpeg_segments(path, data):
        if _is_swapd_com(data, marker, start):
            return _parse_payload(
                data[start + 4 + len(_COM_PREFIX) : end].decode("utf-8", "replace")
            )
    return None


# --- tags: public -----------------------------------------------------------------------


def _parse_payload(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise UnreadableMediaError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise UnreadableMediaError(path, "file is empty (0 bytes)")


def _read_bytes(path: Path) -> bytes:
    _check_file(path)
    return path.read_bytes()


def tag_image(path: str | os.PathLike[str], extra: Mapping[str, object] | None = None) -> None:
    """Add (or replace) the provenance tag in a written PNG or JPEG, in place, atomically.

    The pixels are not re-encoded.  Raises :class:`UnreadableMediaError` for a missing,
    corrupt or non-PNG/JPEG file.
    """
    p = Path(path)
    data = _read_bytes(p)
    payload = _payload_json(extra)
    if data.startswith(_PNG_SIGNATURE):
        tagged = _tag_png(p, data, payload)
    elif data.startswith(_JPEG_SOI):
        tagged = _tag_jpeg(p, data, payload)
    else:
        raise UnreadableMediaError(p, "can only tag PNG or JPEG images")
    atomic_write_bytes(p, tagged, keep_mode=True)


def tag_video(path: str | os.PathLike[str], extra: Mapping[str, object] | None = None) -> None:
    """Add the provenance tag to a written video by remuxing it (streams copied), atomically.

    For videos written without ffmpeg (e.g. ``cv2.VideoWriter``); when ffmpeg writes the
    file, pass :func:`ffmpeg_metadata_args` to it instead.
    """
    p = Path(path)
    _check_file(p)
    with atomic_path(p, keep_mode=True, suffix=p.suffix) as tmp:
        cmd = [
            ffmpeg_exe(), "-y", "-v", "error", "-i", str(p), "-map", "0", "-c", "copy",
            *ffmpeg_metadata_args(p.suffix, extra), str(tmp),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_FFMPEG_TIMEOUT_S)
        if proc.returncode != 0:
            raise UnreadableMediaError(p, f"ffmpeg could not remux it: {proc.stderr.strip()}")


def _video_tags(path: Path, probe: dict | None = None) -> dict[str, str]:
    """Container-level tags, keys lower-cased (Matroska upper-cases them)."""
    if probe is None and ffprobe_exe():
        probe = probe_media(path)
    if probe is not None:
        tags = probe.get("format", {}).get("tags", {}) or {}
        return {str(k).lower(): str(v) for k, v in tags.items()}
    # No ffprobe (imageio-ffmpeg ships only ffmpeg): dump the global metadata instead.
    _check_file(path)
    cmd = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_FFMPEG_TIMEOUT_S)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["ffmpeg failed"])[-1]
        raise UnreadableMediaError(path, f"not a readable media file ({reason})")
    tags = {}
    for line in proc.stdout.splitlines():
        if "=" in line and not line.startswith((";", "[")):
            key, value = line.split("=", 1)
            tags[key.lower()] = value
    return tags


def _payload_from_video_tags(tags: Mapping[str, str]) -> dict | None:
    for key in (VIDEO_TAG_KEY, "description"):
        payload = _parse_payload(tags.get(key))
        if payload and payload.get("tool") == "swapd":
            return payload
    if tags.get("comment") == PROVENANCE_TEXT:
        return {"provenance": PROVENANCE_TEXT}
    return None


def read_metadata_tag(path: str | os.PathLike[str]) -> dict | None:
    """The provenance payload of a PNG, JPEG or video, or None if it carries no tag."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return _payload_from_video_tags(_video_tags(p))
    data = _read_bytes(p)
    if not data.startswith((_PNG_SIGNATURE, _JPEG_SOI)) and suffix not in IMAGE_SUFFIXES:
        raise UnreadableMediaError(p, f"unsupported file type {suffix or '(none)'!r}")
    return _image_tag(p, data)


def _image_tag(path: Path, data: bytes) -> dict | None:
    if data.startswith(_PNG_SIGNATURE):
        return _read_png_tag(path, data)
    if data.startswith(_JPEG_SOI):
        return _read_jpeg_tag(path, data)
    return None  # webp/bmp: swapd does not tag these


# --- verification -----------------------------------------------------------------------


def _decode_image(path: Path, data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UnreadableMediaError(path, "not a decodable image")
    return image


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
                return int(stream["width"]), int(stream["height"]), duration
            except (KeyError, TypeError, ValueError):
                return None
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
    cmd = [
        ffmpeg_exe(), "-v", "error", "-noautorotate", "-skip_frame", "nokey", "-i", str(path),
        "-map", "0:v:0", "-vf", spread, "-fps_mode", "passthrough", "-frames:v", str(max_frames),
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-",
    ]  # fmt: skip
    frame_bytes = width * height * 3
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors)
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
    """Yield up to *max_frames* BGR frames spread evenly over the whole video.

    Short videos are decoded straight through with OpenCV, keeping every n-th frame;
    long or large ones (with ffprobe data in *probe*) are sampled at keyframes by ffmpeg.
    """
    p = Path(path)
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise UnreadableMediaError(p, "OpenCV cannot open it as a video")
    try:
        total = _frame_count(cap, probe)
        geometry = _video_geometry(probe)
        if geometry is not None and total * geometry[0] * geometry[1] > _SEQUENTIAL_PIXEL_BUDGET:
            cap.release()
            yield from _keyframes(p, *geometry, max_frames)
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


class _Counting:
    """Iterator wrapper that counts the frames that went through it."""

    def __init__(self, frames: Iterator[np.ndarray]) -> None:
        self.frames = frames
        self.count = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame in self.frames:
            self.count += 1
            yield frame


def verify_file(path: str | os.PathLike[str]) -> VerifyResult:
    """Check an image or video for the swapd metadata tag and watermark.

    Raises :class:`UnreadableMediaError` for a missing, empty, corrupt or unsupported file.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        data = _read_bytes(p)
        image = _decode_image(p, data)
        metadata = _image_tag(p, data)
        evidence = watermark.detect([image])
        kind = "image"
    elif suffix in VIDEO_SUFFIXES:
        _check_file(p)
        probe = probe_media(p) if ffprobe_exe() else None
        if probe is not None and not any(
            s.get("codec_type") == "video" for s in probe.get("streams", [])
        ):
            raise UnreadableMediaError(p, "no video stream")
        metadata = _payload_from_video_tags(_video_tags(p, probe))
        frames = _Counting(sample_video_frames(p, probe=probe))
        evidence = watermark.detect(frames)
        if frames.count == 0:
            raise UnreadableMediaError(p, "no video frame could be decoded")
        kind = "video"
    else:
        supported = ", ".join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))
        raise UnreadableMediaError(
            p, f"unsupported file type {suffix or '(none)'!r} (supported: {supported})"
        )
    return VerifyResult(
        path=str(p),
        kind=kind,
        metadata_tag=metadata is not None,
        metadata=metadata,
        watermark=evidence,
        marked=metadata is not None or evidence.marked,
    )

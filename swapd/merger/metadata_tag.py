"""The provenance tag: a small JSON payload in a merged file's metadata, written and read.

A PNG ``iTXt`` chunk or a JPEG ``COM`` segment with keyword ``swapd-provenance``, or container
tags in a video (``comment``, ``description`` and a ``swapd_provenance`` key). The tag is
inserted into the already written file's bytes (no re-encode of the pixels) and written
atomically: temp file in the same folder, fsync, ``os.replace``. :mod:`swapd.merger.provenance`
verifies it together with the watermark.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import zlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

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

PROVENANCE_TEXT = "synthetic media: face-swapped by swapd"
TAG_KEYWORD = "swapd-provenance"
VIDEO_TAG_KEY = "swapd_provenance"
# IPTC NewsCodes digital source type for AI-generated media.
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
_FFMPEG_TIMEOUT_S = 600

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
_JPEG_COM = 0xFE
_JPEG_SOS = 0xDA
_COM_PREFIX = TAG_KEYWORD.encode("ascii") + b"\0"
_MP4_LIKE = {".mp4", ".mov", ".m4v"}


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
        pos = _next_marker(data, pos)
        if pos + 4 > len(data):
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


def _next_marker(data: bytes, pos: int) -> int:
    """Where the next marker starts at or after *pos*, as libjpeg finds it: stray bytes
    before it ("extraneous bytes", which some cameras and editors leave), fill 0xFFs and a
    stuffed 0xFF00 are skipped; len(data) when there is none."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0:
            return len(data)
        while data[pos + 1 : pos + 2] == b"\xff":
            pos += 1  # fill bytes
        if data[pos + 1 : pos + 2] != b"\x00":
            return pos
        pos += 2


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


def not_a_file(path: Path) -> str:
    """Why ``path``, which is not a regular file, cannot be read as one, in words."""
    if path.exists():
        return "not a regular file"  # a FIFO, a device, a folder
    return "a link to a file that does not exist" if path.is_symlink() else \
        "file does not exist"


def check_file(path: Path) -> None:
    """Raise UnreadableMediaError unless ``path`` is a non-empty file."""
    if not path.is_file():
        raise UnreadableMediaError(path, not_a_file(path))
    if path.stat().st_size == 0:
        raise UnreadableMediaError(path, "file is empty (0 bytes)")


def _read_bytes(path: Path) -> bytes:
    check_file(path)
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
    check_file(p)
    with atomic_path(p, keep_mode=True, suffix=p.suffix) as tmp:
        cmd = [
            ffmpeg_exe(), "-nostdin", "-y", "-v", "error", "-i", str(p), "-map", "0", "-c", "copy",
            *ffmpeg_metadata_args(p.suffix, extra), str(tmp),
        ]  # fmt: skip
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=_FFMPEG_TIMEOUT_S)
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
    check_file(path)
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=_FFMPEG_TIMEOUT_S)
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


def read_video_tag(path: Path, probe: dict | None = None) -> dict | None:
    """The payload among a video's container tags (ffprobe's ``probe`` when given), or None."""
    return _payload_from_video_tags(_video_tags(path, probe))


def read_metadata_tag(path: str | os.PathLike[str]) -> dict | None:
    """The provenance payload of a PNG, JPEG or video, or None if it carries no tag."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return read_video_tag(p)
    data = _read_bytes(p)
    if not data.startswith((_PNG_SIGNATURE, _JPEG_SOI)) and suffix not in IMAGE_SUFFIXES:
        raise UnreadableMediaError(p, f"unsupported file type {suffix or '(none)'!r}")
    return read_image_tag(p, data)


def read_image_tag(path: Path, data: bytes) -> dict | None:
    """The payload of an image's bytes (PNG or JPEG), or None."""
    if data.startswith(_PNG_SIGNATURE):
        return _read_png_tag(path, data)
    if data.startswith(_JPEG_SOI):
        return _read_jpeg_tag(path, data)
    return None  # webp/bmp: swapd does not tag these

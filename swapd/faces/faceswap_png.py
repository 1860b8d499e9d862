"""faceswap's aligned-face PNG format: a PNG with the face's metadata in an iTXt chunk.

faceswap (deepfakes/faceswap) stores, in one iTXt chunk with keyword ``faceswap`` placed before
the image data, the ``str()`` of a Python dict::

    {"alignments": {"x", "y", "w", "h", "landmarks_xy", "mask", "identity"},
     "source": {"alignments_version", "original_filename", "face_index", "source_filename",
                "source_is_video", "source_frame_dims"}}

`x, y, w, h` and `landmarks_xy` are in the source frame's pixels. swapd writes the same layout
(numpy arrays as lists) and adds its own extras under a top-level ``swapd`` key, which faceswap
ignores. Reading never evaluates code: the payload goes through `ast.literal_eval` and is then
checked against the expected shape; chunks are length-, CRC- and size-checked first.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from swapd.errors import FileProblem
from swapd.faces.literal import parse_literal
from swapd.fsutil import atomic_write_bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEYWORD = b"faceswap"
ALIGNMENTS_VERSION = 2.3  # faceswap's current alignments format version
MAX_META_BYTES = 8 * 1024 * 1024  # a face's metadata with a few masks is a few KiB
MAX_FILE_BYTES = 256 * 1024 * 1024  # an aligned face is a few hundred KiB at most
_MAX_CHUNK = 2**31 - 1  # the PNG spec's limit on a chunk length


class FaceFormatError(FileProblem, ValueError):
    """An aligned-face file whose structure or metadata is not what the format allows."""


@dataclass
class FaceswapMeta:
    """One aligned face's faceswap metadata (frame coordinates)."""

    x: int
    y: int
    w: int
    h: int
    landmarks_xy: np.ndarray  # Nx2 float32 (68 points normally), source frame pixels
    original_filename: str  # this aligned face's file name
    face_index: int
    source_filename: str  # the frame the face came from
    source_is_video: bool = False
    source_frame_dims: tuple[int, int] | None = None  # (height, width)
    mask: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    alignments_version: float = ALIGNMENTS_VERSION
    swapd: dict[str, Any] | None = None  # swapd's extras: centering, size, pose, ...
    extra_alignments: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept
    extra_source: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The header dict in faceswap's layout, with only plain Python values."""
        out: dict[str, Any] = {
            "alignments": {
                **self.extra_alignments,
                "x": int(self.x), "y": int(self.y), "w": int(self.w), "h": int(self.h),
                "landmarks_xy": _plain(np.asarray(self.landmarks_xy, dtype=np.float32)),
                "mask": _plain(self.mask),
                "identity": _plain(self.identity),
            },
            "source": {
                **self.extra_source,
                "alignments_version": float(self.alignments_version),
                "original_filename": str(self.original_filename),
                "face_index": int(self.face_index),
                "source_filename": str(self.source_filename),
                "source_is_video": bool(self.source_is_video),
                "source_frame_dims": (None if self.source_frame_dims is None
                                      else tuple(int(v) for v in self.source_frame_dims)),
            },
        }
        if self.swapd is not None:
            out["swapd"] = _plain(self.swapd)
        return out

    @classmethod
    def from_dict(cls, data: object, where: str = "<metadata>") -> FaceswapMeta:
        """Check a parsed header dict's shape and build the metadata; FaceFormatError if not."""
        top = _need(data, dict, where, "the faceswap header")
        align = _need(top.get("alignments"), dict, where, "'alignments'")
        source = _need(top.get("source"), dict, where, "'source'")
        box = {k: _integral(align.get(k), where, f"alignments.{k}") for k in "xywh"}
        landmarks = _landmarks(align.get("landmarks_xy"), where)
        mask = align.get("mask") or {}
        identity = align.get("identity") or {}
        _need(mask, dict, where, "alignments.mask")
        _need(identity, dict, where, "alignments.identity")
        version = source.get("alignments_version", ALIGNMENTS_VERSION)
        if isinstance(version, bool) or not isinstance(version, (int, float)):
            raise FaceFormatError(where, "source.alignments_version must be a number")
        dims = source.get("source_frame_dims")
        if dims is not None:
            if not isinstance(dims, (list, tuple)) or len(dims) != 2:
                raise FaceFormatError(where, "source.source_frame_dims must be (height, width)")
            dims = tuple(_integral(v, where, "source.source_frame_dims") for v in dims)
        is_video = source.get("source_is_video", False)
        if not isinstance(is_video, bool):
            raise FaceFormatError(where, "source.source_is_video must be True or False")
        swapd = top.get("swapd")
        if swapd is not None:
            _need(swapd, dict, where, "'swapd'")
        known_a = {"x", "y", "w", "h", "landmarks_xy", "mask", "identity"}
        known_s = {"alignments_version", "original_filename", "face_index", "source_filename",
                   "source_is_video", "source_frame_dims"}
        return cls(
            **box, landmarks_xy=landmarks,
            original_filename=_text(source.get("original_filename"), where,
                                    "source.original_filename"),
            face_index=_integral(source.get("face_index", 0), where, "source.face_index"),
            source_filename=_text(source.get("source_filename"), where, "source.source_filename"),
            source_is_video=is_video, source_frame_dims=dims,  # type: ignore[arg-type]
            mask=mask, identity=identity, alignments_version=float(version), swapd=swapd,
            extra_alignments={k: v for k, v in align.items() if k not in known_a},
            extra_source={k: v for k, v in source.items() if k not in known_s},
        )


def _plain(value: Any) -> Any:
    """numpy arrays and scalars to lists and Python numbers, recursively."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _need(value: object, kind: type, where: str, what: str) -> Any:
    if not isinstance(value, kind):
        raise FaceFormatError(where, f"{what} must be a {kind.__name__}, got "
                                     f"{type(value).__name__}")
    return value


def _integral(value: object, where: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FaceFormatError(where, f"{what} must be a whole number, got {value!r:.40}")
    if value != int(value):
        raise FaceFormatError(where, f"{what} must be a whole number, got {value!r}")
    return int(value)


def _text(value: object, where: str, what: str) -> str:
    if not isinstance(value, str):
        raise FaceFormatError(where, f"{what} must be a string, got {type(value).__name__}")
    return value


def _landmarks(value: object, where: str) -> np.ndarray:
    if not isinstance(value, (list, tuple)):
        raise FaceFormatError(where, "alignments.landmarks_xy must be a list of [x, y] points")
    try:
        points = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FaceFormatError(where, f"alignments.landmarks_xy is not numeric ({exc})") from exc
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 4:
        raise FaceFormatError(where, "alignments.landmarks_xy must be N x 2 (N >= 4), got "
                                     f"shape {points.shape}")
    if not np.isfinite(points).all():
        raise FaceFormatError(where, "alignments.landmarks_xy holds NaN or infinite values")
    return points.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# PNG chunks


def png_chunks(data: bytes, where: str = "<bytes>", verify_crc: bool = True
               ) -> list[tuple[bytes, int, int]]:
    """Walk a PNG's chunks: [(type, data start, data end)], up to and including IEND.

    Raises FaceFormatError for a bad signature, a chunk running past the end of the data, a
    CRC mismatch (when `verify_crc`), or a missing IEND (a truncated file).
    """
    if not data.startswith(PNG_SIGNATURE):
        raise FaceFormatError(where, "not a PNG file (bad signature)")
    chunks = []
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise FaceFormatError(where, "truncated PNG: no IEND chunk")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        if length > _MAX_CHUNK:
            raise FaceFormatError(where, f"PNG chunk {ctype!r} claims {length} bytes")
        start, end = pos + 8, pos + 8 + length
        if end + 4 > len(data):
            raise FaceFormatError(where, f"truncated PNG: chunk {ctype!r} runs past the end")
        if verify_crc:
            (crc,) = struct.unpack(">I", data[end:end + 4])
            if zlib.crc32(data[start:end], zlib.crc32(ctype)) & 0xFFFFFFFF != crc:
                raise FaceFormatError(where, f"corrupt PNG: CRC mismatch in chunk {ctype!r}")
        chunks.append((ctype, start, end))
        pos = end + 4
        if ctype == b"IEND":
            return chunks


# IHDR colour types whose pixel layout is read as stored (grey, RGB, RGBA): samples per pixel.
_SAMPLES = {0: 1, 2: 3, 6: 4}
_CRITICAL_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}


def png_pixel_check(data: bytes, chunks: list[tuple[bytes, int, int]], where: str
                    ) -> tuple[int, int, int] | None:
    """Prove a PNG's image data decodes, without decoding it: (width, height, channels).

    The chunk CRCs (checked by png_chunks), the zlib stream's own checksum, its exact length
    and a valid filter type on every row are everything a PNG decoder can fail on; checking
    them costs half of a decode. Returns None for the layouts this does not cover (palette,
    grey+alpha, transparency chunks, interlacing, bit depths other than 8/16): decode those.
    Raises FaceFormatError for data that cannot decode.
    """
    types = [ctype for ctype, _, _ in chunks]
    if types[0] != b"IHDR" or types.count(b"IHDR") != 1 or chunks[0][2] - chunks[0][1] != 13:
        raise FaceFormatError(where, "corrupt PNG: the first chunk is not one valid IHDR")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", data[chunks[0][1]:chunks[0][2]])
    if width == 0 or height == 0:
        raise FaceFormatError(where, f"corrupt PNG: image size {width}x{height}")
    if compression or filtering:
        raise FaceFormatError(where, f"corrupt PNG: unknown compression ({compression}) or "
                                     f"filter method ({filtering})")
    unknown = sorted({t.decode("latin-1") for t in types
                      if t[:1].isupper() and t not in _CRITICAL_CHUNKS})
    if unknown:  # a decoder must refuse a critical chunk it does not know
        raise FaceFormatError(where, f"corrupt PNG: unknown critical chunk {', '.join(unknown)}")
    idat = [i for i, t in enumerate(types) if t == b"IDAT"]
    if not idat or idat[-1] - idat[0] != len(idat) - 1:
        raise FaceFormatError(where, "corrupt PNG: the image data chunks are missing or not "
                                     "consecutive")
    samples = _SAMPLES.get(colour)
    if width != height:  # refused as not square anyway: no need to inflate anything
        return width, height, samples or 3
    if samples is None or depth not in (8, 16) or interlace or b"tRNS" in types:
        return None
    row = 1 + width * samples * depth // 8
    expected = row * height
    if expected > MAX_FILE_BYTES:
        raise FaceFormatError(where, f"PNG claims {width}x{height} pixels, too large for a face")
    stream = b"".join(data[s:e] for ctype, s, e in chunks if ctype == b"IDAT")
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(stream, expected + 1)
    except zlib.error as exc:
        raise FaceFormatError(where, f"corrupt PNG: the image data does not inflate ({exc})"
                              ) from exc
    if len(raw) < expected or not inflater.eof:
        raise FaceFormatError(where, f"truncated PNG: the image data ends after {len(raw)} of "
                                     f"{expected} bytes")
    if len(raw) > expected or inflater.unconsumed_tail:
        raise FaceFormatError(where, "corrupt PNG: more image data than the image size holds")
    if np.frombuffer(raw, np.uint8)[::row].max() > 4:
        raise FaceFormatError(where, "corrupt PNG: a row has an unknown filter type")
    return width, height, samples


def _itxt_chunk(keyword: bytes, text: bytes) -> bytes:
    # keyword, NUL, compression flag 0, method 0, empty language tag + NUL, empty
    # translated keyword + NUL, then the text: the layout faceswap writes and reads.
    body = keyword + b"\0" + b"\0\0" + b"\0" + b"\0" + text
    crc = zlib.crc32(body, zlib.crc32(b"iTXt")) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", crc)


def _parse_itxt(body: bytes, where: str) -> tuple[bytes, bytes]:
    """Keyword and (decompressed) text of an iTXt chunk body."""
    keyword, sep, rest = body.partition(b"\0")
    if not sep or len(rest) < 2:
        raise FaceFormatError(where, "malformed iTXt chunk")
    flag, method, rest = rest[0], rest[1], rest[2:]
    _language, sep1, rest = rest.partition(b"\0")
    _translated, sep2, text = rest.partition(b"\0")
    if not (sep1 and sep2):
        raise FaceFormatError(where, "malformed iTXt chunk")
    if flag == 1:
        if method != 0:
            raise FaceFormatError(where, f"iTXt compression method {method} is not zlib")
        inflater = zlib.decompressobj()
        try:
            text = inflater.decompress(text, MAX_META_BYTES + 1)
        except zlib.error as exc:
            raise FaceFormatError(where, f"corrupt compressed iTXt chunk ({exc})") from exc
        if len(text) > MAX_META_BYTES or inflater.unconsumed_tail:
            raise FaceFormatError(where, f"iTXt text exceeds {MAX_META_BYTES} bytes")
    elif flag != 0:
        raise FaceFormatError(where, f"bad iTXt compression flag {flag}")
    return keyword, text


def encode_aligned_png(image: np.ndarray, meta: FaceswapMeta | dict[str, Any]) -> bytes:
    """PNG bytes of `image` with the faceswap header chunk placed before the image data."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"cannot encode an image of shape {image.shape} as PNG")
    png = buf.tobytes()
    header = meta.to_dict() if isinstance(meta, FaceswapMeta) else _plain(meta)
    text = str(header).encode("utf-8")
    if len(text) > MAX_META_BYTES:
        raise ValueError(f"faceswap header is {len(text)} bytes, over {MAX_META_BYTES}")
    chunks = png_chunks(png, "<encoded>", verify_crc=False)
    idat = next(start - 8 for ctype, start, _ in chunks if ctype == b"IDAT")
    return png[:idat] + _itxt_chunk(KEYWORD, text) + png[idat:]


def write_aligned_png(path: str | os.PathLike[str], image: np.ndarray,
                      meta: FaceswapMeta | dict[str, Any], durable: bool = True) -> Path:
    """Atomically write an aligned face as a faceswap-format PNG; returns the path.

    `durable=False` skips the fsync (still atomic): for bulk-generated files that can be
    regenerated, where an fsync per file would dominate the time.
    """
    data = encode_aligned_png(image, meta)
    return atomic_write_bytes(path, data, durable=durable)


def _read_capped(path: Path) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FaceFormatError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if size > MAX_FILE_BYTES:
        raise FaceFormatError(path, f"file is {size} bytes, over the {MAX_FILE_BYTES} limit")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FaceFormatError(path, f"cannot read file ({exc.strerror or exc})") from exc


def read_faceswap_header(source: str | os.PathLike[str] | bytes, where: str | None = None,
                         chunks: list[tuple[bytes, int, int]] | None = None
                         ) -> dict[str, Any] | None:
    """The raw faceswap header dict of a PNG (path or bytes), or None when it has none.

    ``chunks``: the data's chunks when the caller has already walked them (see png_chunks).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, where = bytes(source), where or "<bytes>"
    else:
        data, where = _read_capped(Path(source)), where or str(source)
    for ctype, start, end in chunks if chunks is not None else png_chunks(data, where):
        if ctype != b"iTXt":
            continue
        if end - start > MAX_META_BYTES:
            raise FaceFormatError(where, f"iTXt chunk of {end - start} bytes is over the "
                                         f"{MAX_META_BYTES} limit")
        keyword, text = _parse_itxt(data[start:end], where)
        if keyword != KEYWORD:
            continue
        return _literal(text, where)
    return None


def _literal(text: bytes, where: str) -> dict[str, Any]:
    try:
        source = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FaceFormatError(where, f"faceswap header is not UTF-8 ({exc.reason})") from exc
    try:
        # Only literals are built (no names, calls or attributes), so a crafted header cannot
        # run code; deep nesting surfaces as RecursionError/MemoryError.
        value = parse_literal(source)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as exc:
        raise FaceFormatError(where, "faceswap header is not a plain Python literal "
                                     f"({type(exc).__name__}: {str(exc)[:80]})") from exc
    if not isinstance(value, dict):
        raise FaceFormatError(where, f"faceswap header is a {type(value).__name__}, not a dict")
    return value


def read_faceswap_meta(source: str | os.PathLike[str] | bytes) -> FaceswapMeta | None:
    """The faceswap metadata of an aligned PNG (path or bytes), or None when it has none.

    Raises FaceFormatError for a file that is not a well-formed PNG or whose header is not the
    expected dict.
    """
    where = "<bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    header = read_faceswap_header(source, where)
    return None if header is None else FaceswapMeta.from_dict(header, where)


def read_aligned_png(path: str | os.PathLike[str]) -> tuple[np.ndarray, FaceswapMeta | None]:
    """Image (as stored: BGR, BGRA or grayscale) and faceswap metadata of an aligned PNG."""
    data = _read_capped(Path(path))
    header = read_faceswap_header(data, str(path))
    meta = None if header is None else FaceswapMeta.from_dict(header, str(path))
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FaceFormatError(path, "the PNG image data cannot be decoded")
    return image, meta

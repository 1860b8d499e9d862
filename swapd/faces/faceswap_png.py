"""faceswap's aligned-face PNG format: a PNG with the face's metadata in an iTXt chunk.

faceswap (deepfakes/faceswap, ``lib/image.py`` and ``lib/align/objects.py``) stores, in one
iTXt chunk with keyword ``faceswap`` placed before the image data, the ``str()`` of a Python
dict with exactly the keys of its ``PNGHeader`` dataclasses::

    {"alignments": {"x", "y", "w", "h", "landmarks_xy", "mask", "identity"},
     "source": {"alignments_version", "original_filename", "face_index", "source_filename",
                "source_is_video", "source_frame_dims"}}

`x, y, w, h` and `landmarks_xy` are in the source frame's pixels. faceswap's reader
(``PNGHeader.from_dict``) refuses any other key, so swapd writes that chunk with those keys
only and keeps its own extras (centering, size, pose, aligned landmarks...) as JSON in a second
iTXt chunk with keyword ``swapd``, placed after the image data: faceswap's reader skips it, and
faceswap's header rewrite (``update_existing_metadata``) copies what follows the image data as
it is (an iTXt chunk of another keyword before it would lose its length and type there). Faces
written before that kept the extras under a top-level ``swapd`` key; they still read.

Reading never evaluates code: the payload goes through `ast.literal_eval` (or the equivalent
fast path of :mod:`swapd.faces.literal`), the swapd chunk through ``json``, and both are then
checked against the expected shape; chunks are length-, CRC- and size-checked first.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from swapd.faces.literal import parse_literal
from swapd.faces.png_chunks import (
    MAX_FILE_BYTES,
    MAX_META_BYTES,
    PNG_SIGNATURE,
    FaceFormatError,
    itxt_chunk,
    parse_itxt,
    png_chunks,
    png_pixel_check,
    read_capped,
)
from swapd.fsutil import atomic_write_bytes

__all__ = ["ALIGNMENTS_VERSION", "KEYWORD", "MAX_FILE_BYTES", "MAX_META_BYTES", "PNG_SIGNATURE",
           "SWAPD_KEYWORD", "FaceFormatError", "FaceswapMeta", "encode_aligned_png",
           "meta_from_png", "png_chunks", "png_pixel_check", "read_aligned_png",
           "read_faceswap_header", "read_faceswap_meta", "read_headers", "write_aligned_png"]

KEYWORD = b"faceswap"
SWAPD_KEYWORD = b"swapd"
ALIGNMENTS_VERSION = 2.4  # faceswap's alignments version (lib/align/alignments.py _VERSION)
# The landmark shapes faceswap's LandmarkType.from_shape accepts (lib/align/constants.py).
FACESWAP_LANDMARK_SHAPES = ((4, 2), (51, 2), (68, 2), (98, 2), (26, 3))


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
    # swapd's extras (centering, size, pose, aligned landmarks...): the ``swapd`` chunk
    swapd: dict[str, Any] | None = None
    extra_alignments: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept
    extra_source: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``faceswap`` chunk's dict: faceswap's ``PNGHeader`` layout, in its key order,
        with only plain Python values (swapd's extras are not in it: see :attr:`swapd`)."""
        return {
            "alignments": {
                "x": int(self.x), "y": int(self.y), "w": int(self.w), "h": int(self.h),
                "landmarks_xy": _plain(np.asarray(self.landmarks_xy, dtype=np.float32)),
                "mask": _plain(self.mask),
                "identity": _plain(self.identity),
                **self.extra_alignments,
            },
            "source": {
                "alignments_version": float(self.alignments_version),
                "original_filename": str(self.original_filename),
                "face_index": int(self.face_index),
                "source_filename": str(self.source_filename),
                "source_is_video": bool(self.source_is_video),
                "source_frame_dims": (None if self.source_frame_dims is None
                                      else tuple(int(v) for v in self.source_frame_dims)),
                **self.extra_source,
            },
        }

    def check_for_faceswap(self) -> None:
        """ValueError unless faceswap can read these landmarks (its ``LandmarkType`` shapes;
        swapd writes 68: see :func:`swapd.faces.faceswap_align.landmarks_68`)."""
        shape = np.asarray(self.landmarks_xy).shape
        if shape not in FACESWAP_LANDMARK_SHAPES:
            raise ValueError(f"faceswap reads landmarks of shape "
                             f"{', '.join(map(str, FACESWAP_LANDMARK_SHAPES))}, not {shape}: "
                             "fit 68 points first (swapd.faces.faceswap_align.landmarks_68)")

    @classmethod
    def from_dict(cls, data: object, where: str = "<metadata>",
                  swapd: dict[str, Any] | None = None) -> FaceswapMeta:
        """Check a parsed header dict's shape and build the metadata; FaceFormatError if not.
        ``swapd``: the swapd chunk's dict, when the file has one (else a top-level ``swapd``
        key, as swapd wrote before the chunk, is read)."""
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
        if swapd is None:
            swapd = top.get("swapd")
        if swapd is not None:
            _need(swapd, dict, where, "the swapd extras")
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


def encode_aligned_png(image: np.ndarray, meta: FaceswapMeta | dict[str, Any]) -> bytes:
    """PNG bytes of `image` with the ``faceswap`` chunk placed before the image data (where
    faceswap's ``png_write_meta`` puts it) and, for a :class:`FaceswapMeta` with extras, the
    ``swapd`` chunk after it. A dict is written as the ``faceswap`` chunk as it is."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"cannot encode an image of shape {image.shape} as PNG")
    png = buf.tobytes()
    extras = None
    if isinstance(meta, FaceswapMeta):
        meta.check_for_faceswap()
        header = meta.to_dict()
        if meta.swapd is not None:
            extras = json.dumps(_plain(meta.swapd), separators=(",", ":")).encode("utf-8")
    else:
        header = _plain(meta)
    text = str(header).encode("utf-8")
    for name, payload in (("faceswap header", text), ("swapd extras", extras or b"")):
        if len(payload) > MAX_META_BYTES:
            raise ValueError(f"{name} is {len(payload)} bytes, over {MAX_META_BYTES}")
    chunks = png_chunks(png, "<encoded>", verify_crc=False)
    idat = next(start - 8 for ctype, start, _ in chunks if ctype == b"IDAT")
    iend = chunks[-1][1] - 8
    tail = png[iend:] if extras is None else itxt_chunk(SWAPD_KEYWORD, extras) + png[iend:]
    return png[:idat] + itxt_chunk(KEYWORD, text) + png[idat:iend] + tail


def write_aligned_png(path: str | os.PathLike[str], image: np.ndarray,
                      meta: FaceswapMeta | dict[str, Any], durable: bool = True) -> Path:
    """Atomically write an aligned face as a faceswap-format PNG; returns the path.

    `durable=False` skips the fsync (still atomic): for bulk-generated files that can be
    regenerated, where an fsync per file would dominate the time.
    """
    data = encode_aligned_png(image, meta)
    return atomic_write_bytes(path, data, durable=durable)


def read_headers(data: bytes, where: str, chunks: list[tuple[bytes, int, int]] | None = None
                 ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The ``faceswap`` chunk's dict and the ``swapd`` chunk's dict of a PNG's bytes (each
    None when absent). ``chunks``: the data's chunks when the caller has walked them."""
    header = extras = None
    for ctype, start, end in chunks if chunks is not None else png_chunks(data, where):
        if ctype != b"iTXt":
            continue
        if end - start > MAX_META_BYTES:
            raise FaceFormatError(where, f"iTXt chunk of {end - start} bytes is over the "
                                         f"{MAX_META_BYTES} limit")
        keyword, text = parse_itxt(data[start:end], where)
        if keyword == KEYWORD and header is None:
            header = _literal(text, where)
        elif keyword == SWAPD_KEYWORD and extras is None:
            extras = _json_dict(text, where)
    return header, extras


def read_faceswap_header(source: str | os.PathLike[str] | bytes, where: str | None = None,
                         chunks: list[tuple[bytes, int, int]] | None = None
                         ) -> dict[str, Any] | None:
    """The raw faceswap header dict of a PNG (path or bytes), or None when it has none.

    ``chunks``: the data's chunks when the caller has already walked them (see png_chunks).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, where = bytes(source), where or "<bytes>"
    else:
        data, where = read_capped(Path(source)), where or str(source)
    return read_headers(data, where, chunks)[0]


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


def _json_dict(text: bytes, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FaceFormatError(where, f"the swapd chunk is not JSON ({type(exc).__name__})"
                              ) from exc
    if not isinstance(value, dict):
        raise FaceFormatError(where, f"the swapd chunk is a {type(value).__name__}, not an object")
    return value


def meta_from_png(data: bytes, where: str, chunks: list[tuple[bytes, int, int]] | None = None
                  ) -> FaceswapMeta | None:
    """The faceswap metadata (with swapd's extras) of a PNG's bytes, None without a
    ``faceswap`` chunk; FaceFormatError for a broken file or header."""
    header, extras = read_headers(data, where, chunks)
    return None if header is None else FaceswapMeta.from_dict(header, where, extras)


def read_faceswap_meta(source: str | os.PathLike[str] | bytes) -> FaceswapMeta | None:
    """The faceswap metadata of an aligned PNG (path or bytes), or None when it has none.

    Raises FaceFormatError for a file that is not a well-formed PNG or whose header is not the
    expected dict.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return meta_from_png(bytes(source), "<bytes>")
    return meta_from_png(read_capped(Path(source)), str(source))


def read_aligned_png(path: str | os.PathLike[str]) -> tuple[np.ndarray, FaceswapMeta | None]:
    """Image (as stored: BGR, BGRA or grayscale) and faceswap metadata of an aligned PNG."""
    data = read_capped(Path(path))
    meta = meta_from_png(data, str(path))
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FaceFormatError(path, "the PNG image data cannot be decoded")
    return image, meta

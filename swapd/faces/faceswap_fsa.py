"""faceswap's alignments file (``.fsa``): written for faceswap's tools, read safely.

faceswap keeps what extraction found in each frame of a video or image folder in one file
(lib/align/alignments.py, lib/serializer.py ``_CompressedSerializer``): ``zlib.compress`` of
``pickle.dumps`` of::

    {"__meta__": {"version": 2.4},
     "__data__": {FRAME NAME: {"faces": [{"x", "y", "w", "h", "landmarks_xy", "mask",
                                          "identity", "thumb"}, ...],
                               "video_meta": {}}}}

with frame-pixel boxes and landmarks as lists (``AlignmentsEntry.to_dict``) and ``thumb`` a
96 px JPEG of the head-centred face as a list of [byte] rows (or None). Files from faceswap
before version 2.2 hold numpy arrays instead of lists, and before 2.0 a frame's value is the
list of its faces; both read. Reading never unpickles arbitrary objects: the stream goes
through :mod:`swapd.faces.safe_pickle`, which builds plain data and numpy arrays only.
"""

from __future__ import annotations

import math
import os
import pickle
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from swapd.errors import FileProblem
from swapd.faces.safe_pickle import safe_unpickle
from swapd.fsutil import atomic_write_bytes

FSA_VERSION = 2.4
MAX_FSA_BYTES = 1 << 30  # compressed; a feature film's alignments with thumbnails is ~100 MB
MAX_FSA_UNPACKED = 4 << 30


class FsaError(FileProblem, ValueError):
    """An ``.fsa`` file that cannot be used: truncated, corrupt, hostile or not faceswap's."""


@dataclass
class FsaFace:
    """One face of a frame, in the frame's pixels."""

    x: int
    y: int
    w: int
    h: int
    landmarks_xy: np.ndarray  # N x 2 float32 (68 points from faceswap's aligners)
    thumb: bytes | None = None  # JPEG
    mask: dict[str, Any] = field(default_factory=dict)  # faceswap's stored masks, kept as read
    identity: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The face as faceswap's ``FileAlignments.to_dict`` gives it."""
        thumb = (None if self.thumb is None
                 else np.frombuffer(self.thumb, np.uint8).reshape(-1, 1).tolist())
        return {"x": int(self.x), "y": int(self.y), "w": int(self.w), "h": int(self.h),
                "landmarks_xy": np.asarray(self.landmarks_xy, np.float32).tolist(),
                "mask": self.mask, "identity": self.identity, "thumb": thumb}


def encode_fsa(frames: dict[str, list[FsaFace]], version: float = FSA_VERSION) -> bytes:
    """The bytes of an ``.fsa`` holding ``frames`` (every frame extracted, faces or none)."""
    data = {"__meta__": {"version": float(version)},
            "__data__": {name: {"faces": [face.to_dict() for face in faces], "video_meta": {}}
                         for name, faces in frames.items()}}
    return zlib.compress(pickle.dumps(data, protocol=4))


def write_fsa(path: str | os.PathLike[str], frames: dict[str, list[FsaFace]]) -> Path:
    """Write an ``.fsa`` atomically; returns its path."""
    return atomic_write_bytes(path, encode_fsa(frames))


def _inflate(data: bytes, where: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, MAX_FSA_UNPACKED)
    except zlib.error as exc:
        raise FsaError(where, f"not a faceswap alignments file, or corrupt (zlib: {exc})"
                       ) from None
    if inflater.unconsumed_tail:
        raise FsaError(where, f"unpacks to over {MAX_FSA_UNPACKED} bytes")
    if not inflater.eof:
        raise FsaError(where, "truncated: the compressed data ends early")
    return raw


def _whole(value: object, what: str) -> int:
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value != int(value):
        raise ValueError(f"{what} must be a whole number, got {type(value).__name__}")
    return int(value)


def _face(value: object) -> FsaFace:
    if not isinstance(value, dict):
        raise ValueError(f"a face is a {type(value).__name__}, not a dict")
    box = {k: _whole(value.get(k), k) for k in "xywh"}
    raw = value.get("landmarks_xy", value.get("landmarksXY"))  # the name before 2.x
    try:
        points = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"landmarks_xy is not numeric ({exc})") from None
    if points.ndim != 2 or points.shape[1] not in (2, 3) or not np.isfinite(points).all():
        raise ValueError(f"landmarks_xy must be N x 2 finite numbers, got shape {points.shape}")
    thumb = value.get("thumb")
    if thumb is not None:
        try:
            thumb = np.asarray(thumb, dtype=np.uint8).tobytes()
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"thumb is not JPEG bytes ({exc})") from None
    mask, identity = value.get("mask") or {}, value.get("identity") or {}
    if not isinstance(mask, dict) or not isinstance(identity, dict):
        raise ValueError("mask and identity must be dicts")
    return FsaFace(**box, landmarks_xy=points, thumb=thumb, mask=mask, identity=identity)


def decode_fsa(data: bytes, where: str = "<bytes>") -> tuple[float, dict[str, list[FsaFace]]]:
    """(version, faces per frame name) of an ``.fsa``'s bytes; FsaError saying what is
    wrong (nothing in a hostile file runs)."""
    raw = _inflate(data, where)
    try:
        top = safe_unpickle(raw)
    except pickle.UnpicklingError as exc:
        raise FsaError(where, f"hostile or broken pickle: {exc}") from None
    except Exception as exc:  # a malformed stream fails in many ways; none is trusted
        raise FsaError(where, f"broken pickle ({type(exc).__name__}: {str(exc)[:80]})") \
            from None
    if not isinstance(top, dict) or not isinstance(top.get("__data__"), dict):
        raise FsaError(where, "not a faceswap alignments file (no '__data__' dict)")
    meta = top.get("__meta__", {"version": 1.0})
    version = meta.get("version") if isinstance(meta, dict) else None
    if isinstance(version, bool) or not isinstance(version, (int, float)):
        raise FsaError(where, "'__meta__' has no version number")
    frames: dict[str, list[FsaFace]] = {}
    for name, entry in top["__data__"].items():
        try:
            if not isinstance(name, str):
                raise ValueError("the frame name is not a string")
            faces = entry.get("faces", []) if isinstance(entry, dict) else entry
            if not isinstance(faces, list):
                raise ValueError("'faces' is not a list")
            frames[name] = [_face(face) for face in faces]
        except (ValueError, TypeError, OverflowError) as exc:
            raise FsaError(where, f"frame {str(name)[:60]!r}: {exc}") from None
    return float(version), frames


def read_fsa(path: str | os.PathLike[str]) -> tuple[float, dict[str, list[FsaFace]]]:
    """:func:`decode_fsa` of a file (size-checked first)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FSA_BYTES:
            raise FsaError(p, f"{size} bytes, over the {MAX_FSA_BYTES} limit")
        data = p.read_bytes()
    except OSError as exc:
        raise FsaError(p, f"cannot read it ({exc.strerror or exc})") from None
    return decode_fsa(data, str(p))

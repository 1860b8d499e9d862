"""DeepFaceLab aligned JPGs: the pickled metadata in the APP15 segment, read safely.

DeepFaceLab (DFLJPG) stores each aligned face's metadata as ``pickle.dumps(dict)`` in one
APP15 (0xFFEF) segment: face_type, landmarks (68x2, aligned image pixels), source_filename,
source_rect, source_landmarks, image_to_face_mat (2x3), seg_ie_polys, xseg_mask,
eyebrows_expand_mod. Unpickling runs whatever callables the data names, so a shared "face set"
could carry code: it is read by :mod:`swapd.faces.safe_pickle`'s unpickler, which builds plain
data and numpy arrays only; a file whose pickle names anything else is reported as hostile.
The masks a user drew or trained (``xseg_mask``, ``seg_ie_polys``) are read by
:mod:`swapd.faces.dfl_masks`; DeepFaceLab's crops by :mod:`swapd.faces.dfl_align`.
"""

from __future__ import annotations

import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from swapd.errors import FileProblem
from swapd.faces.dfl_masks import has_polygons
from swapd.faces.safe_pickle import SafeUnpickler, safe_unpickle

__all__ = ["APP15", "DFL_CENTERING", "DFL_FACE_TYPES", "DFLFormatError", "DFLMeta",
           "SafeUnpickler", "encode_dfl_jpg", "jpeg_segments", "meta_from_dict",
           "read_dfl_meta", "safe_unpickle"]

APP15 = 0xEF
MAX_DFL_FILE_BYTES = 64 * 1024 * 1024
DFL_FACE_TYPES = ("half_face", "midfull_face", "full_face", "full_face_no_align", "whole_face",
                  "head", "head_no_align", "mark_only")
# How DeepFaceLab's face types compare with swapd's centerings (their crops are close, not
# identical: DFL's own mean face and paddings differ a little).
DFL_CENTERING = {"half_face": "legacy", "midfull_face": "legacy", "full_face": "face",
                 "full_face_no_align": "face", "whole_face": "face", "head": "head",
                 "head_no_align": "head", "mark_only": "face"}


class DFLFormatError(FileProblem, ValueError):
    """A DeepFaceLab JPG whose segments or metadata are broken, or hostile."""


@dataclass
class DFLMeta:
    """One DeepFaceLab aligned face's metadata (landmarks in the aligned image's pixels)."""

    face_type: str
    landmarks: np.ndarray  # 68x2 float32
    source_filename: str | None = None
    source_rect: tuple[float, float, float, float] | None = None
    source_landmarks: np.ndarray | None = None  # 68x2, source frame pixels
    image_to_face_mat: np.ndarray | None = None  # 2x3
    eyebrows_expand_mod: float | None = None
    has_xseg_mask: bool = False
    has_seg_polys: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # keys swapd does not know, kept

    def to_dict(self) -> dict[str, Any]:
        """The dict DeepFaceLab pickles (numpy arrays as DFL writes them)."""
        out: dict[str, Any] = {**self.extra, "face_type": self.face_type,
                               "landmarks": np.asarray(self.landmarks, np.float32)}
        if self.source_filename is not None:
            out["source_filename"] = self.source_filename
        if self.source_rect is not None:
            out["source_rect"] = tuple(self.source_rect)
        if self.source_landmarks is not None:
            out["source_landmarks"] = np.asarray(self.source_landmarks, np.float32)
        if self.image_to_face_mat is not None:
            out["image_to_face_mat"] = np.asarray(self.image_to_face_mat, np.float32)
        if self.eyebrows_expand_mod is not None:
            out["eyebrows_expand_mod"] = float(self.eyebrows_expand_mod)
        return out


def jpeg_segments(data: bytes, where: str) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each header segment's payload, up to the start of scan."""
    if not data.startswith(b"\xff\xd8"):
        raise DFLFormatError(where, "not a JPEG (no start-of-image marker)")
    segments = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise DFLFormatError(where, f"corrupt JPEG: bad marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2 or pos + 2 + length > len(data):
            raise DFLFormatError(where, "truncated JPEG: a header segment runs past the end")
        segments.append((marker, pos + 4, pos + 2 + length))
        if marker == 0xDA:  # start of scan: image data follows
            return segments
        pos += 2 + length
    raise DFLFormatError(where, "truncated JPEG: no image data")


def _array(value: object, shape: tuple[int, ...], where: str, key: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DFLFormatError(where, f"{key} is not numeric ({exc})") from exc
    if arr.shape != shape or not np.isfinite(arr).all():
        raise DFLFormatError(where, f"{key} must be {'x'.join(map(str, shape))} finite numbers, "
                                    f"got shape {arr.shape}")
    return arr


def meta_from_dict(data: object, where: str) -> DFLMeta:
    """Check an unpickled DFL dict's shape and build :class:`DFLMeta`."""
    if not isinstance(data, dict):
        raise DFLFormatError(where, f"DFL metadata is a {type(data).__name__}, not a dict")
    face_type = data.get("face_type")
    if not isinstance(face_type, str):
        raise DFLFormatError(where, "face_type is missing or not a string")
    if face_type not in DFL_FACE_TYPES:
        raise DFLFormatError(where, f"unknown face_type {face_type!r}; DFL's are "
                                    f"{', '.join(DFL_FACE_TYPES)}")
    if "landmarks" not in data:
        raise DFLFormatError(where, "landmarks are missing")
    landmarks = _array(data["landmarks"], (68, 2), where, "landmarks")
    source = data.get("source_filename")
    if source is not None and not isinstance(source, str):
        raise DFLFormatError(where, "source_filename is not a string")
    rect = data.get("source_rect")
    if rect is not None:
        rect = tuple(float(v) for v in _array(rect, (4,), where, "source_rect"))
    src_lm = data.get("source_landmarks")
    if src_lm is not None:
        src_lm = _array(src_lm, (68, 2), where, "source_landmarks")
    mat = data.get("image_to_face_mat")
    if mat is not None:
        mat = _array(mat, (2, 3), where, "image_to_face_mat")
    brows = data.get("eyebrows_expand_mod")
    if brows is not None and (isinstance(brows, bool) or not isinstance(brows, (int, float))):
        raise DFLFormatError(where, "eyebrows_expand_mod is not a number")
    known = {"face_type", "landmarks", "source_filename", "source_rect", "source_landmarks",
             "image_to_face_mat", "eyebrows_expand_mod"}
    return DFLMeta(
        face_type=face_type, landmarks=landmarks, source_filename=source,
        source_rect=rect, source_landmarks=src_lm,  # type: ignore[arg-type]
        image_to_face_mat=mat, eyebrows_expand_mod=None if brows is None else float(brows),
        has_xseg_mask=data.get("xseg_mask") is not None,
        has_seg_polys=(data.get("seg_ie_polys") is not None
                       and has_polygons(data["seg_ie_polys"])),
        extra={k: v for k, v in data.items() if k not in known},
    )


def read_dfl_meta(source: str | os.PathLike[str] | bytes) -> DFLMeta | None:
    """The DFL metadata of a JPEG (path or bytes), None if it has no APP15 segment.

    Raises :class:`DFLFormatError` for a broken file, broken metadata, or a pickle that names
    anything but plain data and numpy arrays (hostile: nothing of it has run).
    """
    if isinstance(source, bytes):
        data, where = source, "<bytes>"
    else:
        path = Path(source)
        where = str(path)
        if path.stat().st_size > MAX_DFL_FILE_BYTES:
            raise DFLFormatError(where, "file too large for an aligned face")
        data = path.read_bytes()
    payloads = [data[start:end] for marker, start, end in jpeg_segments(data, where)
                if marker == 0xE0 + 15]
    if not payloads:
        return None
    if len(payloads) > 1:
        raise DFLFormatError(where, f"{len(payloads)} APP15 segments; DeepFaceLab writes one")
    try:
        unpickled = safe_unpickle(payloads[0])
    except pickle.UnpicklingError as exc:
        raise DFLFormatError(where, f"hostile or broken DFL metadata: {exc}") from None
    except Exception as exc:  # a malformed pickle can fail in many ways; none is trusted
        raise DFLFormatError(where, f"broken DFL metadata ({type(exc).__name__}: {exc})") \
            from None
    try:
        return meta_from_dict(unpickled, where)
    except DFLFormatError:
        raise
    except Exception as exc:  # odd values in odd places: still the file's fault
        raise DFLFormatError(where, f"broken DFL metadata ({type(exc).__name__}: {exc})") \
            from None


def encode_dfl_jpg(image: np.ndarray, meta: DFLMeta | dict[str, Any], quality: int = 95) -> bytes:
    """A JPEG of ``image`` with ``meta`` pickled into an APP15 segment after the APP segments,
    where DeepFaceLab puts it."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    data = encoded.tobytes()
    payload = pickle.dumps(meta.to_dict() if isinstance(meta, DFLMeta) else meta, protocol=4)
    if len(payload) > 0xFFFF - 2:
        raise ValueError(f"DFL metadata is {len(payload)} bytes; a JPEG segment holds 65533")
    segments = jpeg_segments(data, "<encoded>")
    app_ends = [end for marker, _, end in segments if 0xE0 <= marker <= 0xEF]
    at = app_ends[-1] if app_ends else 2
    segment = b"\xff" + bytes([0xE0 + 15]) + struct.pack(">H", len(payload) + 2) + payload
    return data[:at] + segment + data[at:]

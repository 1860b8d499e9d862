"""The masks DeepFaceLab users make, read as the face mask swapd trains with.

A DeepFaceLab face keeps the mask its XSeg model applied (``xseg_mask``: a PNG or JPEG of one
channel, any size, DFLJPG.set_xseg_mask) and the polygons a user drew in its XSeg editor
(``seg_ie_polys``: ``{"polys": [{"type": 1 include | 0 exclude, "pts": N x 2}]}`` in the
aligned image's pixels, or the older ``[(type, pts), ...]``; core/imagelib/SegIEPolys.py).
DeepFaceLab trains with the XSeg mask when a face has one (samplelib/SampleProcessor.py,
resized to the face with bicubic interpolation) and the landmark hull otherwise; swapd does the
same, and also uses the polygons (include ones filled first, exclude ones cut out after, as
SegIEPolys.overlay_mask draws them) when a face has polygons but no applied mask.
"""

from __future__ import annotations

import struct
from typing import Any

import cv2
import numpy as np

MASK_SOURCES = ("xseg", "polys", "landmarks")  # what a face trains with, best first
MAX_MASK_SIDE = 4096  # an XSeg mask is its model's resolution (256) or the face's
_INCLUDE, _EXCLUDE = 1, 0


class DFLMaskError(ValueError):
    """An xseg_mask or seg_ie_polys that cannot be read (the reason, without the file)."""


def _encoded_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG claims, read from its header; None when not found."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    pos = 2
    while data.startswith(b"\xff\xd8") and pos + 9 <= len(data) and data[pos] == 0xFF:
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        pos += 2 + length
    return None


def decode_xseg(value: object, width: int, height: int) -> np.ndarray:
    """An ``xseg_mask`` as uint8 height x width (255 = face), resized as DeepFaceLab does."""
    try:
        data = np.asarray(value, dtype=np.uint8).tobytes() if not isinstance(
            value, (bytes, bytearray)) else bytes(value)
    except (TypeError, ValueError) as exc:
        raise DFLMaskError(f"xseg_mask is not image data ({exc})") from exc
    size = _encoded_size(data)
    if size is None:
        raise DFLMaskError("xseg_mask is neither a PNG nor a JPEG")
    if not (0 < size[0] <= MAX_MASK_SIDE and 0 < size[1] <= MAX_MASK_SIDE):
        raise DFLMaskError(f"xseg_mask claims {size[0]}x{size[1]} pixels")
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DFLMaskError("xseg_mask cannot be decoded")
    if mask.ndim == 3:
        if mask.shape[2] != 1:
            raise DFLMaskError(f"xseg_mask has {mask.shape[2]} channels, not 1")
        mask = mask[..., 0]
    if mask.dtype != np.uint8:
        raise DFLMaskError(f"xseg_mask is {mask.dtype}, not 8-bit")
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_CUBIC)
    return mask


def _polygons(value: object) -> list[tuple[int, np.ndarray]]:
    """(type, points) of each polygon of a ``seg_ie_polys`` value, checked."""
    if isinstance(value, dict):
        items = value.get("polys")
        if not isinstance(items, list):
            raise DFLMaskError("seg_ie_polys has no 'polys' list")
        pairs = []
        for item in items:
            if not isinstance(item, dict):
                raise DFLMaskError("a seg_ie_polys polygon is not a dict")
            pairs.append((item.get("type"), item.get("pts")))
    elif isinstance(value, (list, tuple)):
        pairs = [tuple(item) for item in value if isinstance(item, (list, tuple))]
        if len(pairs) != len(value) or any(len(p) != 2 for p in pairs):
            raise DFLMaskError("seg_ie_polys is not a list of (type, points)")
    else:
        raise DFLMaskError(f"seg_ie_polys is a {type(value).__name__}")
    out = []
    for kind, pts in pairs:
        if (isinstance(kind, bool) or not isinstance(kind, (int, np.integer))
                or int(kind) not in (_INCLUDE, _EXCLUDE)):
            raise DFLMaskError(f"a seg_ie_polys polygon has type {str(kind)[:20]}, not 0 or 1")
        try:
            points = np.asarray(pts if pts is not None else [], dtype=np.float64).reshape(-1, 2)
        except (TypeError, ValueError) as exc:
            raise DFLMaskError(f"a seg_ie_polys polygon's points are not N x 2 ({exc})") from exc
        if not np.isfinite(points).all():
            raise DFLMaskError("a seg_ie_polys polygon holds NaN or infinite points")
        out.append((int(kind), points))
    return out


def has_polygons(value: object) -> bool:
    """Whether a ``seg_ie_polys`` value holds at least one polygon with points."""
    try:
        return any(len(points) for _, points in _polygons(value))
    except DFLMaskError:
        return value is not None


def draw_polygons(value: object, width: int, height: int) -> np.ndarray:
    """``seg_ie_polys`` drawn as uint8 height x width (255 = face): include polygons filled,
    then exclude ones cut out."""
    mask = np.zeros((height, width), np.uint8)
    limit = 4.0 * max(width, height)
    for kind in (_INCLUDE, _EXCLUDE):
        for found, points in _polygons(value):
            if found != kind or not len(points):
                continue
            clipped = np.clip(points, -limit, limit).astype(np.int32)
            cv2.fillPoly(mask, [clipped], 255 if kind == _INCLUDE else 0)
    return mask


def dfl_face_mask(fields: dict[str, Any], width: int, height: int
                  ) -> tuple[np.ndarray | None, str | None]:
    """The mask a DeepFaceLab face trains with, from its metadata's fields, and its source:
    ("xseg" or "polys", uint8 mask) or (None, None) when it has neither (landmark hull)."""
    if fields.get("xseg_mask") is not None:
        return decode_xseg(fields["xseg_mask"], width, height), "xseg"
    polys = fields.get("seg_ie_polys")
    if polys is not None and has_polygons(polys):
        return draw_polygons(polys, width, height), "polys"
    return None, None

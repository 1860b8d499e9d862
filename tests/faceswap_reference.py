"""faceswap's expectations, re-derived for the tests (no faceswap code is copied or fetched).

What each function re-derives, from which upstream file, at the commit docs/interop.md names
(there, too, the results of running faceswap's own code on the same files):

- :func:`png_read_meta`: lib/image.py ``png_read_meta``: the first iTXt chunk with keyword
  ``faceswap``, text after 4 bytes, ``ast.literal_eval``, then ``PNGHeader.from_dict``.
- :func:`from_dict`: lib/align/objects.py ``DataclassDict.from_dict`` on the ``PNGHeader``,
  ``PNGAlignments``, ``PNGSource``, ``MaskAlignmentsFile``, ``AlignmentsEntry`` and
  ``FileAlignments`` fields: the keys given must be a subset of the fields, and the fields
  without a default must all be given (its ValueError messages, word for word).
- :func:`landmark_type`: lib/align/constants.py ``LandmarkType.from_shape``.
- :func:`aligned_matrix`, :func:`training_crop`: lib/align/aligned_face.py ``AlignedFace``
  (``_get_default_matrix``, ``matrix``, ``adjusted_matrix``, ``_padding_from_coverage``,
  ``_convert_centering``) with lib/align/pose.py ``PoseEstimate`` and lib/align/aligned_utils.py
  ``get_sub_crop_size``, ``get_base_size``, ``sub_crop``.
- :func:`load_fsa`: lib/serializer.py ``_CompressedSerializer`` (``zlib.decompress``, then
  ``pickle.loads``: only ever called here on files swapd wrote in the test).

The mean faces are not re-typed here: the tests check swapd's copies against digests of
faceswap's arrays (docs/interop.md) and use them.
"""

from __future__ import annotations

import ast
import pickle
import struct
import zlib
from typing import Any

import cv2
import numpy as np

from swapd.faces.faceswap_align import (
    CAMERA,
    CENTER_OFFSETS,
    CORE_LANDMARKS,
    EXTRACT_RATIOS,
    MEAN_FACE_51,
    MEAN_HEAD_26,
)

# field name -> (has a default, nested schema or None), per faceswap dataclass
MASK_FIELDS = {"mask": (False, None), "affine_matrix": (False, None),
               "interpolator": (False, None), "stored_size": (False, None),
               "stored_centering": (False, None)}
ALIGNMENTS_FIELDS = {"x": (False, None), "y": (False, None), "w": (False, None),
                     "h": (False, None), "landmarks_xy": (False, None),
                     "mask": (True, ("dict", MASK_FIELDS)), "identity": (True, None)}
SOURCE_FIELDS = {"alignments_version": (False, None), "original_filename": (False, None),
                 "face_index": (False, None), "source_filename": (False, None),
                 "source_is_video": (False, None), "source_frame_dims": (False, None)}
HEADER_FIELDS = {"alignments": (False, ALIGNMENTS_FIELDS), "source": (False, SOURCE_FIELDS)}
FILE_FACE_FIELDS = {**ALIGNMENTS_FIELDS, "thumb": (True, None)}
ENTRY_FIELDS = {"faces": (True, ("list", FILE_FACE_FIELDS)), "video_meta": (True, None)}
LANDMARK_SHAPES = {(4, 2): "LM_2D_4", (51, 2): "LM_2D_51", (68, 2): "LM_2D_68",
                   (98, 2): "LM_2D_98", (26, 3): "LM_3D_26"}


def from_dict(data: dict[str, Any], fields: dict[str, Any]) -> None:
    """Raise ValueError as faceswap's ``DataclassDict.from_dict`` would for ``data``."""
    inbound, known = set(data), set(fields)
    required = {name for name, (has_default, _) in fields.items() if not has_default}
    if not inbound.issubset(known):
        raise ValueError(f"Dictionary keys {sorted(inbound)} should be a subset of dataclass "
                         f"params {sorted(known)}")
    if not required.issubset(inbound):
        raise ValueError(f"Dataclass params {sorted(required)} should be a subset of "
                         f"dictionary keys {sorted(inbound)}")
    for name, (_, nested) in fields.items():
        if name not in data or nested is None:
            continue
        if isinstance(nested, dict):
            from_dict(data[name], nested)
        elif nested[0] == "dict":
            for value in data[name].values():
                from_dict(value, nested[1])
        else:
            for value in data[name]:
                from_dict(value, nested[1])


def png_read_meta(png: bytes) -> dict[str, Any]:
    """The header faceswap's training loader gets from a face PNG (checked by from_dict)."""
    pointer = 0
    while True:
        pointer = png.find(b"iTXt", pointer) - 4
        assert pointer >= 0, "no faceswap metadata (faceswap's assert fails)"
        length = struct.unpack(">I", png[pointer:pointer + 4])[0]
        pointer += 8
        keyword, value = png[pointer:pointer + length].split(b"\0", 1)
        if keyword == b"faceswap":
            header = ast.literal_eval(value[4:].decode("utf-8", errors="ignore"))
            from_dict(header, HEADER_FIELDS)
            return header
        pointer += length + 4


def landmark_type(shape: tuple[int, ...]) -> str:
    if shape not in LANDMARK_SHAPES:
        raise ValueError(f"The given shape {shape} is not valid.")
    return LANDMARK_SHAPES[shape]


def similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The least-squares similarity source -> target (faceswap's ``_umeyama`` and DeepFaceLab's
    ``umeyama`` with scale, for 2-D points), derived independently: as complex numbers it is
    ``z -> a z + b`` with ``a = sum(conj(s) d) / sum(|s|^2)`` over the centred points.
    Returns the 3x3 matrix."""
    src = source[:, 0] + 1j * source[:, 1]
    dst = target[:, 0] + 1j * target[:, 1]
    src_c, dst_c = src - src.mean(), dst - dst.mean()
    a = np.sum(np.conj(src_c) * dst_c) / np.sum(np.abs(src_c) ** 2)
    b = dst.mean() - a * src.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag], [0.0, 0.0, 1.0]])


def pose_offsets(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """faceswap's ``PoseEstimate(...).offset`` for 68 frame landmarks."""
    legacy = similarity(landmarks[17:].astype(np.float64), MEAN_FACE_51)[:2]
    normalised = cv2.transform(np.expand_dims(landmarks, 1), legacy).squeeze()
    _, rotation, translation = cv2.solvePnP(MEAN_HEAD_26, normalised[CORE_LANDMARKS], CAMERA,
                                            np.zeros((4, 1), np.float32),
                                            flags=cv2.SOLVEPNP_ITERATIVE)
    offsets = {"legacy": np.zeros(2, np.float32)}
    for name in ("face", "head"):
        point = cv2.projectPoints(np.array([CENTER_OFFSETS[name]], np.float32), rotation,
                                  translation, CAMERA, np.zeros((4, 1), np.float32))[0]
        offsets[name] = point.squeeze().astype(np.float32) - np.array([0.5, 0.5], np.float32)
    return offsets


def aligned_matrix(landmarks: np.ndarray, size: int, centering: str,
                   coverage: float = 1.0) -> np.ndarray:
    """``AlignedFace(landmarks, centering=..., size=..., coverage_ratio=...).adjusted_matrix``."""
    landmarks = np.asarray(landmarks, np.float32)
    landmark_type(landmarks.shape)
    matrix = similarity(landmarks[17:].astype(np.float64), MEAN_FACE_51)[:2]
    matrix[:, 2] -= pose_offsets(landmarks)[centering]
    padding = round(size * (EXTRACT_RATIOS[centering] + coverage - 1) / (2 * coverage))
    matrix = matrix * (size - 2 * padding)
    matrix[:, 2] += padding
    return matrix


def training_crop(head_face: np.ndarray, landmarks: np.ndarray, size: int, centering: str,
                  coverage: float) -> np.ndarray:
    """What faceswap's training loader cuts from a head-centred face PNG (``AlignedFace`` with
    ``is_aligned=True``): the sub-crop of ``centering`` at ``coverage``, resized to ``size``."""
    offsets = pose_offsets(np.asarray(landmarks, np.float32))
    side = head_face.shape[0]
    scale = (1 - EXTRACT_RATIOS["head"]) / (1 - EXTRACT_RATIOS[centering]) * coverage
    target = side if centering == "head" and coverage == 1.0 else 2 * int(round(side * scale / 2))
    base = 2 * int(round(side * (1 - EXTRACT_RATIOS["head"]) / 2))
    delta = offsets[centering] - offsets["head"]
    x0, y0 = np.rint(delta * base + (side - target) / 2).astype(np.int32)
    crop = np.zeros((target, target, head_face.shape[2]), head_face.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + target, side), min(y0 + target, side)
    if sx0 < sx1 and sy0 < sy1:
        crop[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = head_face[sy0:sy1, sx0:sx1]
    if target == size:
        return crop
    interpolation = cv2.INTER_CUBIC if target < size else cv2.INTER_AREA
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def load_fsa(data: bytes) -> dict[str, Any]:
    """faceswap's alignments file as its serializer loads it, checked against its
    ``AlignmentsEntry`` / ``FileAlignments`` fields (swapd-written files only)."""
    loaded = pickle.loads(zlib.decompress(data))
    for entry in loaded["__data__"].values():
        from_dict(entry, ENTRY_FIELDS)
    return loaded

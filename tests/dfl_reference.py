"""DeepFaceLab's expectations, re-derived for the tests (no DeepFaceLab code is copied or
fetched). From iperov/DeepFaceLab at the commit docs/interop.md names:

- :func:`dfljpg_load`: DFLIMG/DFLJPG.py ``DFLJPG.load_raw`` / ``load``: walks the JPEG's
  markers as DeepFaceLab does (an APP0 must be JFIF, the SOF gives the shape), and
  ``pickle.loads`` the APP15 payload (only on files swapd wrote in the test).
- :func:`transform_mat`: facelib/LandmarksProcessor.py ``get_transform_mat`` for FULL,
  WHOLE_FACE and HEAD (scale 1), written from its description: a square around the unit box
  of its mean face, grown by the face type's padding, the centre moved for whole_face / head.
- :data:`FACE_TYPES`: facelib/FaceType.py ``to_string_dict``.
"""

from __future__ import annotations

import math
import pickle
import struct
from typing import Any

import cv2
import numpy as np

from swapd.faces.dfl_align import MEAN_FACE_33
from tests.faceswap_reference import similarity

FACE_TYPES = ("half_face", "midfull_face", "full_face", "full_face_no_align", "whole_face",
              "head", "head_no_align", "mark_only")
PADDING = {"full_face": 0.2109375, "whole_face": 0.40, "head": 0.70}


def dfljpg_load(data: bytes) -> tuple[dict[str, Any], tuple[int, int, int]]:
    """(the metadata dict, the shape from the SOF) as DFLJPG.load gives them."""
    pos, meta, shape = 0, None, None
    while pos < len(data):
        low, high = struct.unpack("BB", data[pos:pos + 2])
        pos += 2
        assert low == 0xFF, "No Valid JPG info"
        size = None
        if high & 0xF0 == 0xD0 and (high & 0x0F) <= 9:  # RSTn, SOI, EOI: no length
            size = 0
        if high == 0xDD:
            size = 2
        if size is None:
            size = struct.unpack(">H", data[pos:pos + 2])[0] - 2
            pos += 2
        body = data[pos:pos + size]
        pos += size
        if high == 0xE0:
            assert body[:5] == b"JFIF\0", "Unknown jpeg ID"
        elif high in (0xC0, 0xC2):
            _, height, width = struct.unpack(">BHH", body[:5])
            shape = (height, width, 3)
        elif high == 0xEF:
            meta = pickle.loads(body)
        if high == 0xDA:  # the scan runs to the end-of-image marker
            end = data.find(b"\xff\xd9", pos)
            pos = len(data) if end < 0 else end
    assert meta is not None and shape is not None
    return meta, shape


def transform_mat(landmarks: np.ndarray, size: int, face_type: str) -> np.ndarray:
    """``get_transform_mat(landmarks, size, face_type)``."""
    lm = np.asarray(landmarks, np.float64)
    unit = similarity(np.concatenate([lm[17:49], lm[54:55]]),
                      MEAN_FACE_33.astype(np.float64))[:2]
    inverse = cv2.invertAffineTransform(unit)
    corner = {name: inverse @ np.array([x, y, 1.0]) for name, (x, y) in
              {"tl": (0, 0), "tr": (1, 0), "br": (1, 1), "bl": (0, 1), "c": (0.5, 0.5)}.items()}
    centre = corner["c"]
    down_right = (corner["br"] - corner["tl"]) / np.linalg.norm(corner["br"] - corner["tl"])
    up_right = (corner["tr"] - corner["bl"]) / np.linalg.norm(corner["tr"] - corner["bl"])
    half_diagonal = np.linalg.norm(corner["tl"] - corner["br"]) * (
        PADDING[face_type] * math.sqrt(2.0) + 0.5)
    upward = corner["tl"] - corner["bl"]  # one box height, towards the top
    if face_type == "whole_face":
        centre = centre + 0.07 * upward
    elif face_type == "head":
        box = cv2.transform(lm[:, None, :], unit)[:, 0]
        left = np.mean([box[27 + k][0] - box[k][0] for k in range(3)])
        right = np.mean([box[16 - k][0] - box[27 + k][0] for k in range(3)])
        yaw = (right - left) * abs(math.tanh((right - left) * 2))
        leftward = corner["tl"] - corner["tr"]
        centre = centre - leftward * yaw / 2.0 + 0.5 * upward
    square = np.float32([centre - down_right * half_diagonal, centre + up_right * half_diagonal,
                         centre + down_right * half_diagonal])
    return cv2.getAffineTransform(square, np.float32([(0, 0), (size, 0), (size, size)]))

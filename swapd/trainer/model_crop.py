"""The model crop: what part of an aligned face the model sees, and the face in it.

:func:`crop_for_model` is the one definition of the crop (training, the tracker, the
exporter's parity faces and the merger all call it); :func:`crop_landmarks` moves landmarks
into it; :func:`to_tensor_layout` and :func:`to_channels_last` turn a batch of crops into
the model's float layout.
:func:`decode_face`, :func:`warp_aligned` and :func:`landmarks_inside` are what the face sets
(:mod:`swapd.trainer.data`) use to get an aligned face from its file.
"""

from __future__ import annotations

import cv2
import numpy as np

from swapd.faces.alignment import warp_face


def crop_for_model(img: np.ndarray, size: int, coverage: float) -> np.ndarray:
    """Centre crop keeping ``coverage`` of a square face's side, resized to ``size``.

    The one definition of the model crop: training and merging both call it. Works for
    HxW and HxWxC arrays; the result keeps ``img``'s dtype and channel count.
    """
    h, w = img.shape[:2]
    if h != w:
        raise ValueError(f"face image is not square ({w}x{h})")
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    side = max(1, int(round(h * coverage)))
    start = (h - side) // 2
    crop = img[start : start + side, start : start + side]
    if side == size:
        return crop.copy()
    out = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return out.reshape(size, size, *img.shape[2:])


def decode_face(data: np.ndarray, grayscale: bool) -> np.ndarray:
    """Decode an image file's bytes; ValueError with the reason if it fails."""
    if data.size == 0:
        raise ValueError("empty file")
    flags = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    img = cv2.imdecode(data, flags)
    if img is None:
        raise ValueError("not a decodable image")
    return img


def warp_aligned(image: np.ndarray, matrix: np.ndarray, realign: bool) -> np.ndarray:
    """An aligned face (or its mask) re-cut by ``matrix`` at its own size: as extraction cuts
    (``realign``: from the face's landmarks) or as :func:`~swapd.faces.alignment.recentre`
    re-cuts a centering."""
    size = image.shape[0]
    if realign:
        return warp_face(image, matrix, size)
    out = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(image.shape)


def landmarks_inside(points: np.ndarray, side: int, tolerance: float = 0.1) -> bool:
    """Landmarks within the image (give or take ``tolerance`` of its side)."""
    margin = tolerance * side
    return bool(points.min() >= -margin and points.max() <= side + margin)


def crop_landmarks(points: np.ndarray, side: int, size: int, coverage: float) -> np.ndarray:
    """Landmarks of a ``side``-pixel aligned face moved into :func:`crop_for_model`'s crop."""
    crop = max(1, int(round(side * coverage)))
    start = (side - crop) // 2
    # Pixel centres: x in the face maps to (x - start + 0.5) * size / crop - 0.5 in the crop.
    return (points - start + 0.5) * (size / crop) - 0.5


def to_tensor_layout(batch: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW in [0, 1] (contiguous, ready for ``torch.from_numpy``)."""
    return np.ascontiguousarray(to_channels_last(batch))


def to_channels_last(batch: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW in [0, 1] laid out channels last: the floats written in
    one pass in NHWC order, handed out as a transposed view. ``torch.from_numpy`` of it is a
    channels_last tensor already, so the trainer's ``contiguous(memory_format=
    torch.channels_last)`` copies nothing."""
    return np.divide(batch, np.float32(255), dtype=np.float32).transpose(0, 3, 1, 2)

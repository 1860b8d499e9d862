"""Putting a swapped face back into its frame: mask, colour matching, paste-back.

Everything happens in two spaces linked by one 2x3 affine (``model_crop_matrix``): the model crop,
where the mask is drawn once from the mean face, and the frame, into which the swapped crop and
its mask are warped back and alpha-blended.  Only the face's bounding region of the frame is
touched, so the cost per face does not grow with the frame size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from swapd.faces.alignment import invert_affine, model_crop_matrix, transform_points
from swapd.faces.landmarks import LEFT_BROW, MEAN_FACE_2D_68, RIGHT_BROW

# Brows raised by this share of the unit face box, so the mask covers the lower forehead
# (faceswap's "extended" idea): a mask ending at the brows leaves a visible seam above them.
_BROW_LIFT = 0.08


@lru_cache(maxsize=16)
def face_mask(size: int, coverage: float, centering: str = "face", erode: float = 0.04,
              blur: float = 0.08) -> np.ndarray:
    """Feathered face mask in model-crop space, float32 (size, size) in [0, 1].

    The hull of the mean face (brows lifted), eroded by ``erode`` and Gaussian-blurred over
    ``blur`` of the crop size, so the swapped face fades out inside the face outline.  The result
    is read-only (cached).
    """
    face = MEAN_FACE_2D_68.copy()
    face[RIGHT_BROW, 1] -= _BROW_LIFT
    face[LEFT_BROW, 1] -= _BROW_LIFT
    # The mean face is in unit coordinates, so aligning it to itself gives the unit->crop matrix.
    points = transform_points(face, model_crop_matrix(MEAN_FACE_2D_68, size, coverage, centering))
    mask = np.zeros((size, size), dtype=np.float32)
    hull = cv2.convexHull(np.round(points * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1.0, lineType=cv2.LINE_AA, shift=4)
    mask = feather(mask, erode, blur)
    mask.flags.writeable = False
    return mask


def feather(mask: np.ndarray, erode: float, blur: float) -> np.ndarray:
    """A square float32 mask in [0, 1] eroded by ``erode`` and Gaussian-blurred over ``blur``
    of its side, with a zero border: the blend weight of a face (the mean face's outline, or
    the mask a model learned)."""
    size = mask.shape[0]
    mask = np.array(mask, dtype=np.float32)  # a copy: the caller's mask stays as it was
    radius = round(erode * size)
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.erode(mask, kernel)
    sigma = blur * size / 3.0
    if sigma > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    border = max(1, size // 64)  # nothing may reach the crop edge, or its outline would show
    mask[:border], mask[-border:], mask[:, :border], mask[:, -border:] = 0, 0, 0, 0
    return mask


def match_colour(swapped: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift the swapped crop's colours to the original crop's (mean/std per LAB channel, the
    ``rct`` colour transfer of :mod:`swapd.merger.colour`).

    Statistics are taken inside the mask only (weighted by it), so background in the crop does
    not pull the face colour.  Both crops are uint8 BGR of the same size; returns uint8 BGR.
    """
    from swapd.merger.colour import rct

    if float(mask.sum()) < 1.0:
        return swapped
    scale = np.float32(1 / 255)
    out = rct(swapped.astype(np.float32) * scale, original.astype(np.float32) * scale, mask)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def paste_back(frame: np.ndarray, face: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> None:
    """Blend a model-space ``face`` (uint8 BGR) into ``frame`` in place, weighted by ``mask``.

    ``matrix`` is the 2x3 frame->crop affine the crop was cut with.
    """
    size = face.shape[1], face.shape[0]
    inverse = invert_affine(matrix)
    corners = np.array([[0, 0], [size[0], 0], [0, size[1]], [size[0], size[1]]], dtype=np.float64)
    outline = transform_points(corners, inverse)
    h, w = frame.shape[:2]
    x0, y0 = np.maximum(np.floor(outline.min(axis=0)).astype(int), 0)
    x1 = min(int(np.ceil(outline[:, 0].max())) + 1, w)
    y1 = min(int(np.ceil(outline[:, 1].max())) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return  # the face lies entirely outside the frame
    inverse[:, 2] -= (x0, y0)  # warp straight into the region of interest
    roi_size = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(face, inverse, roi_size, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(np.ascontiguousarray(mask, dtype=np.float32), inverse, roi_size,
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    roi = frame[y0:y1, x0:x1]
    alpha = alpha[..., None]
    blended = roi.astype(np.float32) * (1.0 - alpha) + warped.astype(np.float32) * alpha
    roi[...] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Region:
    """A face warped into its frame: the region of interest (rows, columns), the face there
    (float32 BGR in [0, 1]), its blend weight, and (:meth:`footprint`) where the crop lies."""

    rows: slice
    cols: slice
    face: np.ndarray
    alpha: np.ndarray
    inverse: np.ndarray  # crop -> region of interest
    crop_size: int

    def footprint(self) -> np.ndarray:
        """The whole crop's weight in the region (1 inside, its edge anti-aliased)."""
        return cv2.warpAffine(np.ones((self.crop_size, self.crop_size), np.float32),
                              self.inverse, self.alpha.shape[::-1], flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_to_frame(face: np.ndarray, mask: np.ndarray, matrix: np.ndarray,
                  frame_shape: tuple[int, ...]) -> Region | None:
    """A model-space ``face`` (float32 BGR in [0, 1]) and its ``mask`` warped into the frame
    region they cover (``matrix``: the frame->crop affine); None when outside the frame."""
    size = face.shape[1], face.shape[0]
    inverse = invert_affine(matrix)
    corners = np.array([[0, 0], [size[0], 0], [0, size[1]], [size[0], size[1]]], dtype=np.float64)
    outline = transform_points(corners, inverse)
    h, w = frame_shape[:2]
    x0, y0 = np.maximum(np.floor(outline.min(axis=0)).astype(int), 0)
    x1 = min(int(np.ceil(outline[:, 0].max())) + 1, w)
    y1 = min(int(np.ceil(outline[:, 1].max())) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    inverse[:, 2] -= (x0, y0)
    roi_size = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(np.ascontiguousarray(face, np.float32), inverse, roi_size,
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(np.ascontiguousarray(mask, dtype=np.float32), inverse, roi_size,
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return Region(slice(y0, y1), slice(x0, x1), warped, alpha, inverse, face.shape[0])


def seamless(roi: np.ndarray, face: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """DeepFaceLab's seamless mode: ``face`` Poisson-cloned (cv2.seamlessClone) into ``roi``
    (uint8) inside the blend mask cut at its lowest tenth that holds pixels. The centre is
    computed as seamlessClone computes its own bounding rectangle, so the clone lands exactly
    where the mask is: the face does not jitter from frame to frame. Float32 [0, 1] out."""
    cut = None
    for tenth in range(1, 10):
        inside = alpha > tenth / 10.0
        if inside.any():
            cut = inside
            break
    if cut is None:
        return face
    # The clone needs a border of frame around its region: pad the roi by mirroring.
    pad = 2
    binary = np.pad(cut.astype(np.uint8) * 255, pad)
    src = np.pad(np.clip(face * 255.0 + 0.5, 0, 255).astype(np.uint8),
                 ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    dst = np.pad(roi, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    x, y, w, h = cv2.boundingRect(binary)
    if w < 4 or h < 4:
        return face
    centre = (x + w // 2, y + h // 2)
    try:
        cloned = cv2.seamlessClone(src, dst, binary, centre, cv2.NORMAL_CLONE)
    except cv2.error:
        return face  # (DFL too carries on without the clone when OpenCV refuses it)
    return cloned[pad:-pad, pad:-pad].astype(np.float32) / 255.0

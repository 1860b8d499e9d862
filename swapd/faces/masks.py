"""Masks drawn from landmarks: the face hull, the eyes and the mouth.

The trainer's penalized mask loss weighs the face above the background, and its eye and mouth
multipliers weigh those regions higher still (faceswap's defaults: eye x3, mouth x2). Masks are
drawn from the landmarks of the aligned image, so they need no model.

- 68 points: the face is faceswap's "extended" hull (jaw plus eyebrows raised by half their
  distance to the eyes, so the forehead counts); eyes and mouth are their own hulls, dilated.
- 5 points (MTCNN): a derived mask, as faceswap derives one for detectors without 68 points:
  an ellipse through the eyes and mouth for the face, discs for the eyes, an ellipse for the
  mouth.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from swapd.faces.landmarks import JAW, LEFT_BROW, LEFT_EYE, MOUTH_OUTER, RIGHT_BROW, RIGHT_EYE

FACE, EYES, MOUTH = 0, 1, 2  # channel order of :func:`landmark_masks`' result
MASK_CHANNELS = 3
MaskType = Literal["extended", "components"]


def extended_landmarks(landmarks68: np.ndarray) -> np.ndarray:
    """faceswap's "extended" mask points: the eyebrows raised by half their height above the
    eyes (their outer ends measured from points between the eyes and the face side)."""
    lm = np.asarray(landmarks68, dtype=np.float64).copy()
    mid_right = (lm[36] + lm[0]) / 2
    mid_left = (lm[16] + lm[45]) / 2
    below_right = np.stack([(lm[36] + mid_right) / 2, lm[36], lm[37], lm[38], lm[39]])
    below_left = np.stack([lm[42], lm[43], lm[44], lm[45], (lm[45] + mid_left) / 2])
    lm[RIGHT_BROW] += (lm[RIGHT_BROW] - below_right) / 2
    lm[LEFT_BROW] += (lm[LEFT_BROW] - below_left) / 2
    return lm


def _fill_hull(canvas: np.ndarray, points: np.ndarray, scale: int) -> None:
    hull = cv2.convexHull(np.round(points * scale).astype(np.int32))
    cv2.fillConvexPoly(canvas, hull, 255, lineType=cv2.LINE_AA, shift=_SHIFT_BITS)


_SHIFT_BITS = 4  # sub-pixel precision of the drawn polygons (1/16 px)


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask, kernel)


def _masks_68(lm: np.ndarray, size: int, mask_type: MaskType) -> np.ndarray:
    scale = 1 << _SHIFT_BITS
    out = np.zeros((size, size, MASK_CHANNELS), np.uint8)
    face = np.zeros((size, size), np.uint8)
    outline = extended_landmarks(lm) if mask_type == "extended" else lm
    _fill_hull(face, np.concatenate([outline[JAW], outline[RIGHT_BROW], outline[LEFT_BROW]]),
               scale)
    eyes = np.zeros_like(face)
    for eye in (RIGHT_EYE, LEFT_EYE):
        _fill_hull(eyes, lm[eye], scale)
    mouth = np.zeros_like(face)
    _fill_hull(mouth, lm[MOUTH_OUTER], scale)
    # Regions a little larger than the landmarks: lids and lips around the points count too.
    eye_span = float(np.linalg.norm(lm[RIGHT_EYE].mean(0) - lm[LEFT_EYE].mean(0)))
    out[..., FACE] = face
    out[..., EYES] = _dilate(eyes, int(round(eye_span * 0.12)))
    out[..., MOUTH] = _dilate(mouth, int(round(eye_span * 0.08)))
    return out


def _ellipse(canvas: np.ndarray, centre: np.ndarray, axes: tuple[float, float],
             angle: float) -> None:
    scale = 1 << _SHIFT_BITS
    cv2.ellipse(canvas, (int(centre[0] * scale), int(centre[1] * scale)),
                (max(1, int(axes[0] * scale)), max(1, int(axes[1] * scale))), angle, 0, 360, 255,
                -1, lineType=cv2.LINE_AA, shift=_SHIFT_BITS)


def _masks_5(lm: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size, size, MASK_CHANNELS), np.uint8)
    eye_r, eye_l, nose, mouth_r, mouth_l = lm
    eye_mid, mouth_mid = (eye_r + eye_l) / 2, (mouth_r + mouth_l) / 2
    eye_span = float(np.linalg.norm(eye_l - eye_r))
    across = eye_l - eye_r
    angle = float(np.degrees(np.arctan2(across[1], across[0])))
    # From the brows (0.6 eye-mouth heights above the eyes) to the chin (0.7 below the mouth);
    # the nose pulls the centre sideways when the head turns.
    face_centre = (eye_mid + mouth_mid) / 2 + (nose - (eye_mid + mouth_mid) / 2) * 0.3
    height = float(np.linalg.norm(mouth_mid - eye_mid))
    for channel, centre, axes in (
        (FACE, face_centre, (eye_span * 1.0, height * 1.15)),
        (EYES, eye_r, (eye_span * 0.25, eye_span * 0.16)),
        (EYES, eye_l, (eye_span * 0.25, eye_span * 0.16)),
        (MOUTH, mouth_mid, (float(np.linalg.norm(mouth_l - mouth_r)) * 0.65, eye_span * 0.25)),
    ):
        plane = np.ascontiguousarray(out[..., channel])
        _ellipse(plane, centre, axes, angle)
        out[..., channel] = plane
    return out


def landmark_masks(landmarks: np.ndarray, size: int,
                   mask_type: MaskType = "extended") -> np.ndarray:
    """uint8 (size, size, 3) masks (face, eyes, mouth; 0 or 255, anti-aliased edges) for a face
    whose 68 or 5 ``landmarks`` are in the pixel coordinates of a ``size``-pixel image."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape == (68, 2):
        return _masks_68(lm, size, mask_type)
    if lm.shape == (5, 2):
        return _masks_5(lm, size)
    raise ValueError(f"landmarks must be 68x2 or 5x2, got shape {lm.shape}")


def grow_face(masks: np.ndarray, share: float) -> np.ndarray:
    """The masks with the face channel dilated by ``share`` of the side and its edge softened:
    the band just outside the landmarks' hull (cheek and temple when the head turns) is then
    learned too, so a merge's blend mask never shows untrained pixels there."""
    radius = int(round(share * masks.shape[0]))
    if radius <= 0:
        return masks
    out = masks.copy()
    face = _dilate(np.ascontiguousarray(masks[..., FACE]), radius)
    out[..., FACE] = cv2.GaussianBlur(face, (0, 0), max(0.5, radius / 2))
    return out


def full_face_mask(size: int) -> np.ndarray:
    """The masks of a face without landmarks: all face, no eyes or mouth known, so a
    penalized loss weighs it like a plain one."""
    out = np.zeros((size, size, MASK_CHANNELS), np.uint8)
    out[..., FACE] = 255
    return out

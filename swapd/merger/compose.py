"""Putting swapped faces into their frames with a merge's options: where each face goes
(steadied across frames), its mask, colour transfer, DeepFaceLab's merge modes, and the finish.

Per face, DeepFaceLab's order (merger/MergeMasked.py): the colour transfer and the
hist-match mode work on the model's crop; the seamless modes clone into the frame first and
transfer colour after (measured inside the mask); motion blur and sharpening work on the face
as drawn into the frame; the frame itself is denoised or degraded before the faces go in, and
colour-degraded after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from swapd.extract.detectors.base import Detection
from swapd.faces.alignment import model_crop_matrix, transform_points
from swapd.merger import finish
from swapd.merger.blend import Region, seamless, warp_to_frame
from swapd.merger.colour import color_hist_match, hist_match, transfer
from swapd.merger.masks import (
    LEARNED_MODES,
    Edge,
    FaceSteadier,
    raw_mask,
    resolve_mode,
    shape_mask,
)

if TYPE_CHECKING:
    from swapd.config import MergeLook
    from swapd.merger.masks import _Track
    from swapd.merger.session import ModelInfo

log = logging.getLogger(__name__)
_MASKED = {"lct": "lct-m", "mkl": "mkl-m", "idt": "idt-m", "sot": "sot-m"}


@dataclass(frozen=True)
class Placed:
    """A face placed for swapping: its track, crop matrix, landmarks in crop pixels, and how
    far it moved since the frame before (pixels; the track moves on with later frames)."""

    track: _Track
    matrix: np.ndarray
    crop_points: np.ndarray
    motion: np.ndarray


class Composer:
    """One file's merge state (faces followed across frames) and the options' per-face work.

    ``tuned``: swapd's (erode, blur) edge for the mean face and for learned masks.
    """

    def __init__(self, look: MergeLook, info: ModelInfo, *, prd: bool, dst: bool,
                 colour: bool = True, learned: bool = True,
                 tuned: tuple[tuple[float, float], tuple[float, float]] = ((0.08, 0.08),
                                                                          (0.05, 0.08))
                 ) -> None:
        self.look, self.info = look, info
        mode = look.mask if learned or look.mask != "auto" else "mean-face"
        self.mask_mode = resolve_mode(mode, prd, dst)
        if mode != "auto" and self.mask_mode != mode:
            log.warning("mask = %r needs a learned mask this model does not give: using %r",
                        mode, self.mask_mode)
        self._fixed_mask: np.ndarray | None = None  # the same for every face: made once
        self.colour = look.color_transfer if colour else "none"
        self.edge = Edge(look.erosion, look.erosion_top, look.erosion_bottom, look.erosion_left,
                         look.erosion_right, look.blur)
        if self.mask_mode in LEARNED_MODES:
            self.tuned = tuned[1]
        else:
            self.tuned = (0.0, tuned[0][1]) if self.mask_mode == "full" else tuned[0]
        self.steadier = FaceSteadier(look.box_smoothing, look.mask_smoothing)

    # --- where the faces are ------------------------------------------------------------

    def place(self, faces: list[Detection]) -> list[Placed]:
        """Each face's crop (call once per frame, in order). Refuses an upscale beyond
        ``max_upscale`` (:class:`finish.UpscaleRefused`)."""
        info = self.info
        placed = []
        for face, track in zip(faces, self.steadier.place(faces), strict=True):
            matrix = model_crop_matrix(track.points, info.input_size, info.coverage,
                                       info.centering)
            finish.check_upscale(finish.scaled_matrix(matrix, info.input_size,
                                                      self.look.output_face_scale),
                                 info.input_size, self.look.max_upscale)
            placed.append(Placed(track, matrix, transform_points(face.points, matrix),
                                 track.motion.copy()))
        return placed

    # --- one face -------------------------------------------------------------------------

    def mask(self, placed: Placed, prd: np.ndarray | None, dst: np.ndarray | None
             ) -> np.ndarray:
        """The face's blend mask in crop space, steadied across frames."""
        info = self.info
        fixed = self.mask_mode in ("mean-face", "full")
        if fixed and self._fixed_mask is not None:
            return self._fixed_mask
        points = placed.crop_points if self.mask_mode == "dst" else None
        raw = raw_mask(self.mask_mode, info.input_size, info.coverage, info.centering, points,
                       prd, dst)
        if self.look.mode not in ("raw-rgb", "raw-predict"):  # DFL: raw modes keep the mask
            raw = shape_mask(raw, self.tuned, self.edge)
        if fixed:
            self._fixed_mask = raw
            return raw
        return self.steadier.steady_mask(placed.track, raw)

    def compose(self, frame: np.ndarray, original: np.ndarray, swapped: np.ndarray,
                mask: np.ndarray, placed: Placed) -> None:
        """Draw the ``swapped`` crop (uint8) into ``frame`` (uint8, in place)."""
        look, mode = self.look, self.look.mode
        scale = np.float32(1 / 255)
        old, new = original.astype(np.float32) * scale, swapped.astype(np.float32) * scale
        if mode in ("overlay", "hist-match"):
            new = transfer(self.colour, new, old, mask, look, self.info.grayscale)
            if mode == "hist-match":
                new = self._hist_match_mode(new, old, mask)
        matrix = finish.scaled_matrix(placed.matrix, self.info.input_size,
                                      look.output_face_scale)
        region = warp_to_frame(new, mask, matrix, frame.shape)
        if region is None:
            return
        roi = frame[region.rows, region.cols]
        face, alpha = region.face, region.alpha
        if mode == "raw-rgb":
            alpha = region.footprint()
        elif mode.startswith("seamless"):
            face = self._seamless(roi, region)
        motion = placed.motion * 2.0  # DFL: from the frame before to the frame after
        face = finish.motion_blur(face, motion, look.motion_blur_power)
        width = self.info.input_size * finish.upscale_factor(matrix)
        face = finish.sharpen(face, look.sharpen, look.sharpen_amount, look.sharpen_radius,
                              look.sharpen_threshold, width)
        weight = alpha[..., None]
        blended = roi.astype(np.float32) * (1.0 - weight) + face * 255.0 * weight
        roi[...] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)

    def _hist_match_mode(self, new: np.ndarray, old: np.ndarray, mask: np.ndarray
                         ) -> np.ndarray:
        """DFL's hist-match mode, as MergeMasked.py: both faces white outside the mask (when
        masked), then its color_hist_match of the whole crops, with the threshold."""
        area = (mask > 0).astype(np.float32)[..., None]
        if not self.look.masked_hist_match:
            area = np.ones_like(area)
        white = 1.0 - area
        matched = color_hist_match(np.minimum(new * area + white, 1.0), old * area + white,
                                   self.look.hist_match_threshold)
        return np.clip(matched, 0.0, 1.0).astype(np.float32)

    def _seamless(self, roi: np.ndarray, region: Region) -> np.ndarray:
        face = seamless(roi, region.face, region.alpha)
        ref = roi.astype(np.float32) / 255.0
        method = _MASKED.get(self.colour, self.colour)
        face = transfer(method, face, ref, region.alpha, self.look, self.info.grayscale)
        if self.look.mode == "seamless-hist-match":
            inside = (region.footprint() > 0.5).astype(np.float32)
            face = np.clip(hist_match(face, ref, inside, self.look.hist_match_threshold),
                           0.0, 1.0).astype(np.float32)
        return face

    # --- the frame --------------------------------------------------------------------------

    def before(self, frame: np.ndarray) -> np.ndarray:
        """The frame the faces go into: denoised / degraded (DFL's), else as it is."""
        return finish.degrade_frame(frame, self.look.image_denoise_power,
                                    self.look.bicubic_degrade_power)

    def after(self, frame: np.ndarray) -> np.ndarray:
        return finish.colour_degrade(frame, self.look.color_degrade_power)

    def raw_predict(self, frame: np.ndarray, faces: list[np.ndarray]) -> np.ndarray:
        """DFL's raw-predict: the frame becomes the model's faces themselves (side by side,
        as large as the frame holds, on black); a frame without a face stays as it is."""
        if not faces:
            return frame
        h, w = frame.shape[:2]
        side = min(h, w // len(faces))
        out = np.zeros_like(frame)
        x = (w - side * len(faces)) // 2
        y = (h - side) // 2
        for face in faces:
            out[y:y + side, x:x + side] = cv2.resize(face, (side, side),
                                                     interpolation=cv2.INTER_CUBIC)
            x += side
        return out

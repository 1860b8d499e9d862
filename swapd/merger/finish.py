"""Finishing a merged face and its frame (DeepFaceLab's merger options, faceswap's sharpen):
sharpening, face scale, motion blur, denoise and bicubic degrade of the frame, colour degrade,
and the check that refuses faces upscaled beyond what a user would want.

Faces here are float32 BGR in [0, 1] at the frame's scale (warped into the frame), frames
uint8 BGR.
"""

from __future__ import annotations

import cv2
import numpy as np


class UpscaleRefused(ValueError):
    """A face would be drawn more than ``max_upscale`` times the model's output size."""


# --- the face ----------------------------------------------------------------------------


def sharpen(face: np.ndarray, method: str, amount: float, radius: float,
            threshold: float = 5.0, width: float | None = None) -> np.ndarray:
    """faceswap's sharpen: ``amount`` in percent, ``radius`` in percent of the face's
    ``width`` (pixels; default the patch's), ``threshold`` (of 255) for ``unsharp_mask``."""
    if method == "none" or amount <= 0:
        return face
    width = face.shape[1] if width is None else width
    px = max(1, round(width * radius / 100.0))
    size = (2 * px + 1, 2 * px + 1)
    gain = amount / 100.0
    if method == "box":
        kernel = np.zeros(size, np.float32)
        kernel[px, px] = 1.0
        kernel = kernel + (kernel - np.full(size, 1.0 / size[0] ** 2, np.float32)) * gain
        out = cv2.filter2D(face, -1, kernel, borderType=cv2.BORDER_REPLICATE)
    elif method == "gaussian":
        blur = cv2.GaussianBlur(face, size, 0)
        out = cv2.addWeighted(face, 1.0 + 0.5 * gain, blur, -0.5 * gain, 0)
    elif method == "unsharp_mask":
        # The unsharp mask proper: detail above the threshold is amplified, flat areas (and
        # their noise) are left alone. (faceswap's code selects the pixels below the threshold.)
        blur = cv2.GaussianBlur(face, size, 0)
        detail = face - blur
        keep = (np.abs(detail) >= threshold / 255.0).astype(np.float32)
        out = face + detail * gain * keep
    else:
        raise ValueError(f"unknown sharpen method {method!r}")
    return np.clip(out, 0.0, 1.0)


def motion_blur(face: np.ndarray, motion: np.ndarray, power: int) -> np.ndarray:
    """DeepFaceLab's motion blur: a line kernel along the face's motion, as long as
    ``power`` percent of the pixels it moved (from the frame before to the frame after)."""
    length = float(np.linalg.norm(motion))
    size = int(length * power / 100.0)
    if power <= 0 or size < 1:
        return face
    size = int(np.clip(size + 1, 2, 50))
    angle = -np.degrees(np.arctan2(motion[1], motion[0]))
    kernel = np.zeros((size, size), np.float32)
    kernel[(size - 1) // 2, :] = 1.0
    rotation = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (size, size))
    kernel /= kernel.sum()
    return cv2.filter2D(face, -1, kernel, borderType=cv2.BORDER_REPLICATE)


def scaled_matrix(matrix: np.ndarray, size: int, output_face_scale: int) -> np.ndarray:
    """The frame->crop affine that pastes the face with DeepFaceLab's ``output_face_scale``:
    the crop covers 1 / (1 + s/100) of its square around the same centre (so +10 draws the
    face smaller, -10 larger, as DeepFaceLab's does)."""
    if output_face_scale == 0:
        return matrix
    scale = 1.0 + output_face_scale / 100.0
    centre = size / 2.0
    about = np.array([[scale, 0.0, centre * (1 - scale)], [0.0, scale, centre * (1 - scale)],
                      [0.0, 0.0, 1.0]])
    return (about @ np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]


def upscale_factor(matrix: np.ndarray) -> float:
    """How many frame pixels one crop pixel covers (the face's upscale from the model)."""
    return float(1.0 / np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2]))))


def check_upscale(matrix: np.ndarray, size: int, max_upscale: float) -> None:
    factor = upscale_factor(matrix)
    if max_upscale > 0 and factor > max_upscale:
        raise UpscaleRefused(
            f"a face is {factor:.1f}x the model's {size} px output (max_upscale = "
            f"{max_upscale:g}): it would look blurred. Use a model with a larger input_size, "
            "or set max_upscale higher (0 = no limit) to merge it anyway")


# --- the frame -----------------------------------------------------------------------------


def degrade_frame(frame: np.ndarray, denoise: int, bicubic: int) -> np.ndarray:
    """DeepFaceLab's image denoise (median passes, 0..500) and bicubic degrade (0..100) of
    the frame the face goes into, so a sharp frame matches a softer swapped face."""
    if not denoise and not bicubic:
        return frame
    img = frame.astype(np.float32)
    n = denoise
    while n > 0:
        denoised = cv2.medianBlur(np.clip(img + 0.5, 0, 255).astype(np.uint8), 5)
        if n // 100:
            img = denoised.astype(np.float32)
        else:
            share = (n % 100) / 100.0
            img = img * (1.0 - share) + denoised.astype(np.float32) * share
        n = max(n - 10, 0)
    if bicubic:
        h, w = frame.shape[:2]
        p = 1.0 - bicubic / 101.0
        small = cv2.resize(img, (max(1, int(w * p)), max(1, int(h * p))),
                           interpolation=cv2.INTER_CUBIC)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def colour_degrade(frame: np.ndarray, power: int, colours: int = 256) -> np.ndarray:
    """DeepFaceLab's colour degrade: the frame reduced to an adaptive palette of 256 colours
    (k-means on a sample, a 32-level lookup cube), mixed in by ``power`` percent."""
    if power <= 0:
        return frame
    pixels = frame.reshape(-1, 3).astype(np.float32)
    rng = np.random.default_rng(0)
    sample = pixels[rng.choice(len(pixels), min(len(pixels), 20_000), replace=False)]
    k = min(colours, len(np.unique(sample, axis=0)))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    cv2.setRNGSeed(0)
    _, _, centres = cv2.kmeans(sample, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    levels = (np.arange(32, dtype=np.float32) * 8 + 4)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    nearest = np.empty(len(cube), np.int64)
    for start in range(0, len(cube), 4096):
        part = cube[start:start + 4096]
        nearest[start:start + 4096] = np.argmin(
            ((part[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    index = (frame.reshape(-1, 3) // 8).astype(np.int64)
    reduced = centres[nearest[(index[:, 0] * 32 + index[:, 1]) * 32 + index[:, 2]]]
    reduced = reduced.reshape(frame.shape)
    out = frame.astype(np.float32) * (1 - power / 100.0) + reduced * (power / 100.0)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)

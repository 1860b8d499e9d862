"""Small ONNX 'swap' models with known effects for the merge option tests: a colour cast (what
a colour transfer must undo), with the learned masks of a .dfm when asked."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

# BGR gain and offset of the cast: bluer, darker, flatter than the face it was given.
CAST_GAIN = (1.15, 0.8, 0.6)
CAST_OFFSET = (0.12, 0.02, -0.02)


def face_crops(frame: np.ndarray, landmarks: np.ndarray, size: int = 96
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A face crop of ``frame`` (float BGR), the same face with a known colour cast (CAST_GAIN,
    CAST_OFFSET), and the mean face's mask."""
    from swapd.faces.alignment import model_crop_matrix, warp_face
    from swapd.faces.landmarks import five_points
    from swapd.merger.blend import face_mask

    matrix = model_crop_matrix(five_points(landmarks), size, 0.875)
    original = warp_face(frame, matrix, size).astype(np.float32) / 255.0
    cast_face = np.clip(original * np.float32(CAST_GAIN) + np.float32(CAST_OFFSET), 0, 1
                        ).astype(np.float32)
    return original, cast_face, np.array(face_mask(size, 0.875, "face", 0.04, 0.04))


def ellipse_mask(size: int, shrink: float = 1.0) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (size // 2, int(size * 0.55)), (int(size * 0.3 * shrink),
                int(size * 0.38 * shrink)), 0, 0, 360, 1.0, -1)
    return mask


class _Cast(nn.Module):
    def __init__(self, size: int, masks: int, grayscale: bool = False) -> None:
        super().__init__()
        self.masks, self.grayscale = masks, grayscale
        self.register_buffer("gain", torch.tensor(CAST_GAIN).view(1, 3, 1, 1))
        self.register_buffer("offset", torch.tensor(CAST_OFFSET).view(1, 3, 1, 1))
        self.register_buffer("prd", torch.from_numpy(ellipse_mask(size)).view(1, 1, size, size))
        self.register_buffer("dst", torch.from_numpy(ellipse_mask(size, 0.8)).view(
            1, 1, size, size))

    def forward(self, face: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = torch.clamp(face * self.gain + self.offset, 0.0, 1.0)
        if self.grayscale:  # as a grayscale model's export: one channel repeated, darker
            out = (out.mean(dim=1, keepdim=True) * 0.6).expand(-1, 3, -1, -1)
        if not self.masks:
            return out
        ones = face[:, :1] * 0.0 + 1.0
        masks = (self.prd * ones, self.dst * ones)
        return (out, *masks[: self.masks])


def export_cast_model(path: Path, size: int = 64, masks: int = 0,
                      grayscale: bool = False) -> Path:
    """A model that casts the face's colours (``masks``: 1 adds a learned ``mask``, 2 also
    the destination's ``dst_mask``; ``grayscale``: draws a dark gray face and says so in its
    metadata), laid out as swapd's exporter lays models out."""
    import onnx

    names = ["swapped", "mask", "dst_mask"][: 1 + masks]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(_Cast(size, masks, grayscale).eval(), torch.rand(1, 3, size, size),
                          str(path),
                          input_names=["face"], output_names=names,
                          dynamic_axes={n: {0: "batch"} for n in ["face", *names]},
                          opset_version=17, dynamo=False)
    proto = onnx.load(str(path))
    for key, value in {"input_size": str(size), "coverage": "0.875", "centering": "face",
                       "model": "cast", "grayscale": "1" if grayscale else "0"}.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path

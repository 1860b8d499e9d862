"""The training augmentation as batched tensor operations on the training device.

The same augmentation as :class:`swapd.trainer.augment.Augmenter` (flip, rotation/zoom/shift of
the target and its masks, faceswap's random warp of the input, CLAHE and colour jitter in
L*a*b*), split
in two: the batch loader's threads only gather each side's uint8 crops and draw the batch's
random choices (:func:`draw_augment`, a few hundred numbers, from the very generator calls the
OpenCV path makes, so one seed gives the same choices on either path), and the trainer turns
them into pixels on its device (:class:`DeviceAugmenter`): the uint8 faces go up (a quarter of
float32's bytes), one ``grid_sample`` moves targets and masks together, a second warps the
inputs, CLAHE equalises the lightness of the faces drawn for it
(:mod:`swapd.trainer.clahe_device`, OpenCV's algorithm) and the colour jitter converts to
L*a*b* and back in torch.

The warp keeps faceswap's meaning (``lib/training/data/augmentation.py``, ``_random_warp``): a
5x5 grid of control points, each moved by Gaussian noise, interpolated bilinearly to 1.25x the
side and its outer tenth cut off each way, gives where each input pixel reads the target; the
model is asked for the unwarped target. ``F.interpolate`` (bilinear, half-pixel centres,
clamped) is ``cv2.resize``'s interpolation, and ``grid_sample`` with border padding is
``cv2.remap`` with ``BORDER_REPLICATE``: the maps are the OpenCV path's to rounding.

Differences from the OpenCV path, all below a grey level: targets and masks stay float (no
rounding to uint8 between the two samplings), and the L*a*b* conversion is the exact formula in
float32 where OpenCV's 8-bit one uses tables and rounds each channel. ``warp_to_landmarks``
(scipy's Delaunay interpolation per face) is not moved: it stays on the loader path (see
:func:`device_problem`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from swapd.trainer.augment import Augmenter, AugmentSettings
from swapd.trainer.clahe_device import clahe


@dataclass(frozen=True)
class AugmentDraw:
    """One side's random choices for one batch (drawn in the loader, applied on the device)."""

    flip: np.ndarray  # bool (n,)
    inverse: np.ndarray  # float32 (n, 2, 3): output pixel -> pixel of the (flipped) face
    noise: np.ndarray | None  # float32 (n, 2, 5, 5): warp control-point offsets, pixels
    clahe_tiles: np.ndarray  # int (n,): CLAHE's tiles per side, 0 for a face without it
    light: np.ndarray | None  # float32 (n,): L* factor
    chroma: np.ndarray | None  # float32 (n, 2): a*, b* shifts in OpenCV's 8-bit units


@dataclass(frozen=True)
class RawSide:
    """One side of a batch before augmentation: uint8 crops and their draw."""

    faces: np.ndarray  # uint8 NHWC
    masks: np.ndarray  # uint8 NHWC, face/eyes/mouth
    mask_known: np.ndarray  # float32 (n,)
    draw: AugmentDraw


@dataclass(frozen=True)
class RawBatch:
    """What the loader hands over when the trainer augments on its device."""

    a: RawSide
    b: RawSide


def device_problem(settings: AugmentSettings) -> str | None:
    """Why these settings cannot be augmented on the device (None when they can)."""
    if settings.warp and settings.warp_to_landmarks:
        return ("warp_to_landmarks (a Delaunay triangulation and its map per face) runs in "
                "the batch loader only")
    return None


def draw_augment(augmenter: Augmenter, n: int, channels: int,
                 rng: np.random.Generator) -> AugmentDraw:
    """The random choices ``augmenter`` would make for ``n`` faces of ``channels`` channels,
    drawn from ``rng`` in its order (flip, each face's transform, each face's warp noise,
    CLAHE, colour), with the same generator calls."""
    s = augmenter.settings
    flip = rng.random(n) < 0.5 if s.flip else np.zeros(n, dtype=bool)
    inverse = np.stack([cv2.invertAffineTransform(matrix)
                        for matrix in augmenter.random_transforms(rng, n)]).astype(np.float32)
    noise = augmenter.grid_noise(rng, n).astype(np.float32) if s.warp else None
    tiles = np.zeros(n, dtype=np.int64)
    if s.clahe > 0:
        for face, grid in augmenter.clahe_choices(n, rng):
            tiles[face] = grid
    light = chroma = None
    if s.colour:
        light = (1 + rng.uniform(-s.lightness, s.lightness, n)).astype(np.float32)
        if channels == 3:
            chroma = (rng.uniform(-s.chroma, s.chroma, (n, 2)) * 255).astype(np.float32)
    return AugmentDraw(flip, inverse, noise, tiles, light, chroma)


# sRGB (D65) <-> CIE XYZ, and the white point XYZ is divided by before L*a*b* (OpenCV's).
_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423),
               (0.212671, 0.715160, 0.072169),
               (0.019334, 0.119193, 0.950227))
_WHITE = (0.950456, 1.0, 1.088754)
_EPSILON = 0.008856  # (6/29)^3: below it f(t) is linear
_KAPPA = 7.787  # the linear part's slope


class DeviceAugmenter:
    """Applies :class:`AugmentDraw` choices to uint8 faces on ``device``; float32 NCHW out."""

    def __init__(self, size: int, settings: AugmentSettings, device: torch.device) -> None:
        problem = device_problem(settings)
        if problem:
            raise ValueError(f"augment_device = 'device': {problem}")
        self.size, self.settings, self.device = size, settings, device
        centres = torch.arange(size, dtype=torch.float32, device=device)
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        self._pixels = torch.stack([xs, ys], dim=-1)  # (H, W, 2): each pixel's (x, y)
        points = torch.linspace(-0.5, size - 0.5, 5, device=device)
        self._control = torch.stack([points.expand(5, 5), points[:, None].expand(5, 5)])
        self._pad = int(round(size * 1.25))
        self._cut = slice(self._pad // 10, self._pad // 10 + size)
        matrix = torch.tensor(_RGB_TO_XYZ, device=device)
        white = torch.tensor(_WHITE, device=device)
        self._to_xyz = matrix / white[:, None]  # rows scaled: XYZ already over the white
        self._from_xyz = torch.linalg.inv(self._to_xyz)

    def upload(self, images: np.ndarray) -> torch.Tensor:
        """uint8 NHWC from the loader -> the device (pinned and asynchronous on CUDA)."""
        tensor = torch.from_numpy(images)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def side(self, raw: RawSide) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs, targets, masks) of one side, float32 NCHW in [0, 1] on the device."""
        return self(self.upload(raw.faces), self.upload(raw.masks), raw.draw)

    def __call__(self, faces: torch.Tensor, masks: torch.Tensor, draw: AugmentDraw
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``faces`` and ``masks``: uint8 NHWC tensors on the device."""
        channels = faces.shape[-1]
        both = torch.cat([faces, masks], dim=-1).permute(0, 3, 1, 2).float().div_(255)
        # Target and masks: flipped, then cv2.warpAffine's map (each output pixel reads the
        # flipped face at the inverse transform of its position), one sampling for both.
        inverse = torch.from_numpy(draw.inverse).to(self.device)[:, None, None]  # (N,1,1,2,3)
        x, y = self._pixels[..., :1], self._pixels[..., 1:]
        source = x * inverse[..., 0] + y * inverse[..., 1] + inverse[..., 2]  # (N, H, W, 2)
        flip = torch.from_numpy(draw.flip).to(self.device)[:, None, None]
        source[..., 0] = torch.where(flip, self.size - 1 - source[..., 0], source[..., 0])
        moved = self._sample(both, source)
        targets, masks_out = moved[:, :channels], moved[:, channels:]
        inputs = targets
        if draw.noise is not None:
            inputs = self._sample(targets, self._warp_map(draw.noise))
        if draw.clahe_tiles.any():
            inputs = self._equalise(inputs, draw.clahe_tiles)
        if draw.light is not None:
            inputs = self._jitter(inputs, draw)
        return inputs.contiguous(), targets.contiguous(), masks_out.contiguous()

    def _warp_map(self, noise: np.ndarray) -> torch.Tensor:
        """faceswap's warp: the moved 5x5 control grid, resized to 1.25x the side, the
        middle ``size`` pixels: (N, H, W, 2) source positions in pixels."""
        grid = self._control + torch.from_numpy(noise).to(self.device)
        dense = F.interpolate(grid, size=(self._pad, self._pad), mode="bilinear",
                              align_corners=False)
        return dense[:, :, self._cut, self._cut].permute(0, 2, 3, 1)

    def _sample(self, images: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """``images`` read at ``pixels`` ((N, H, W, 2) as (x, y), pixel centres), bilinear,
        edges repeated (cv2.remap's INTER_LINEAR with BORDER_REPLICATE)."""
        grid = (pixels + 0.5) * (2 / self.size) - 1
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                             align_corners=False)

    def _equalise(self, faces: torch.Tensor, tiles: np.ndarray) -> torch.Tensor:
        """CLAHE on the lightness (L* as OpenCV's 8-bit Lab holds it; the value of one
        channel) of the faces with tiles, a group per grid; the others unchanged."""
        out = faces.clone()
        for grid in np.unique(tiles[tiles > 0]):
            rows = torch.from_numpy(np.flatnonzero(tiles == grid)).to(self.device)
            chosen = faces[rows]
            if faces.shape[1] == 1:
                out[rows] = clahe(torch.round(chosen[:, 0] * 255), int(grid))[:, None] / 255
                continue
            lab = self.bgr_to_lab(chosen)
            levels = torch.round(lab[:, 0] * (255 / 100)).clamp_(0, 255)
            lab[:, 0] = clahe(levels, int(grid)) * (100 / 255)
            out[rows] = self.lab_to_bgr(lab).clamp_(0, 1)
        return out

    def _jitter(self, faces: torch.Tensor, draw: AugmentDraw) -> torch.Tensor:
        """L* scaled, a*/b* shifted per face (clipped to the 8-bit Lab range as OpenCV's
        uint8 round trip does); one channel: the values scaled."""
        assert draw.light is not None
        light = torch.from_numpy(draw.light).to(self.device)[:, None, None, None]
        if faces.shape[1] == 1:
            return (faces * light).clamp_(0, 1)
        lab = self.bgr_to_lab(faces)
        lightness = (lab[:, :1] * light).clamp(0, 100)
        assert draw.chroma is not None
        shift = torch.from_numpy(draw.chroma).to(self.device)[:, :, None, None]
        colour = (lab[:, 1:] + shift).clamp(-128, 127)
        return self.lab_to_bgr(torch.cat([lightness, colour], dim=1)).clamp_(0, 1)

    def bgr_to_lab(self, bgr: torch.Tensor) -> torch.Tensor:
        """BGR in [0, 1] (N, 3, H, W) -> L* in [0, 100], a*, b* (OpenCV's COLOR_BGR2Lab:
        sRGB gamma, D65)."""
        rgb = bgr.flip(1)
        linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055).pow(2.4))
        xyz = torch.einsum("ij,njhw->nihw", self._to_xyz, linear)
        f = torch.where(xyz > _EPSILON, xyz.clamp(min=_EPSILON).pow(1 / 3),
                        _KAPPA * xyz + 16 / 116)
        fx, fy, fz = f.unbind(1)
        return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)

    def lab_to_bgr(self, lab: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`bgr_to_lab` (values outside [0, 1] not yet clipped)."""
        lightness, a, b = lab.unbind(1)
        fy = (lightness + 16) / 116
        f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=1)
        xyz = torch.where(f > 6 / 29, f.pow(3), (f - 16 / 116) / _KAPPA)
        linear = torch.einsum("ij,njhw->nihw", self._from_xyz, xyz).clamp(0, 1)
        rgb = torch.where(linear <= 0.0031308, linear * 12.92,
                          1.055 * linear.clamp(min=0.0031308).pow(1 / 2.4) - 0.055)
        return rgb.flip(1)

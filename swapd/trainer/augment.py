"""faceswap-style training augmentation on uint8 NHWC batches (numpy + cv2).

Per face: horizontal flip (50 %), a small random rotation/zoom/shift applied to the model
input, the target and the target's masks alike, then a random warp of the input only: a 5x5
grid of control points jittered with Gaussian noise, interpolated to a dense map and applied
with ``cv2.remap``. The model learns to undo the warp, which is what makes the swap work.

Contrast-limited adaptive histogram equalisation (CLAHE, on L*; faceswap's 50 % chance, tile
grids of 1 to 4 per side, more for faces over 128 px) and colour jitter in L*a*b* (lightness
±30 %, a/b ±8 %, faceswap's ranges) are applied to the input only: each decoder must then draw
its identity's own colouring rather than copy it from the input, so a swap takes the target's
skin tone instead of the source's (measured in benchmarks/demo_benchmark.py: see
docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentSettings:
    """Strength of each augmentation (faceswap's defaults)."""

    warp: bool = True
    flip: bool = True
    rotation_deg: float = 10.0
    zoom: float = 0.05
    shift: float = 0.05
    warp_noise: float = 5 / 256  # control-point noise, as a share of the side
    colour: bool = True
    lightness: float = 0.30  # L* scaled by up to ±30 %
    chroma: float = 0.08  # a*, b* shifted by up to ±8 % of their range
    clahe: float = 0.5  # share of inputs equalised
    clahe_max_grid: int = 4  # tiles per side, at most (times size // 128 for big faces)


class Augmenter:
    """Makes (warped input, target) pairs from a batch of model-size faces."""

    def __init__(self, size: int, settings: AugmentSettings | None = None) -> None:
        self.size = size
        self.settings = settings or AugmentSettings()
        # Control points span the image in pixel-centre coordinates, so a noise-free warp
        # is the identity; the grid is interpolated to 1.25x the side and the outer 10 %
        # cut off each way, leaving a smooth map of exactly `size` pixels.
        points = np.linspace(-0.5, size - 0.5, 5, dtype=np.float32)
        self._grid_x = np.broadcast_to(points, (5, 5)).copy()
        self._grid_y = self._grid_x.T.copy()
        self._pad = int(round(size * 1.25))
        self._cut = slice(self._pad // 10, self._pad // 10 + size)

    def __call__(
        self, faces: np.ndarray, rng: np.random.Generator, masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (inputs, targets, masks), uint8 NHWC like ``faces`` and ``masks`` (which are
        not changed). The masks follow the targets' flip and transform; without ``masks`` the
        third result is an empty array."""
        s = self.settings
        n, channels = len(faces), faces.shape[-1]
        # Target and masks travel together (one array, one warp per face): the same flip and
        # transform by construction.
        both = faces if masks is None else np.concatenate([faces, masks], axis=-1)
        both = both.copy()
        if s.flip:
            flip = rng.random(n) < 0.5
            both[flip] = both[flip][:, :, ::-1]
        for i in range(n):
            both[i] = self._apply(both[i], self._random_transform(rng))
        targets = np.ascontiguousarray(both[..., :channels])
        masks = np.ascontiguousarray(both[..., channels:])
        inputs = np.stack([self._warp(t, rng) for t in targets]) if s.warp else targets.copy()
        if s.clahe > 0:
            inputs = self._equalise(inputs, rng)
        if s.colour:
            inputs = self._jitter_colour(inputs, rng)
        return inputs, targets, masks

    def _jitter_colour(self, faces: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Per face: L* scaled by up to ±lightness, a*/b* shifted by up to ±chroma (in one
        colour conversion each way for the whole batch)."""
        n, size = len(faces), faces.shape[1]
        light = 1 + rng.uniform(-self.settings.lightness, self.settings.lightness, n)
        if faces.shape[-1] == 1:
            lit = faces.astype(np.float32) * light[:, None, None, None]
            return np.clip(lit, 0, 255).astype(np.uint8)
        tall = faces.reshape(n * size, size, 3)  # the batch as one image for cvtColor
        lab = cv2.cvtColor(tall, cv2.COLOR_BGR2LAB).astype(np.float32).reshape(faces.shape)
        lab[..., 0] *= light[:, None, None]
        lab[..., 1:] += (rng.uniform(-self.settings.chroma, self.settings.chroma, (n, 2))
                         * 255)[:, None, None, :]
        out = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8).reshape(n * size, size, 3),
                           cv2.COLOR_LAB2BGR)
        return out.reshape(faces.shape)

    def _equalise(self, faces: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """CLAHE on the lightness of a random ``clahe`` share of the faces, in place."""
        chosen = np.flatnonzero(rng.random(len(faces)) < self.settings.clahe)
        base = max(1, self.size // 128)
        for i, grid in zip(chosen, rng.integers(1, self.settings.clahe_max_grid + 1,
                                                len(chosen)), strict=True):
            clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(int(grid) * base,) * 2)
            if faces.shape[-1] == 1:
                faces[i, ..., 0] = clahe.apply(np.ascontiguousarray(faces[i, ..., 0]))
                continue
            lab = cv2.cvtColor(faces[i], cv2.COLOR_BGR2LAB)
            lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
            faces[i] = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
        return faces

    def _random_transform(self, rng: np.random.Generator) -> np.ndarray:
        """A 2x3 rotation/zoom/shift about the centre, within the settings' ranges."""
        s = self.settings
        angle = rng.uniform(-s.rotation_deg, s.rotation_deg)
        scale = rng.uniform(1 - s.zoom, 1 + s.zoom)
        tx, ty = rng.uniform(-s.shift, s.shift, 2) * self.size
        centre = ((self.size - 1) / 2, (self.size - 1) / 2)
        mat = cv2.getRotationMatrix2D(centre, angle, scale)
        mat[:, 2] += (tx, ty)
        return mat

    def _apply(self, image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        out = cv2.warpAffine(
            image,
            matrix,
            (self.size, self.size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return out.reshape(image.shape)

    def _warp(self, face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = rng.normal(scale=self.settings.warp_noise * self.size, size=(2, 5, 5))
        maps = []
        for grid, jitter in ((self._grid_x, noise[0]), (self._grid_y, noise[1])):
            dense = cv2.resize((grid + jitter).astype(np.float32), (self._pad, self._pad))
            maps.append(dense[self._cut, self._cut])
        out = cv2.remap(face, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return out.reshape(face.shape)

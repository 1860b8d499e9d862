"""faceswap-style training augmentation on uint8 NHWC batches (numpy + cv2).

Per face: horizontal flip (50 %), a small random rotation/zoom/shift applied to the model
input, the target and the target's masks alike, then a random warp of the input only: a 5x5
grid of control points jittered with Gaussian noise, interpolated to a dense map and applied
with ``cv2.remap``. The model learns to undo the warp, which is what makes the swap work.
With ``warp_to_landmarks`` the input's warp instead moves each face's landmarks toward a
similar face's of the other side (:mod:`swapd.trainer.warp_landmarks`).

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
    warp_to_landmarks: bool = False  # warp toward the other side's landmarks (faces with them)
    landmark_noise: float = 2 / 256  # destination landmark noise, as a share of the side
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
        self, faces: np.ndarray, rng: np.random.Generator, masks: np.ndarray | None = None,
        landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (inputs, targets, masks), uint8 NHWC like ``faces`` and ``masks`` (which are
        not changed). The masks follow the targets' flip and transform; without ``masks`` the
        third result is an empty array. With ``warp_to_landmarks``, ``landmarks`` drive the
        input's warp: each face's 68 crop landmarks (N, 68, 2) and those of its closest faces
        of the other side (N, K, 68, 2), one of which is drawn per face; NaN where unknown (a
        face without them gets the grid warp)."""
        s = self.settings
        n = len(faces)
        # Target and masks get the same flip and transform, each face's matrix applied to
        # both (two warps of <= 4 channels: OpenCV's fast path, where one of 6 is not).
        targets = faces.copy()
        masks = (np.empty((*faces.shape[:3], 0), np.uint8) if masks is None
                 else masks.copy())
        flip = np.zeros(n, dtype=bool)
        if s.flip:
            flip = rng.random(n) < 0.5
            targets[flip] = targets[flip][:, :, ::-1]
            masks[flip] = masks[flip][:, :, ::-1]
        matrices = []
        for i in range(n):
            matrices.append(self.random_transform(rng))
            targets[i] = self._apply(targets[i], matrices[i])
            if masks.shape[-1]:
                masks[i] = self._apply(masks[i], matrices[i])
        if s.warp and s.warp_to_landmarks and landmarks is not None:
            inputs = self._warp_to_landmarks(targets, landmarks, flip, matrices, rng)
        elif s.warp:
            inputs = np.stack([self._warp(t, rng) for t in targets])
        else:
            inputs = targets.copy()
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
        lab = cv2.cvtColor(tall, cv2.COLOR_BGR2LAB).reshape(faces.shape)
        shift = rng.uniform(-self.settings.chroma, self.settings.chroma, (n, 2)) * 255
        # Per face a lookup table of each channel's 256 levels (L* scaled, a*/b* shifted,
        # rounded, not truncated (which shifted every channel by half a level on average):
        # a float pass over 256 values instead of over every pixel.
        # float64, as the old per-pixel path computed (a float32 array times a float64
        # scalar would stay in float32 under NumPy 1)
        levels = np.arange(256, dtype=np.float64)
        for i in range(n):
            table = np.stack([(levels * light[i]).astype(np.float32),
                              (levels + shift[i, 0]).astype(np.float32),
                              (levels + shift[i, 1]).astype(np.float32)], axis=-1)
            table = np.clip(np.rint(table), 0, 255).astype(np.uint8).reshape(256, 1, 3)
            lab[i] = cv2.LUT(lab[i], table)
        out = cv2.cvtColor(lab.reshape(n * size, size, 3), cv2.COLOR_LAB2BGR)
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

    def random_transform(self, rng: np.random.Generator) -> np.ndarray:
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

    def _warp_to_landmarks(self, targets: np.ndarray, landmarks: tuple[np.ndarray, np.ndarray],
                           flip: np.ndarray, matrices: list[np.ndarray],
                           rng: np.random.Generator) -> np.ndarray:
        """Per target: the landmark warp from its landmarks to those of one of its candidates
        (drawn at random), both moved by the target's own flip and transform (so the warp is
        the one the aligned face would get, carried along), plus noise; the grid warp where
        they are unknown.

        A flip mirrors both point sets without renumbering them: source and destination stay
        paired point by point, and mirroring keeps their distance, so the match stays close.

        ``rng`` gives the grid noise of every face, used or not, and the landmark draws come
        from a generator spawned from it (which leaves its stream alone): ``rng`` is drawn
        exactly as with the option off, so switching it on changes the warp and nothing else
        (the same targets, the same colour jitter, the other side's batch too).
        """
        from swapd.trainer.warp_landmarks import follow, warp_to_landmarks

        own = rng.spawn(1)[0]
        src, candidates = landmarks
        known = np.isfinite(src).all(axis=(1, 2)) & (candidates.shape[1] > 0)
        inputs = []
        for i, target in enumerate(targets):
            noise = self.grid_noise(rng)
            warped = None
            dst = candidates[i, own.integers(candidates.shape[1])] if known[i] else None
            if dst is not None and np.isfinite(dst).all():
                moved_src = follow(src[i], bool(flip[i]), matrices[i], self.size)
                moved_dst = follow(dst, bool(flip[i]), matrices[i], self.size)
                moved_dst += own.normal(scale=self.settings.landmark_noise * self.size,
                                        size=moved_dst.shape)
                warped = warp_to_landmarks(target, moved_src, moved_dst)
            inputs.append(self._grid_warp(target, noise) if warped is None else warped)
        return np.stack(inputs)

    def grid_noise(self, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(scale=self.settings.warp_noise * self.size, size=(2, 5, 5))

    def _warp(self, face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self._grid_warp(face, self.grid_noise(rng))

    def _grid_warp(self, face: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """The 5x5 control grid moved by ``noise`` (2, 5, 5), as a dense map, applied."""
        maps = []
        for grid, jitter in ((self._grid_x, noise[0]), (self._grid_y, noise[1])):
            dense = cv2.resize((grid + jitter).astype(np.float32), (self._pad, self._pad))
            maps.append(dense[self._cut, self._cut])
        out = cv2.remap(face, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return out.reshape(face.shape)

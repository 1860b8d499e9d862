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
        self._weights: np.ndarray | None = None  # see _grid_warps

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
        flip = rng.random(n) < 0.5 if s.flip else np.zeros(n, dtype=bool)
        matrices = self.random_transforms(rng, n)
        # Target and masks get the same flip and transform, in one warp each (the flip folded
        # into the face's matrix), written straight into the batch: two warps of <= 4
        # channels, OpenCV's fast path, where one of 6 is not.
        targets = np.empty_like(faces)
        masks = (np.empty((*faces.shape[:3], 0), np.uint8) if masks is None
                 else masks)
        warped_masks = np.empty_like(masks)
        for i in range(n):
            matrix = self._with_flip(matrices[i]) if flip[i] else matrices[i]
            self._apply(faces[i], matrix, targets[i])
            if masks.shape[-1]:
                self._apply(masks[i], matrix, warped_masks[i])
        if s.warp and s.warp_to_landmarks and landmarks is not None:
            inputs = self._warp_to_landmarks(targets, landmarks, flip, matrices, rng)
        elif s.warp:
            inputs = self._grid_warps(targets, self.grid_noise(rng, n))
        else:
            inputs = targets.copy()
        equalise = self.clahe_choices(len(inputs), rng) if s.clahe > 0 else []
        if s.colour:
            inputs = self._jitter_colour(inputs, rng, equalise)
        elif equalise:
            inputs = self._equalise(inputs, equalise)
        return inputs, targets, warped_masks

    def _jitter_colour(self, faces: np.ndarray, rng: np.random.Generator,
                       equalise: list[tuple[int, int]]) -> np.ndarray:
        """Per face: L* scaled by up to ±lightness, a*/b* shifted by up to ±chroma (in one
        colour conversion each way for the whole batch), after CLAHE on the L* of the faces
        in ``equalise`` (in the same conversion, as faceswap's color_adjust does; on its own
        L*a*b* round trip per face CLAHE cost a quarter of the augmentation's CPU)."""
        n, size = len(faces), faces.shape[1]
        light = 1 + rng.uniform(-self.settings.lightness, self.settings.lightness, n)
        if faces.shape[-1] == 1:
            faces = self._equalise(faces, equalise)
            lit = faces.astype(np.float32) * light[:, None, None, None]
            return np.clip(np.rint(lit), 0, 255).astype(np.uint8)  # rounded, as colour is
        tall = faces.reshape(n * size, size, 3)  # the batch as one image for cvtColor
        lab = cv2.cvtColor(tall, cv2.COLOR_BGR2LAB).reshape(faces.shape)
        shift = rng.uniform(-self.settings.chroma, self.settings.chroma, (n, 2)) * 255
        for i, tiles in equalise:
            lab[i, ..., 0] = _clahe(lab[i, ..., 0], tiles)
        # Per face a lookup table of each channel's 256 levels (L* scaled, a*/b* shifted,
        # rounded, not truncated (which shifted every channel by half a level on average):
        # a float pass over 256 values instead of over every pixel. float64 products, as the
        # old per-pixel path computed (under NumPy 1 a float32 array times a float64 scalar
        # stays float32), rounded in float32 as it did.
        levels = np.arange(256, dtype=np.float64)
        tables = np.stack([levels * light[:, None], levels + shift[:, 0, None],
                           levels + shift[:, 1, None]], axis=-1).astype(np.float32)
        tables = np.clip(np.rint(tables), 0, 255).astype(np.uint8)
        for i in range(n):
            cv2.LUT(lab[i], tables[i].reshape(256, 1, 3), dst=lab[i])
        out = cv2.cvtColor(lab.reshape(n * size, size, 3), cv2.COLOR_LAB2BGR)
        return out.reshape(faces.shape)

    def clahe_choices(self, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        """(face, tiles per side) for a random ``clahe`` share of ``n`` faces (the loader's
        draw, which the device path's draw repeats)."""
        chosen = np.flatnonzero(rng.random(n) < self.settings.clahe)
        grids = rng.integers(1, self.settings.clahe_max_grid + 1, len(chosen))
        base = max(1, self.size // 128)
        return [(int(i), int(grid) * base) for i, grid in zip(chosen, grids, strict=True)]

    @staticmethod
    def _equalise(faces: np.ndarray, equalise: list[tuple[int, int]]) -> np.ndarray:
        """CLAHE on the lightness of the faces in ``equalise``, in place: a grey face's one
        channel, a colour face's L* on an L*a*b* round trip of its own (colour faces go
        through :meth:`_jitter_colour`'s round trip instead when the jitter is on)."""
        for i, tiles in equalise:
            if faces.shape[-1] == 1:
                faces[i, ..., 0] = _clahe(faces[i, ..., 0], tiles)
                continue
            lab = cv2.cvtColor(faces[i], cv2.COLOR_BGR2LAB)
            lab[..., 0] = _clahe(lab[..., 0], tiles)
            faces[i] = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
        return faces

    def random_transform(self, rng: np.random.Generator) -> np.ndarray:
        """A 2x3 rotation/zoom/shift about the centre, within the settings' ranges."""
        return self.random_transforms(rng, 1)[0]

    def random_transforms(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` of :meth:`random_transform`'s matrices (n, 2, 3), drawn as n calls of it
        would be (per face: angle, scale, x and y shift); ``cv2.getRotationMatrix2D``'s
        formula, for all faces at once."""
        s = self.settings
        low = np.array([-s.rotation_deg, 1 - s.zoom, -s.shift, -s.shift])
        high = np.array([s.rotation_deg, 1 + s.zoom, s.shift, s.shift])
        # Generator.uniform(low, high) is low + (high - low) * random(): the same values
        draws = low + (high - low) * rng.random((n, 4))
        angle, scale = np.deg2rad(draws[:, 0]), draws[:, 1]
        alpha, beta = scale * np.cos(angle), scale * np.sin(angle)
        centre = (self.size - 1) / 2
        shift = draws[:, 2:] * self.size
        return np.stack([
            np.stack([alpha, beta, (1 - alpha) * centre - beta * centre + shift[:, 0]], -1),
            np.stack([-beta, alpha, beta * centre + (1 - alpha) * centre + shift[:, 1]], -1),
        ], axis=1)

    def _with_flip(self, matrix: np.ndarray) -> np.ndarray:
        """``matrix`` applied after a horizontal flip, as one matrix (x -> size - 1 - x)."""
        flipped = matrix.copy()
        flipped[:, 0] = -matrix[:, 0]
        flipped[:, 2] += matrix[:, 0] * (self.size - 1)
        return flipped

    def _apply(self, image: np.ndarray, matrix: np.ndarray, out: np.ndarray) -> None:
        """``image`` warped by ``matrix`` into ``out`` (the batch's slot for it)."""
        cv2.warpAffine(image, matrix, (self.size, self.size), dst=out.reshape(
            out.shape[:2] if out.shape[-1] == 1 else out.shape), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE)

    def _warp_to_landmarks(self, targets: np.ndarray, landmarks: tuple[np.ndarray, np.ndarray],
                           flip: np.ndarray, matrices: np.ndarray,
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
        from swapd.trainer.warp_landmarks import follow, warp_faces_to_landmarks

        own = rng.spawn(1)[0]
        src, candidates = landmarks
        n = len(targets)
        noise = self.grid_noise(rng, n)  # the same numbers as one draw per face
        known = np.isfinite(src).all(axis=(1, 2)) & (candidates.shape[1] > 0)
        dst = np.full(src.shape, np.nan)
        jitter = np.zeros(src.shape)
        for i in np.flatnonzero(known):  # own's draws face by face, in their order
            dst[i] = candidates[i, own.integers(candidates.shape[1])]
            if np.isfinite(dst[i]).all():
                jitter[i] = own.normal(scale=self.settings.landmark_noise * self.size,
                                       size=dst.shape[1:])
        matrices = np.asarray(matrices)
        inputs, warped = warp_faces_to_landmarks(
            targets, follow(src, flip, matrices, self.size),
            follow(dst, flip, matrices, self.size) + jitter)
        for i in np.flatnonzero(~warped):
            inputs[i] = self._grid_warp(targets[i], noise[i])
        return inputs

    def grid_noise(self, rng: np.random.Generator, n: int = 1) -> np.ndarray:
        """Control-point noise (n, 2, 5, 5), as ``n`` draws of one face's would be."""
        return rng.normal(scale=self.settings.warp_noise * self.size, size=(n, 2, 5, 5))

    def _grid_warp(self, face: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """The 5x5 control grid moved by ``noise`` (2, 5, 5), as a dense map, applied."""
        return self._grid_warps(face[None], noise[None])[0]

    def _grid_warps(self, faces: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Each face warped by its control grid moved by ``noise`` (n, 2, 5, 5)."""
        if self._weights is None:
            # The dense map is the grid resized bilinearly (cv2.resize's weights) to 1.25x
            # the side, its outer 10 % cut off: per axis a (size, 5) weight matrix, so every
            # face's map is two small matrix products (one resize call per face and axis
            # before, the loader's largest share after the colour conversion).
            identity = np.eye(5, dtype=np.float32)
            self._weights = cv2.resize(identity, (self._pad, 5))[:, self._cut].T.copy()
        grids = (np.stack([self._grid_x, self._grid_y])[None] + noise).astype(np.float32)
        weights = self._weights
        # maps[n, c, y, x] = sum_jk weights[y, j] * grids[n, c, j, k] * weights[x, k]
        maps = weights @ grids @ weights.T
        out = np.empty_like(faces)
        for face, (map_x, map_y), slot in zip(faces, maps, out, strict=True):
            cv2.remap(face, map_x, map_y, cv2.INTER_LINEAR, dst=slot.reshape(
                slot.shape[:2] if slot.shape[-1] == 1 else slot.shape),
                borderMode=cv2.BORDER_REPLICATE)
        return out


def _clahe(lightness: np.ndarray, tiles: int) -> np.ndarray:
    """OpenCV's CLAHE (faceswap's clip limit of 2) of one uint8 channel, ``tiles`` per side."""
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(tiles, tiles))
    return clahe.apply(np.ascontiguousarray(lightness))

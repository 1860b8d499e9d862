"""Face sets of the demo's people: varied views, written as faceswap-format aligned PNGs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from swapd.demo.identity import Expression, Identity, Lighting
from swapd.demo.painter import make_background, render_face
from swapd.faces.alignment import Centering, aligned_matrix, transform_points, warp_face


def random_view(rng: np.random.Generator) -> dict:
    """A varied pose/expression/lighting for training sets (keyword arguments of render_face)."""
    return {
        "pose": (float(rng.uniform(-35, 35)), float(rng.uniform(-18, 18)),
                 float(rng.uniform(-15, 15))),
        "expression": Expression(mouth_open=float(rng.choice([0.0, rng.uniform(0, 1)])),
                                 smile=float(rng.uniform(0, 1)),
                                 blink=float(rng.choice([0.0, 0.0, 0.0, rng.uniform(0, 1)]))),
        "lighting": Lighting(direction=(float(rng.uniform(-0.8, 0.8)),
                                        float(rng.uniform(-0.8, 0.3)), 0.7),
                             intensity=float(rng.uniform(0.35, 0.75)),
                             ambient=float(rng.uniform(0.4, 0.6))),
    }


def write_face_set(folder: str | os.PathLike[str], identity: Identity, count: int, seed: int,
                   size: int = 256, centering: Centering = "face") -> list[Path]:
    """Render `count` varied frames of `identity` and save aligned faceswap-format PNGs.

    Files are named like faceswap's extract output: `<source stem>_<face index>.png`. Returns
    the written paths.
    """
    from swapd.faces.faceswap_png import FaceswapMeta, write_aligned_png

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frame_w = frame_h = int(size * 1.5)  # the crop plus room for roll and shifts
    backgrounds = [make_background((frame_w, frame_h), seed * 1000 + i) for i in range(8)]
    paths = []
    for i in range(count):
        view = random_view(rng)
        height = size * float(rng.uniform(0.7, 0.8))
        centre = (frame_w / 2 + rng.uniform(-0.04, 0.04) * frame_w,
                  frame_h / 2 + rng.uniform(-0.04, 0.04) * frame_h)
        rendered = render_face(identity, frame_size=(frame_w, frame_h), centre=centre,
                               face_height_px=height,
                               background=backgrounds[int(rng.integers(len(backgrounds)))],
                               **view)
        matrix = aligned_matrix(rendered.landmarks, size, centering)
        face = warp_face(rendered.image, matrix, size)
        stem = f"{identity.name}_{seed:04d}_{i:06d}"
        name = f"{stem}_0.png"
        x, y, bw, bh = _landmark_box(rendered.landmarks)
        meta = FaceswapMeta(
            x=x, y=y, w=bw, h=bh, landmarks_xy=rendered.landmarks.astype(np.float32),
            original_filename=name, face_index=0, source_filename=f"{stem}.png",
            source_is_video=False, source_frame_dims=(frame_h, frame_w),
            swapd={"centering": centering, "size": size, "pose": list(rendered.pose),
                   "aligned_landmarks": transform_points(rendered.landmarks, matrix)
                   .round(2).tolist()},
        )
        path = out / name
        write_aligned_png(path, face, meta, durable=False)
        paths.append(path)
    return paths


def _landmark_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """A detector-like face box (x, y, w, h) around 68 landmarks."""
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    top = lo[1] - 0.15 * (hi[1] - lo[1])
    return int(lo[0]), int(top), int(hi[0] - lo[0]), int(hi[1] - top)

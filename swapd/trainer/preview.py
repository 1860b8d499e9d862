"""Preview grid in faceswap's layout: columns A, A>A, A>B, B, B>B, B>A; one row per face."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from swapd.fsutil import atomic_write_bytes

COLUMNS = ("A", "A>A", "A>B", "B", "B>B", "B>A")
MIN_CELL = 64  # cells smaller than this are upscaled so the headers stay readable


def header_height(cell: int) -> int:
    """Height in pixels of the header band above ``cell``-wide columns."""
    return max(14, cell // 6)


def to_uint8_nhwc(batch: np.ndarray) -> np.ndarray:
    """float NCHW in [0, 1] -> uint8 NHWC."""
    return (np.clip(batch.transpose(0, 2, 3, 1), 0, 1) * 255 + 0.5).astype(np.uint8)


def make_grid(columns: list[np.ndarray]) -> np.ndarray:
    """Lay six same-shape uint8 NHWC (BGR or 1-channel) batches side by side, with headers.

    ``columns`` are, in order: A, A>A, A>B, B, B>B, B>A. Returns a BGR uint8 image of
    ``header + rows * cell`` by ``6 * cell`` pixels.
    """
    if len(columns) != len(COLUMNS):
        raise ValueError(f"need {len(COLUMNS)} columns, got {len(columns)}")
    rows, size = columns[0].shape[0], columns[0].shape[1]
    cell = max(size, MIN_CELL)
    head = header_height(cell)
    grid = np.full((head + rows * cell, len(COLUMNS) * cell, 3), 255, np.uint8)
    grid[:head] = 32
    scale = head / 30
    for c, (name, batch) in enumerate(zip(COLUMNS, columns, strict=True)):
        if batch.shape[:3] != (rows, size, size):
            raise ValueError(f"column {name} has shape {batch.shape}, expected {columns[0].shape}")
        (tw, th), _ = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        org = (c * cell + (cell - tw) // 2, (head + th) // 2)
        cv2.putText(
            grid, name, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
        )
        for r in range(rows):
            face = batch[r]
            if face.shape[-1] == 1:
                face = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
            if cell != size:
                face = cv2.resize(face, (cell, cell), interpolation=cv2.INTER_NEAREST)
            y = head + r * cell
            grid[y : y + cell, c * cell : (c + 1) * cell] = face
    return grid


# The preview tints what the penalized loss leaves out (outside the face mask) red, as faceswap;
# outside a mask a DeepFaceLab user made, by which one: blue an XSeg mask, magenta polygons.
MASK_TINT = (0, 0, 255)
MASK_TINTS = {"xseg": (255, 64, 0), "polys": (255, 0, 255)}
MASK_TINT_OPACITY = 0.4


def overlay_mask(faces: np.ndarray, masks: np.ndarray,
                 sources: list[str | None] | None = None) -> np.ndarray:
    """uint8 NHWC faces (BGR or 1-channel) with the area outside their masks (uint8 NHW,
    255 = face) tinted by where each mask came from (``sources``, per face: see
    :data:`MASK_TINTS`; red for the rest); returns BGR."""
    if faces.shape[-1] == 1:
        faces = np.repeat(faces, 3, axis=-1)
    named = list(sources or [])[:len(faces)]
    tints = np.array([MASK_TINTS.get(s or "", MASK_TINT) for s in named]
                     + [MASK_TINT] * (len(faces) - len(named)), np.float32).reshape(-1, 3)
    outside = (1.0 - masks.astype(np.float32) / 255.0)[..., None] * MASK_TINT_OPACITY
    tinted = faces * (1.0 - outside) + tints[:, None, None, :] * outside
    return (tinted + 0.5).astype(np.uint8)


def composite(drawn: np.ndarray, onto: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """uint8 NHWC faces ``drawn`` by a model blended onto the faces they came from by the
    model's learned masks (uint8 NHW, 255 = face): the swap in its frame, as the merger
    pastes it back (faceswap's preview of a learned mask)."""
    alpha = (masks.astype(np.float32) / 255.0)[..., None]
    blended = drawn.astype(np.float32) * alpha + onto.astype(np.float32) * (1.0 - alpha)
    return (blended + 0.5).astype(np.uint8)


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Encode ``image`` as PNG and write it atomically."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"{path}: could not encode preview image")
    return atomic_write_bytes(path, buf.tobytes())


HISTORY_FOLDER = "history"


def history_path(folder: Path, iteration: int) -> Path:
    """Where :func:`keep_in_history` keeps the preview of the save at ``iteration``."""
    return folder / HISTORY_FOLDER / f"{iteration:08d}.webp"


def keep_in_history(grid: np.ndarray, folder: Path, iteration: int, keep: int) -> Path | None:
    """Keep a save's preview grid as ``<folder>/history/<iteration>.webp`` and delete all but
    the newest ``keep`` (a bounded history the dashboard's slider goes back through); None
    when ``keep`` is 0."""
    if keep <= 0:
        return None
    path = history_path(folder, iteration)
    ok, data = cv2.imencode(".webp", grid, [cv2.IMWRITE_WEBP_QUALITY, 90])
    if not ok:
        raise RuntimeError(f"{path}: WebP encoding of the preview failed")
    atomic_write_bytes(path, data.tobytes(), durable=False)  # a view: the checkpoint is the data
    kept = sorted(path.parent.glob("*.webp"))
    for old in kept[:-keep]:
        old.unlink(missing_ok=True)
    return path

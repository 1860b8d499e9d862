"""Snapshot tracker data: how the model reconstructs (and swaps) each face, at each snapshot.

At a snapshot every face of both sets (or ``cap`` of each, chosen evenly over yaw) goes
through the model unaugmented, as the trainer crops it: its loss (the training loss, face by
face; a learned mask's own loss is not part of it), the face as the model saw it, its
reconstruction, and for the A side the swap to B (and the three side by side, the
dashboard's tile: one image to fetch a face), with the face's yaw and pitch. The images
are small WebP files in the
snapshot's folder (``tracker/a/``, ``tracker/b/``) and the numbers one JSON line per face in
``tracker/faces.jsonl``, so a model trained without the service keeps them too; the service
also writes them to the state database, where the dashboard can list thousands of faces over
many snapshots quickly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from swapd.fsutil import atomic_write_bytes
from swapd.trainer.data import FaceSet

FOLDER = "tracker"
RECORD = "faces.jsonl"
WEBP_QUALITY = 85
BATCH = 64


class Model(Protocol):
    """What the tracker runs faces through (a :class:`~swapd.trainer.evaluation.Evaluator`,
    such as the trainer)."""

    def evaluate(self, faces: np.ndarray, masks: np.ndarray, side: str
                 ) -> tuple[np.ndarray, np.ndarray]: ...

    def predict(self, faces: np.ndarray, side: str) -> np.ndarray: ...


@dataclass(frozen=True)
class TrackedFace:
    side: str  # "a" or "b"
    face: str  # file name in the set
    loss: float | None  # None if it was not finite
    yaw: float | None
    pitch: float | None
    recon: str  # image file, relative to the snapshot folder
    swap: str | None  # A faces only: the swap to B
    crop: str | None = None  # the face as the model saw it (none in snapshots before it)
    # the crop, the reconstruction and (A) the swap side by side: what the dashboard's tile
    # shows, in one image (none in snapshots before it)
    tile: str | None = None


def pick_even_over_yaw(yaws: np.ndarray, cap: int) -> np.ndarray:
    """Indices of ``cap`` faces spread evenly over yaw, from one end to the other (all of
    them when cap is 0 or more than there are); faces of unknown yaw only fill what is left."""
    n = len(yaws)
    if cap <= 0 or cap >= n:
        return np.arange(n)
    known = np.flatnonzero(~np.isnan(yaws))
    if cap > len(known):
        unknown = np.flatnonzero(np.isnan(yaws))[: cap - len(known)]
        return np.sort(np.concatenate([known, unknown]))
    by_yaw = known[np.argsort(yaws[known], kind="stable")]
    return np.sort(by_yaw[np.linspace(0, len(known) - 1, cap).round().astype(int)])


def _batches(n: int) -> Iterator[slice]:
    for start in range(0, n, BATCH):
        yield slice(start, min(n, start + BATCH))


def _write_webp(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, WEBP_QUALITY])
    if not ok:
        raise RuntimeError(f"{path}: WebP encoding failed")
    atomic_write_bytes(path, data.tobytes(), durable=False)  # re-made by the next snapshot


def _pose(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 2)


def track_side(model: Model, face_set: FaceSet, side: str, folder: Path, cap: int
               ) -> list[TrackedFace]:
    """Run one set's faces through the model and write their images under ``folder``."""
    poses = face_set.poses()
    rows = pick_even_over_yaw(poses[:, 0], cap)
    arrays = face_set.arrays
    names = [face_set.paths[i].name for i in rows]
    out_dir = folder / side
    tracked: list[TrackedFace] = []
    for part in _batches(len(rows)):
        # A part at a time: with a capped face cache only a part's faces are decoded at once.
        crops, masks = face_set.take(rows[part], arrays)
        recon, loss = model.evaluate(crops, masks, side)
        swap = model.predict(crops, "b") if side == "a" else None
        for j, i in enumerate(range(part.start, part.stop)):
            name = names[i]  # the whole name: a.png and a.jpg are different faces
            _write_webp(out_dir / f"{name}.recon.webp", recon[j])
            _write_webp(out_dir / f"{name}.face.webp", crops[j])
            swap_name = None
            strip = [crops[j], recon[j]]
            if swap is not None:
                swap_name = f"{side}/{name}.swap.webp"
                _write_webp(folder / swap_name, swap[j])
                strip.append(swap[j])
            _write_webp(out_dir / f"{name}.tile.webp", np.hstack(strip))
            yaw, pitch = poses[rows[i]]
            value = float(loss[j])
            tracked.append(TrackedFace(side, name,
                                       round(value, 6) if math.isfinite(value) else None,
                                       _pose(yaw), _pose(pitch), f"{side}/{name}.recon.webp",
                                       swap_name, f"{side}/{name}.face.webp",
                                       f"{side}/{name}.tile.webp"))
    return tracked


def track(model: Model, face_sets: tuple[FaceSet, FaceSet], snapshot_folder: Path,
          cap: int = 0) -> list[TrackedFace]:
    """Tracker data of both sets (A's, B's) for the snapshot in ``snapshot_folder`` (see the
    module doc)."""
    folder = snapshot_folder / FOLDER
    tracked = (track_side(model, face_sets[0], "a", folder, cap)
               + track_side(model, face_sets[1], "b", folder, cap))
    lines = "".join(json.dumps(asdict(face)) + "\n" for face in tracked)
    atomic_write_bytes(folder / RECORD, lines.encode("utf-8"))
    return tracked


def read_tracked(snapshot_folder: Path) -> list[TrackedFace]:
    """The tracker data a snapshot folder holds (empty when it has none)."""
    path = snapshot_folder / FOLDER / RECORD
    if not path.is_file():
        return []
    return [TrackedFace(**json.loads(line)) for line in path.read_text().splitlines() if line]

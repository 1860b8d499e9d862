"""Comparing two snapshots by their tracker data: how each face's loss moved between them.

For each side, over the faces both snapshots tracked: the mean loss at each, how many faces
got better or worse, and the faces that moved most each way. :func:`comparison_grid` lays
those faces' images side by side (reconstruction then swap, first snapshot then second) for
a look at what the numbers mean (``swapd model compare``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from swapd.trainer.snapshots import Snapshot, SnapshotError
from swapd.trainer.tracker import FOLDER, TrackedFace, read_tracked


@dataclass(frozen=True)
class FaceChange:
    side: str
    face: str
    before: float
    after: float

    @property
    def change(self) -> float:
        return self.after - self.before


@dataclass(frozen=True)
class SideComparison:
    side: str
    faces: int  # tracked, with a finite loss, in both snapshots
    mean_before: float | None
    mean_after: float | None
    improved: int
    worsened: int
    most_improved: list[FaceChange] = field(default_factory=list)
    most_worsened: list[FaceChange] = field(default_factory=list)


@dataclass(frozen=True)
class Comparison:
    first: int  # iterations of the two snapshots
    second: int
    sides: list[SideComparison]

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        for side in data["sides"]:
            for key in ("most_improved", "most_worsened"):
                for change in side[key]:
                    change["change"] = change["after"] - change["before"]
        return data


def _tracked(snapshot: Snapshot) -> dict[tuple[str, str], TrackedFace]:
    faces = read_tracked(snapshot.folder)
    if not faces:
        raise SnapshotError(snapshot.folder, "has no tracker data to compare (taken with the "
                                             "tracker off)")
    return {(face.side, face.face): face for face in faces}


def compare_snapshots(first: Snapshot, second: Snapshot, top: int = 5) -> Comparison:
    """How the faces tracked in both snapshots changed from ``first`` to ``second``."""
    before, after = _tracked(first), _tracked(second)
    sides = []
    for side in ("a", "b"):
        changes = [FaceChange(side, key[1], b.loss, after[key].loss)
                   for key, b in sorted(before.items())
                   if key[0] == side and key in after and b.loss is not None
                   and after[key].loss is not None]
        by_change = sorted(changes, key=lambda c: (c.change, c.face))
        sides.append(SideComparison(
            side=side,
            faces=len(changes),
            mean_before=float(np.mean([c.before for c in changes])) if changes else None,
            mean_after=float(np.mean([c.after for c in changes])) if changes else None,
            improved=sum(c.change < 0 for c in changes),
            worsened=sum(c.change > 0 for c in changes),
            most_improved=[c for c in by_change[:top] if c.change < 0],
            most_worsened=[c for c in reversed(by_change[-top:]) if c.change > 0],
        ))
    return Comparison(first.iteration, second.iteration, sides)


def _image(snapshot: Snapshot, relative: str | None, size: int) -> np.ndarray:
    image = None
    if relative is not None:
        image = cv2.imread(str(snapshot.folder / FOLDER / relative), cv2.IMREAD_COLOR)
    if image is None:  # no swap on the B side, or a file gone: a gray cell
        return np.full((size, size, 3), 128, np.uint8)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def comparison_grid(first: Snapshot, second: Snapshot, faces: list[FaceChange],
                    cell: int = 96) -> np.ndarray:
    """BGR image, one row per face: reconstruction at ``first`` and ``second``, then (A faces)
    the swap at each; a thin bar left of each row is green for a lower loss, red for higher."""
    before, after = _tracked(first), _tracked(second)
    bar = max(4, cell // 16)
    rows = []
    for change in faces:
        key = (change.side, change.face)
        cells = [_image(first, before[key].recon, cell), _image(second, after[key].recon, cell),
                 _image(first, before[key].swap, cell), _image(second, after[key].swap, cell)]
        colour = (0, 170, 0) if change.change < 0 else (0, 0, 200)
        rows.append(np.hstack([np.full((cell, bar, 3), colour, np.uint8), *cells]))
    if not rows:
        return np.full((cell, bar + 4 * cell, 3), 255, np.uint8)
    return np.vstack(rows)


"""What the snapshot tracker shows, as plain data: snapshots, a page of one snapshot's faces
(sorted and filtered), yaw x pitch cells, one face's timeline, two snapshots compared.

Images are URLs of files the trainer wrote into each snapshot's ``tracker/`` folder, versioned
by the snapshot's time so a browser keeps them; the aligned face itself is a thumbnail of the
set's file (the face index lists it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from swapd.dashboard.files import file_url, thumb_url
from swapd.dashboard.source_frames import find_source, frame_url
from swapd.state import JobRow, StateStore
from swapd.workspace import Workspace

CELL_DEGREES = 10
PAGE_SIZE = 60  # faces a page of the grid shows (and fetches)
SIDES = ("a", "b")
SIDE_NAMES = {"a": "A (dst)", "b": "B (src)"}
LATEST = "latest"  # the snapshot choice that follows the newest


def snapshots(store: StateStore, job: str) -> list[dict[str, Any]]:
    """Snapshots with tracker data, oldest first: iteration, time, faces and mean loss per
    side."""
    found: dict[int, dict[str, Any]] = {}
    for row in store.tracker_snapshots(job):
        entry = found.setdefault(row["iteration"], {
            "iteration": row["iteration"], "time": row["time"], "faces": {}, "mean_loss": {}})
        entry["faces"][row["side"]] = row["faces"]
        entry["mean_loss"][row["side"]] = row["mean_loss"]
        entry["time"] = entry["time"] or row["time"]
    return [found[i] for i in sorted(found)]


def resolve_snapshot(taken: list[dict[str, Any]], snapshot: str | None, compare: str | None
                     ) -> tuple[int | None, int | None]:
    """The snapshot chosen (LATEST, or one that is gone, follows the newest) and the one it
    is compared with ("previous", or one that is gone: the one before it)."""
    iterations = [s["iteration"] for s in taken]
    if not iterations:
        return None, None
    chosen = (int(snapshot) if snapshot is not None and str(snapshot).isdigit()
              and int(snapshot) in iterations else iterations[-1])
    if compare is not None and str(compare).isdigit() and int(compare) in iterations:
        return chosen, int(compare)
    earlier = [i for i in iterations if i < chosen]
    return chosen, earlier[-1] if earlier else None


def chosen_snapshot(store: StateStore, job: str, snapshot: str | None,
                    compare: str | None = None) -> tuple[int | None, int | None]:
    """:func:`resolve_snapshot` over the job's snapshots."""
    return resolve_snapshot(snapshots(store, job), snapshot, compare)


def set_name(workspace: Workspace, row: JobRow | None, side: str) -> str | None:
    """The face set (folder name under faces/) a job trains ``side`` on, if it is one."""
    train = ((row.config if row else None) or {}).get("train") or {}
    folder = train.get(side)
    if not folder:
        return None
    path = workspace.resolve(folder)
    return path.name if path.parent.resolve() == workspace.faces.resolve() else None


class TrackerImages:
    """URLs of one snapshot's tracker images (and of the faces' thumbnails)."""

    def __init__(self, workspace: Workspace, store: StateStore, job: str, side: str) -> None:
        self.workspace, self.store, self.job, self.side = workspace, store, job, side
        self.set_name = set_name(workspace, store.job(job), side)
        self._times = {s["iteration"]: s["time"] for s in snapshots(store, job)}

    def snapshot_file(self, iteration: int, relative: str | None) -> str | None:
        if not relative:
            return None
        folder = snapshot_folder(self.workspace, self.job, iteration)
        version = int(self._times.get(iteration) or 0) or None
        return file_url(self.workspace, folder / "tracker" / relative, version=version)

    def faces(self, names: list[str]) -> dict[str, str | None]:
        """Each face's thumbnail URL (None when the face index does not list it)."""
        if self.set_name is None:
            return dict.fromkeys(names)
        stamps = self.store.face_stamps_of(self.set_name, names)
        return {name: thumb_url(self.set_name, name, stamps[name]) if name in stamps else None
                for name in names}


def parse_range(text: str | None) -> tuple[float, float] | None:
    """'LO,HI' (degrees) -> (LO, HI); ValueError for anything else."""
    if not text:
        return None
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"{text!r} is not a range LO,HI")
    low, high = float(parts[0]), float(parts[1])
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ValueError(f"{text!r}: LO must be below HI")
    return low, high


def snapshot_faces(workspace: Workspace, store: StateStore, job: str, iteration: int,
                   side: str, sort: str = "-loss", compare_to: int | None = None,
                   yaw: tuple[float, float] | None = None,
                   pitch: tuple[float, float] | None = None, focus_only: bool = False,
                   offset: int = 0, limit: int = PAGE_SIZE) -> dict[str, Any]:
    """A page of one snapshot's faces of one side, each with its loss (and its change since
    ``compare_to``), pose, focus mark and image URLs."""
    focus = store.focus_faces(job).get(side, set())
    total, rows = store.tracked_page(job, iteration, side, sort, compare_to, yaw, pitch,
                                     names=focus if focus_only else None, offset=offset,
                                     limit=limit)
    images = TrackerImages(workspace, store, job, side)
    # the face as the model saw it at this snapshot; a thumbnail of its file for snapshots
    # taken before the tracker kept that
    thumbs = images.faces([r["face"] for r in rows if not r["crop"]])
    faces = [{
        "name": r["face"], "loss": r["loss"], "before": r["before"], "delta": r["delta"],
        "yaw": r["yaw"], "pitch": r["pitch"], "focus": r["face"] in focus,
        "face": images.snapshot_file(iteration, r["crop"]) if r["crop"] else thumbs[r["face"]],
        "output": images.snapshot_file(iteration, r["recon"]),
        "swap": images.snapshot_file(iteration, r["swap"]),
        "tile": images.snapshot_file(iteration, r["tile"]),
    } for r in rows]
    return {"iteration": iteration, "side": side, "sort": sort, "compare_to": compare_to,
            "total": total, "offset": offset, "limit": limit, "faces": faces}


def pose_cells(counted: tuple[list[tuple[int, int, int, float | None]], int],
               cell: int = CELL_DEGREES) -> dict[str, Any]:
    """A yaw x pitch table from the store's per-cell counts ((yaw low, pitch low, faces, mean
    loss) rows, and the count without a pose): each cell's face count and mean loss, rows
    pitch, columns yaw, every cell between the lowest and highest occupied."""
    rows, unknown = counted
    if not rows:
        return {"cell": cell, "yaw": [], "pitch": [], "count": [], "mean_loss": [],
                "unknown": unknown}
    yaws = list(range(min(r[0] for r in rows), max(r[0] for r in rows) + cell, cell))
    pitches = list(range(min(r[1] for r in rows), max(r[1] for r in rows) + cell, cell))
    count = [[0] * len(yaws) for _ in pitches]
    mean: list[list[float | None]] = [[None] * len(yaws) for _ in pitches]
    for yaw, pitch, n, loss in rows:
        row, col = pitches.index(pitch), yaws.index(yaw)
        count[row][col] = n
        mean[row][col] = None if loss is None else round(float(loss), 6)
    return {"cell": cell, "yaw": yaws, "pitch": pitches, "count": count, "mean_loss": mean,
            "unknown": unknown}


def clicked_cell(click: dict[str, Any] | None, cell: int = CELL_DEGREES
                 ) -> dict[str, list[float]] | None:
    """The yaw x pitch cell a click on a pose heatmap landed in ({"yaw": [low, high],
    "pitch": [low, high]}), from the clicked cell's centre; None for no usable click."""
    point = ((click or {}).get("points") or [{}])[0]
    x, y = point.get("x"), point.get("y")
    if not isinstance(x, int | float) or not isinstance(y, int | float):
        return None
    yaw, pitch = math.floor(x / cell) * cell, math.floor(y / cell) * cell
    return {"yaw": [yaw, yaw + cell], "pitch": [pitch, pitch + cell]}


def snapshot_cells(store: StateStore, job: str, iteration: int, side: str) -> dict[str, Any]:
    return pose_cells(store.tracked_pose_cells(job, iteration, side, CELL_DEGREES))


def timeline(workspace: Workspace, store: StateStore, job: str, side: str, name: str
             ) -> dict[str, Any]:
    """One face at every snapshot that tracked it, oldest first."""
    images = TrackerImages(workspace, store, job, side)
    rows = store.face_timeline(job, side, name)
    record = store.face(images.set_name, name) if images.set_name else None
    newest = next((r for r in reversed(rows) if r["crop"]), None)
    return {
        "side": side, "name": name,
        "face": (images.snapshot_file(newest["iteration"], newest["crop"]) if newest
                 else images.faces([name])[name]),
        "source": record.source if record else None,
        "source_frame": (frame_url(images.set_name, name) if record and images.set_name
                         and find_source(workspace, record.source) else None),
        "focus": name in store.focus_faces(job).get(side, set()),
        # what the face trains with as its mask ("xseg", "polys", "landmarks"; None: whole)
        "indexed": record is not None,
        "mask": record.mask_source if record else None,
        "snapshots": [{"iteration": r["iteration"], "loss": r["loss"],
                       "output": images.snapshot_file(r["iteration"], r["recon"]),
                       "swap": images.snapshot_file(r["iteration"], r["swap"])}
                      for r in rows],
    }


def compare(workspace: Workspace, store: StateStore, job: str, first: int, second: int,
            top: int = 5) -> dict[str, Any]:
    """Two snapshots side by side, per side: the faces both tracked, their mean loss at
    each, how many got better or worse, and the faces that moved most each way (what
    `swapd model compare` prints)."""
    sides = {}
    for side in SIDES:
        pairs = store.tracked_pairs(job, first, second, side)
        if not pairs:
            sides[side] = {"faces": 0}
            continue
        changes = sorted(((after - before, name, before, after)
                          for name, before, after in pairs), key=lambda c: (c[0], c[1]))
        images = TrackerImages(workspace, store, job, side)

        def face(change: tuple[float, str, float, float], images: TrackerImages = images
                 ) -> dict[str, Any]:
            delta, name, before, after = change
            return {"name": name, "before": before, "after": after, "delta": delta,
                    "face": images.faces([name])[name]}

        sides[side] = {
            "faces": len(pairs),
            "mean_first": float(np.mean([p[1] for p in pairs])),
            "mean_second": float(np.mean([p[2] for p in pairs])),
            "better": sum(c[0] < 0 for c in changes), "worse": sum(c[0] > 0 for c in changes),
            "most_improved": [face(c) for c in changes[:top] if c[0] < 0],
            "most_worsened": [face(c) for c in changes[::-1][:top] if c[0] > 0],
        }
    return {"first": first, "second": second, "sides": sides}


def snapshot_folder(workspace: Workspace, job: str, iteration: int) -> Path:
    return workspace.model_dir(job) / "snapshots" / f"{iteration:08d}"

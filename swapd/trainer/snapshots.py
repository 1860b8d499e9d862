"""Snapshots: copies of the checkpoint taken every N iterations, kept by a policy.

Each lives in its own folder, ``<model dir>/snapshots/<iteration, 8 digits>/``, holding
``model.pt`` (a full checkpoint: it can be restored, resumed or exported) and
``snapshot.json`` (iteration, time, average loss since the previous save), so what belongs to
one snapshot (an export, tracker data) can sit beside it.

Policies, applied after each snapshot: ``all`` keeps every one; ``last`` the newest ``keep``;
``thinned`` the newest ``keep`` and the first snapshot of every power-of-two span of
iterations (1024-2047, 2048-4095, ...), so a long run keeps its early history in a few
snapshots, ever sparser; which old ones stay never depends on how many came after.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from swapd.errors import FileProblem
from swapd.fsutil import atomic_copy, atomic_write_bytes
from swapd.trainer.checkpoint import restore_checkpoint

FOLDER = "snapshots"
INFO = "snapshot.json"
Policy = Literal["all", "last", "thinned"]


class SnapshotError(FileProblem, RuntimeError):
    """A snapshot that does not exist or cannot be used."""


@dataclass(frozen=True)
class Snapshot:
    iteration: int
    folder: Path
    info: dict[str, Any]

    @property
    def checkpoint(self) -> Path:
        return self.folder / "model.pt"


def snapshot_folder(model_dir: str | os.PathLike[str], iteration: int) -> Path:
    return Path(model_dir) / FOLDER / f"{iteration:08d}"


def take_snapshot(checkpoint: Path, iteration: int, info: dict[str, Any],
                  fill: Callable[[Path], object] | None = None) -> Snapshot:
    """Copy a just-written checkpoint into its snapshot folder; ``fill(folder)`` adds what
    belongs with it (tracker data). The info file goes last: a folder without it is an
    interrupted snapshot, which listings skip. A snapshot taken again at the same iteration
    (after a restore) replaces the old one wholly."""
    folder = snapshot_folder(checkpoint.parent, iteration)
    if folder.exists():
        (folder / INFO).unlink(missing_ok=True)
        shutil.rmtree(folder)
    atomic_copy(checkpoint, folder / "model.pt")
    if fill is not None:
        fill(folder)
    record = {"iteration": iteration, **info}
    atomic_write_bytes(folder / INFO, json.dumps(record, indent=2).encode("utf-8"))
    return Snapshot(iteration, folder, record)


def list_snapshots(model_dir: str | os.PathLike[str]) -> list[Snapshot]:
    """Complete snapshots, oldest first."""
    root = Path(model_dir) / FOLDER
    found = []
    if root.is_dir():
        for folder in root.iterdir():
            try:
                info = json.loads((folder / INFO).read_text(encoding="utf-8"))
                iteration = int(info["iteration"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # interrupted, or not a snapshot folder
            if (folder / "model.pt").is_file():
                found.append(Snapshot(iteration, folder, info))
    return sorted(found, key=lambda s: s.iteration)


def to_keep(iterations: list[int], policy: Policy, keep: int) -> set[int]:
    """Which snapshot iterations a policy keeps (the newest always)."""
    ordered = sorted(iterations)
    if policy == "all" or not ordered:
        return set(ordered)
    kept = set(ordered[-keep:] if keep > 0 else ordered[-1:])
    if policy == "thinned":
        first_in_span: dict[int, int] = {}
        for iteration in ordered:
            first_in_span.setdefault(max(iteration, 1).bit_length(), iteration)
        kept |= set(first_in_span.values())
    return kept


def prune_snapshots(model_dir: str | os.PathLike[str], policy: Policy, keep: int,
                    just_taken: int | None = None) -> list[int]:
    """Delete the snapshots the policy does not keep (never ``just_taken``); returns their
    iterations."""
    snapshots = list_snapshots(model_dir)
    kept = to_keep([s.iteration for s in snapshots], policy, keep) | {just_taken}
    _remove_interrupted(Path(model_dir), snapshots)
    removed = []
    for snapshot in snapshots:
        if snapshot.iteration not in kept:
            # The info file first: a crash mid-delete leaves an incomplete folder, skipped.
            (snapshot.folder / INFO).unlink(missing_ok=True)
            shutil.rmtree(snapshot.folder, ignore_errors=True)
            removed.append(snapshot.iteration)
    return removed


def find_snapshot(model_dir: str | os.PathLike[str], iteration: int) -> Snapshot:
    """The snapshot taken at ``iteration``; SnapshotError lists the ones there are."""
    snapshots = list_snapshots(model_dir)
    for snapshot in snapshots:
        if snapshot.iteration == iteration:
            return snapshot
    have = ", ".join(str(s.iteration) for s in snapshots) or "none"
    raise SnapshotError(Path(model_dir), f"no snapshot at iteration {iteration} (have: {have})")


def _remove_interrupted(model_dir: Path, complete: list[Snapshot]) -> None:
    """Delete folders of snapshots a crash interrupted (no info file), older than the newest
    complete one (a newer one may be being written)."""
    if not complete:
        return
    done = {s.folder for s in complete}
    for folder in (model_dir / FOLDER).iterdir():
        if (folder not in done and folder.is_dir() and folder.name.isdigit()
                and int(folder.name) < complete[-1].iteration):
            shutil.rmtree(folder, ignore_errors=True)


def set_aside_after(model_dir: str | os.PathLike[str], iteration: int) -> Path | None:
    """After going back to ``iteration``: move the snapshots of the abandoned timeline (later
    iterations) into ``snapshots/abandoned-<time>/``, so the new timeline's snapshots are not
    pruned in their favour, and nothing is deleted. Returns that folder, if any moved."""
    later = [s for s in list_snapshots(model_dir) if s.iteration > iteration]
    if not later:
        return None
    aside = Path(model_dir) / FOLDER / f"abandoned-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir(parents=True, exist_ok=True)
    for snapshot in later:
        snapshot.folder.rename(aside / snapshot.folder.name)
    return aside


def restore_snapshot(model_dir: str | os.PathLike[str], iteration: int
                     ) -> tuple[int, Path | None]:
    """Make a snapshot the model's checkpoint again (the replaced one is kept, and later
    snapshots are set aside)."""
    snapshot = find_snapshot(model_dir, iteration)
    restored = restore_checkpoint(snapshot.checkpoint, Path(model_dir) / "model.pt")
    set_aside_after(model_dir, restored[0])
    return restored

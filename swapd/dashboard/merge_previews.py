"""Merge previews asked from the dashboard (the outputs page's "Choose a look"): which footage
a user may choose from, the request checked before it is queued, and where it stands.

The dashboard only asks: a ``preview`` request in the state store's control queue, which the
service renders (swapd/daemon/merge_previews.py) into ``output/<job>/previews/<request id>/``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from swapd.dashboard.files import file_url
from swapd.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, UnreadableMediaError, probe_video
from swapd.merger.look import COMPARABLE
from swapd.state import ControlRequest, JobRow, StateStore
from swapd.workspace import Workspace

MAX_FOOTAGE = 200  # files listed per job


class PreviewRefused(ValueError):
    """A preview request that cannot be queued."""


def footage_folder(workspace: Workspace, row: JobRow) -> Path | None:
    """A job's footage folder (its ``[merge] footage``), None for a job that does not merge."""
    merge = (row.config or {}).get("merge")
    if not isinstance(merge, dict) or not isinstance(merge.get("footage"), str):
        return None
    return workspace.resolve(merge["footage"])


def footage_files(workspace: Workspace, store: StateStore) -> list[dict[str, str]]:
    """Every merging job's footage files (videos and images): ``{"job", "source", "label"}``,
    ``source`` relative to the workspace."""
    found = []
    for row in store.jobs():
        folder = footage_folder(workspace, row)
        if folder is None or not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.is_file()
                       and p.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES)
        for path in files[:MAX_FOOTAGE]:
            source = workspace.relative(path)
            found.append({"job": row.name, "source": source, "label": f"{row.name}: {path.name}"})
    return found


def frame_count(workspace: Workspace, source: str) -> int | None:
    """How many frames footage has (1 for an image); None when not known."""
    path = workspace.resolve(source)
    try:
        return _frames(path, path.stat().st_mtime_ns)
    except OSError:
        return None


@lru_cache(maxsize=256)
def _frames(path: Path, _mtime: int) -> int | None:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return 1
    try:
        return probe_video(path).expected_frames
    except UnreadableMediaError:
        return None


def preview_args(workspace: Workspace, row: JobRow, body: dict[str, Any]) -> dict[str, Any]:
    """The checked arguments of a preview request ``body`` ({"source", "frame", "compare"})
    for job ``row``; PreviewRefused says what is wrong."""
    folder = footage_folder(workspace, row)
    if folder is None:
        raise PreviewRefused(f"{row.name} has no [merge] section: nothing to preview")
    source, frame, compare = body.get("source"), body.get("frame", 0), body.get("compare")
    path = workspace.resolve(source).resolve() if isinstance(source, str) and source else None
    if (path is None or not path.is_relative_to(folder.resolve()) or not path.is_file()
            or path.suffix.lower() not in VIDEO_SUFFIXES | IMAGE_SUFFIXES):
        raise PreviewRefused(f"source must be a video or image in {row.name}'s footage "
                             f"folder ({workspace.relative(folder)}), not {source!r}")
    if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
        raise PreviewRefused(f"frame must be a frame's number (0 or more), not {frame!r}")
    frames = frame_count(workspace, workspace.relative(path))
    if frames is not None and frame >= frames:
        raise PreviewRefused(f"{path.name} has {frames} frames (0 to {frames - 1}): "
                             f"no frame {frame}")
    if compare not in (None, "", *COMPARABLE):
        raise PreviewRefused(f"compare must be one of {', '.join(COMPARABLE)} (or none), "
                             f"not {compare!r}")
    return {"source": workspace.relative(path), "frame": frame, "compare": compare or None}


def newest_request(store: StateStore) -> ControlRequest | None:
    """The newest preview request of any job: what the card shows before a user asks."""
    found = [r for row in store.jobs() for r in store.control_requests(row.name, limit=50)
             if r.action == "preview"]
    return max(found, key=lambda r: r.id, default=None)


def preview_state(workspace: Workspace, request: ControlRequest) -> dict[str, Any]:
    """Where a preview request stands: ``state`` is waiting (for the service to take it),
    rendering, ready (``url`` and ``path`` of the sheet) or failed (``message`` says why)."""
    found = {"id": request.id, "job": request.job, **request.args, "result": request.result}
    if request.taken_at is None:
        return {**found, "state": "waiting"}
    if request.done_at is None:
        return {**found, "state": "rendering"}
    folder = workspace.merge_preview_dir(request.job, request.id)
    sheets = sorted(folder.glob("*.png")) if folder.is_dir() else []
    url = file_url(workspace, sheets[0]) if sheets else None
    if url is None:
        return {**found, "state": "failed", "message": request.result or "no sheet was written"}
    return {**found, "state": "ready", "url": url, "path": workspace.relative(sheets[0])}

"""A face's source frame, for the tracker's timeline: the frame or video it was extracted
from, when that footage lies in the workspace's footage/ folder.

A face records the frame it came from (faceswap's ``source_filename``): an image's name, or a
video frame's (``<video stem>_<frame>``: swapd's extraction numbers them from 0 with six digits,
faceswap's from 1 with its extension). ``/frames/<set>/<face>`` serves that frame as a JPEG
(a video's frame decoded on request); nothing outside footage/ is ever read.
"""

from __future__ import annotations

import re
from contextlib import closing
from pathlib import Path

import cv2
import flask

from swapd.media import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    UnreadableMediaError,
    probe_video,
    read_frames,
)
from swapd.state import StateStore
from swapd.workspace import Workspace

FRAMES_ROUTE = "/frames/"
_VIDEO_FRAME = re.compile(r"^(?P<stem>.+)_(?P<index>\d+)(?P<ext>\.[A-Za-z0-9]+)?$")
MAX_SEARCHED = 20_000  # files of footage/ looked at


def find_source(workspace: Workspace, source: str | None) -> tuple[Path, int | None] | None:
    """The footage file a face's recorded source names, and the video frame's index (None
    for an image); None when footage/ holds no such file."""
    if not source or "/" in source or "\\" in source or not workspace.footage.is_dir():
        return None
    named = _VIDEO_FRAME.match(source)
    root = workspace.footage.resolve()
    for k, path in enumerate(workspace.footage.rglob("*")):
        if k >= MAX_SEARCHED:
            break
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES and path.name == source:
            found = path, None
        elif suffix in VIDEO_SUFFIXES and named and path.stem == named["stem"]:
            index = int(named["index"])
            found = path, index - 1 if named["ext"] else index  # faceswap's count from 1
        else:
            continue
        if found[0].resolve().is_relative_to(root) and found[0].is_file():
            return found
    return None


def frame_image(path: Path, index: int | None) -> bytes | None:
    """The frame as JPEG bytes (a video's ``index``-th frame), None if it cannot be read."""
    if index is None:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    else:
        image = None
        try:
            with closing(read_frames(probe_video(path), prefetch=0)) as frames:  # type: ignore[type-var]
                for k, frame in enumerate(frames):
                    if k == index:
                        image = frame
                        break
        except UnreadableMediaError:
            return None
    if image is None:
        return None
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return data.tobytes() if ok else None


def frame_url(set_name: str, face: str) -> str:
    return f"{FRAMES_ROUTE}{set_name}/{face}"


def add_frame_route(server: flask.Flask, workspace: Workspace) -> None:
    @server.route(f"{FRAMES_ROUTE}<set_name>/<path:face>")
    def serve_frame(set_name: str, face: str) -> flask.Response:
        if not workspace.state_db.is_file():
            flask.abort(404)
        store = StateStore(workspace.state_db, readonly=True)
        try:
            record = store.face(set_name, face)
        finally:
            store.close()
        found = find_source(workspace, record.source) if record is not None else None
        data = frame_image(*found) if found is not None else None
        if data is None:
            flask.abort(404)
        return flask.Response(data, mimetype="image/jpeg")

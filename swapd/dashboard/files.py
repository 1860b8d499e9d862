"""The files the dashboard shows, served by route: what the service wrote for people to see.

``/files/<path>`` serves, inside the workspace, merged outputs (``output/``) and under
``models/<job>/`` only previews (and their history), exports, tracker images and the
learning-rate finder's graphs: never checkpoints, backups, locks or the state database, never a
file reached through a link that leads elsewhere, never a file with a second hard link (a link
made into models/ of a file outside it). Videos are served with range requests, so they play
and seek in the page.

``/thumbs/<set>/<name>`` serves a small WebP of a face the service indexed (made once, kept in
``.swapd/cache/thumbs/``); nothing the index does not list.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import quote

import cv2
import flask
import numpy as np

from swapd.fsutil import atomic_write_bytes
from swapd.state import StateStore
from swapd.workspace import Workspace

FILES_ROUTE = "/files/"
THUMBS_ROUTE = "/thumbs/"
SERVED_FOLDERS = ("models", "output")
THUMB_SIZES = (64, 96, 128, 192, 256)
# models/<job>/<first folder>/...: the suffixes served there (tracker images of a snapshot
# live in snapshots/<iteration>/tracker/).
_MODEL_FILES = {
    "previews": {".png", ".jpg", ".jpeg", ".webp"},
    "exports": {".onnx", ".dfm", ".json"},
    "tracker": {".webp"},
    "lr_finder": {".png"},
}
_SNAPSHOT_FILES = {".webp"}
_YEAR = 31_536_000


class FileRefused(Exception):
    """A request for a file the dashboard must not serve."""


def served_path(workspace: Workspace, relative: str) -> Path:
    """The file a `/files/<relative>` request may serve.

    Raises FileRefused for anything that is not a plain relative path to a file the dashboard
    shows (absolute paths, drive letters, `..`, links that lead out, checkpoints, a second hard
    link), FileNotFoundError when the file is not there.
    """
    posix, windows = PurePosixPath(relative), PureWindowsPath(relative)
    if not relative or posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise FileRefused(f"{relative!r}: not a path relative to the workspace")
    if ".." in posix.parts or ".." in windows.parts or "\\" in relative or "\0" in relative:
        raise FileRefused(f"{relative!r}: '..' is not allowed")
    if posix.parts[0] not in SERVED_FOLDERS:
        raise FileRefused(f"{relative!r}: only models/ and output/ are served")
    if posix.parts[0] == "models" and not _shown_model_file(posix.parts[2:], posix.suffix):
        raise FileRefused(f"{relative!r}: not a file the dashboard shows")
    base = (workspace.root / posix.parts[0]).resolve()
    # resolve() follows symlinks, so a link that points out of the folder is caught here
    target = (workspace.root / posix).resolve()
    if not target.is_relative_to(base):
        raise FileRefused(f"{relative!r}: leads outside {posix.parts[0]}/")
    if not target.is_file():
        raise FileNotFoundError(f"{relative!r}: no such file")
    if target.stat().st_nlink > 1:  # the service writes new files; a second name is someone's
        raise FileRefused(f"{relative!r}: a hard link")
    return target


def _shown_model_file(inside_job: tuple[str, ...], suffix: str) -> bool:
    """Whether models/<job>/<inside_job...> is a file the dashboard shows."""
    suffix = suffix.lower()
    if len(inside_job) < 2:
        return False
    if inside_job[0] == "snapshots":
        return len(inside_job) >= 4 and inside_job[2] == "tracker" and suffix in _SNAPSHOT_FILES
    return suffix in _MODEL_FILES.get(inside_job[0], set())


def file_url(workspace: Workspace, path: str | Path, version: object | None = None
             ) -> str | None:
    """The dashboard URL of a workspace file, versioned (by ``version``, else its mtime) so a
    browser may keep it; None if the file is missing or outside the served folders."""
    absolute = Path(os.path.abspath(workspace.resolve(path)))
    relative = None
    for root in (workspace.root, workspace.root.resolve()):
        try:
            relative = absolute.relative_to(root)
            break
        except ValueError:
            continue
    if relative is None or not relative.parts or relative.parts[0] not in SERVED_FOLDERS:
        return None
    if version is None:
        try:
            version = absolute.stat().st_mtime_ns
        except OSError:
            return None
    return f"{FILES_ROUTE}{quote(relative.as_posix())}?v={version}"


def thumb_url(set_name: str, name: str, version: object, size: int = 128) -> str:
    return f"{THUMBS_ROUTE}{quote(set_name)}/{quote(name)}?s={size}&v={quote(str(version))}"


def make_thumbnail(source: Path, size: int) -> bytes:
    """A WebP of an image file, its longer side ``size`` px (never enlarged)."""
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{source.name}: not a readable image")
    height, width = image.shape[:2]
    scale = size / max(height, width)
    if scale < 1:
        image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".webp", np.ascontiguousarray(image), [cv2.IMWRITE_WEBP_QUALITY, 85])
    if not ok:
        raise ValueError(f"{source.name}: WebP encoding failed")
    return data.tobytes()


def add_file_routes(server: flask.Flask, workspace: Workspace) -> None:
    @server.route(f"{FILES_ROUTE}<path:relative>")
    def serve_file(relative: str) -> flask.Response:
        try:
            path = served_path(workspace, relative)
        except FileRefused:
            flask.abort(403)
        except (FileNotFoundError, OSError):
            flask.abort(404)
        # a versioned URL (?v=...) never changes content, so the browser may keep it
        max_age = _YEAR if flask.request.args.get("v") else None
        return flask.send_file(path, conditional=True, max_age=max_age)

    @server.route(f"{THUMBS_ROUTE}<set_name>/<path:name>")
    def serve_thumb(set_name: str, name: str) -> flask.Response:
        size = flask.request.args.get("s", "128")
        if not size.isdigit() or int(size) not in THUMB_SIZES:
            flask.abort(400)
        data = _thumbnail(workspace, set_name, name, int(size))
        if data is None:
            flask.abort(404)
        response = flask.Response(data, mimetype="image/webp")
        if flask.request.args.get("v"):
            response.cache_control.max_age = _YEAR
            response.cache_control.public = True
        return response

    @server.before_request
    def refuse_unrouted_files() -> None:
        # e.g. /files//etc/passwd matches no rule and would fall through to Dash's catch-all page
        path = flask.request.path
        if path.startswith(FILES_ROUTE) and flask.request.endpoint != "serve_file":
            flask.abort(403)
        if path.startswith(THUMBS_ROUTE) and flask.request.endpoint != "serve_thumb":
            flask.abort(404)


def _thumbnail(workspace: Workspace, set_name: str, name: str, size: int) -> bytes | None:
    """A thumbnail of an indexed face, from the cache or made now; None if the index does not
    list it or its file cannot be read."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    try:
        folder = workspace.face_set(set_name)
    except ValueError:
        return None
    if not workspace.state_db.is_file():
        return None
    store = StateStore(workspace.state_db, readonly=True)
    try:
        record = store.face(set_name, name)
    finally:
        store.close()
    if record is None:
        return None
    source = folder / name
    if record.status != "ok" and record.moved_to:
        source = workspace.resolve(record.moved_to)
    cached = workspace.cache / "thumbs" / set_name / f"{name}.{size}.webp"
    try:
        stamp = source.stat().st_mtime_ns
        if cached.is_file() and cached.stat().st_mtime_ns >= stamp:
            return cached.read_bytes()
        data = make_thumbnail(source, size)
    except (OSError, ValueError):
        return None
    atomic_write_bytes(cached, data, durable=False)  # a cache: made again if lost
    return data

"""The frames extraction reads, and their names as faceswap and DeepFaceLab give them.

faceswap names a video's frames ``<video stem>_<frame number from 1, 6 digits><video
extension>`` (``clip_000001.mp4``, lib/image.py ``_dummy_video_frame_name``) and an image by its
file name (``frame.png``); its faces are ``<frame name without extension>_<face index>.png``.
DeepFaceLab extracts a video's frames as ``%5d.png`` from 1 (mainscripts/VideoEd.py), and its
merger finds a face's frame by that name (``source_filename``). swapd's records before this
named a video's frames ``<stem>_<frame number from 0, 6 digits>`` and images by their stem:
:attr:`Frame.legacy` keeps that name, so such records still resume and replay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swapd.extract.alignments import faceswap_frame_name, video_frame_name
from swapd.media import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    UnreadableMediaError,
    probe_video,
    read_frames,
    read_image,
)


@dataclass(frozen=True)
class Frame:
    """One frame to extract from, and its names."""

    name: str  # faceswap's name for it: alignments keys, source_filename of its faces
    stem: str  # its faces are named <stem>_<face index>.png (.jpg for DeepFaceLab)
    legacy: str  # what swapd's records called it before
    dfl_name: str  # DeepFaceLab's name for it (source_filename of its DFL faces)
    image: np.ndarray | None  # None: unreadable (recorded with the error)


@dataclass(frozen=True)
class Source:
    """One stream of frames: a video, or images under one name."""

    path: Path
    name: str  # the stem faces and the alignments record are named after
    is_video: bool
    frames: Callable[[], Iterator[Frame]]
    total: int | None


def _video_source(path: Path) -> Source:
    info = probe_video(path)

    def frames() -> Iterator[Frame]:
        for i, image in enumerate(read_frames(info)):
            name = faceswap_frame_name(path.name, i)
            yield Frame(name, Path(name).stem, video_frame_name(path.stem, i),
                        f"{i + 1:05d}.png", image)

    return Source(path, path.stem, True, frames, info.expected_frames)


def _image_source(paths: list[Path], name: str, origin: Path) -> Source:
    stems = [p.stem for p in paths]
    # a.jpg and a.png would both write a_0.png: such names keep their suffix
    bases = [p.stem if stems.count(p.stem) == 1 else p.name.replace(".", "_") for p in paths]

    def frames() -> Iterator[Frame]:
        for path, base in zip(paths, bases, strict=True):
            try:
                image: np.ndarray | None = read_image(path)
            except UnreadableMediaError:
                image = None  # recorded with the error; the rest goes on
            yield Frame(path.name, base, base, path.name, image)

    return Source(origin, name, False, frames, len(paths))


def open_source(path: Path) -> Source:
    """The frames of a video file, an image file or a folder of images."""
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise UnreadableMediaError(path, "folder holds no images")
        return _image_source(images, path.name, path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return _video_source(path)
    if suffix in IMAGE_SUFFIXES:
        return _image_source([path], path.stem, path)
    raise UnreadableMediaError(path, f"not a video, image or folder ({suffix or 'no suffix'})")

"""Still images out, and image sequences (a folder of frames) in and out.

A merged image is written as PNG (lossless, the default) or JPEG (faceswap's writer formats),
marked with the provenance tag, atomically (temp file, fsync, ``os.replace``). A folder of
PNG/JPEG frames is merged as one clip: frames in name order, faces tracked from frame to frame,
each written under its own stem into ``<folder>_swapd/`` in the chosen format; a frame outside
the merge's frame ranges is copied as it is (watermarked and tagged like every other).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import cv2
import numpy as np

from swapd.extract.alignments import RecordedFaces, image_frame_names
from swapd.extract.face_tracker import FaceTracker
from swapd.fsutil import durable_replace
from swapd.media import UnreadableMediaError, read_image
from swapd.merger import watermark
from swapd.merger.c2pa_credentials import SigningCredentials
from swapd.merger.content_credentials import sign_file
from swapd.merger.frame_ranges import frame_number, in_ranges
from swapd.merger.metadata_tag import tag_image

if TYPE_CHECKING:
    from swapd.extract.detectors.base import Detection, Detector


class Swapper(Protocol):
    """What merging a sequence needs of :class:`swapd.merger.merge.Merger` (named by its
    shape, so this module does not import the one that imports it)."""

    options: Any  # MergeOptions
    detector: Detector

    def swap_or_skip(self, frames: list[np.ndarray], detector: Detector, swap: list[bool],
                     composer: Any = None) -> tuple[int, int]: ...

    def composer(self) -> Any: ...  # a Composer: the faces' state from frame to frame

    def provenance(self, src: Path) -> dict[str, object]: ...

    credentials: Any  # SigningCredentials | None

ImageFormat = Literal["png", "jpeg"]
SEQUENCE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
IMAGE_EXTENSIONS: dict[str, str] = {"png": ".png", "jpeg": ".jpg"}
JPEG_QUALITY = 95  # faceswap's opencv writer's default jpg quality


def encode_image(frame: np.ndarray, image_format: ImageFormat, out: Path) -> bytes:
    """PNG or JPEG bytes of a BGR frame."""
    if image_format == "jpeg":
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    else:
        ok, data = cv2.imencode(".png", frame)
    if not ok:  # not the footage's fault: no MergeError, which would set the source aside
        raise RuntimeError(f"{out}: {image_format} encoding failed")
    return data.tobytes()


def write_marked_image(frame: np.ndarray, out: Path, image_format: ImageFormat,
                       provenance: Mapping[str, object],
                       credentials: SigningCredentials | None = None,
                       source: Path | None = None) -> None:
    """Write ``frame`` to ``out`` with the provenance tag and, given ``credentials``, a signed
    C2PA manifest naming ``source`` as its ingredient; ``out`` only ever holds a whole file."""
    data = encode_image(frame, image_format, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{uuid.uuid4().hex[:8]}.part{out.suffix}")
    try:
        tmp.write_bytes(data)
        tag_image(tmp, provenance)
        if credentials is not None:  # signed last: the manifest binds the file's final bytes
            sign_file(tmp, source, credentials, title=out.name)
        durable_replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def sequence_frames(folder: Path) -> list[Path]:
    """The frames of an image sequence folder (PNG/JPEG, hidden files left out), by name."""
    frames = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                    and p.suffix.lower() in SEQUENCE_SUFFIXES)
    if not frames:
        raise UnreadableMediaError(folder, "no PNG or JPEG frames in the folder")
    return frames


def merge_sequence(merger: Swapper, folder: Path, out_dir: Path,
                   progress: Callable[[int, int | None], None] | None,
                   alignments: dict[str, list[Detection]] | None) -> tuple[int, int, int]:
    """Merge every frame of ``folder`` into ``out_dir``; (frames, faces, faceless frames)."""
    frames = sequence_frames(folder)
    options = merger.options
    detector: Detector = FaceTracker(merger.detector, options.redetect_every)
    composer = merger.composer()  # one for the sequence, as for a video: steadied faces
    if alignments:
        detector = RecordedFaces(alignments, lambda i: image_frame_names(frames[i]), detector)
    suffix = IMAGE_EXTENSIONS[options.image_format]
    outputs = [out_dir / f"{p.stem}{suffix}" for p in frames]
    if len(set(outputs)) < len(outputs):  # a.png beside a.jpg: one would overwrite the other
        raise UnreadableMediaError(folder, "two frames share a name stem (e.g. a.png and "
                                           "a.jpg): their outputs would collide")
    faces = faceless = done = 0
    for start in range(0, len(frames), options.batch_frames):
        sources = frames[start:start + options.batch_frames]
        batch = []
        for src in sources:
            image = read_image(src)
            if min(image.shape[:2]) < watermark.MIN_SIZE:
                raise UnreadableMediaError(src, f"frame {image.shape[1]}x{image.shape[0]} is "
                                                "too small to watermark")
            batch.append(image)
        swap = [in_ranges(frame_number(src.name), options.frame_ranges) for src in sources]
        swapped, without = merger.swap_or_skip(batch, detector, swap, composer)
        faces, faceless = faces + swapped, faceless + without
        for src, frame, out in zip(sources, batch, outputs[start:], strict=False):
            write_marked_image(frame, out, options.image_format,
                               {**merger.provenance(src), "sequence": folder.name},
                               merger.credentials, src)
        done += len(sources)
        if progress is not None:
            progress(done, len(frames))
    return len(frames), faces, faceless

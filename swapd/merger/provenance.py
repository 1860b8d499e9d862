"""Provenance of merged output: verification of the metadata tag and the watermark.

Every image or video swapd writes says it is synthetic in two independent ways:

* a metadata tag: a PNG ``iTXt`` chunk or a JPEG ``COM`` segment with keyword
  ``swapd-provenance``, or container tags in a video (``comment``, ``description`` and a
  ``swapd_provenance`` key), each carrying a small JSON payload;
* the invisible luminance watermark of :mod:`swapd.merger.watermark` (``swapd-wm-v2``), which
  survives re-encoding that strips metadata, scaling, cropping, flips and small rotations;
  marks of the previous scheme (:mod:`swapd.merger.watermark_v1`) are still detected.

:func:`verify_file` reports each; a file counts as marked when any is found, and
:mod:`swapd.merger.verdict` says so in one line.
The tag is written and read by :mod:`swapd.merger.metadata_tag`; this module verifies.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from swapd.media import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    UnreadableMediaError,
    ffprobe_exe,
    probe_media,
)
from swapd.merger import watermark, watermark_v1
from swapd.merger.content_credentials import ManifestEvidence, read_manifest
from swapd.merger.metadata_tag import check_file, read_image_tag, read_video_tag
from swapd.merger.video_frames import sample_keyframes, sample_video_frames, video_turn
from swapd.merger.watermark import AS_CODED, AS_DISPLAYED, WatermarkEvidence


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify_file` found in one file."""

    path: str
    kind: str  # "image" | "video"
    metadata_tag: bool
    metadata: dict | None
    watermark: WatermarkEvidence
    marked: bool
    # the previous scheme's mark (outputs merged before swapd-wm-v2)
    legacy_watermark: WatermarkEvidence | None = None
    c2pa: ManifestEvidence | None = None

    @property
    def marks(self) -> list[str]:
        """The valid marks found: "C2PA manifest" (or "C2PA ingredient": another tool's
        manifest holding a swapd one), "metadata tag", "watermark" (and "watermark v1")."""
        found = []
        if self.c2pa is not None and self.c2pa.says_swapd:
            found.append("C2PA manifest" if self.c2pa.generator == "swapd" else "C2PA ingredient")
        if self.metadata_tag:
            found.append("metadata tag")
        if self.watermark.marked:
            found.append("watermark")
        if self.legacy_watermark is not None and self.legacy_watermark.marked:
            found.append("watermark v1")
        return found

    @property
    def watermarked(self) -> bool:
        """The pixels carry the watermark (either scheme)."""
        return self.watermark.marked or (
            self.legacy_watermark is not None and self.legacy_watermark.marked)

    @property
    def labelled(self) -> bool:
        """A label says swapd made it: the metadata tag, or a manifest that checks out."""
        return self.metadata_tag or (self.c2pa is not None and self.c2pa.says_swapd)

    @property
    def disagree(self) -> bool:
        """The labels (tag, manifest) and the pixels (watermark) disagree: labels stripped
        from marked pixels, a manifest naming swapd tampered with, or labels on unmarked
        pixels. (Another maker's tampered manifest says nothing about swapd's marks.)"""
        tampered = (self.c2pa is not None and self.c2pa.state == "tampered"
                    and self.c2pa.names_swapd)
        return tampered or self.labelled != self.watermarked

    def to_dict(self) -> dict:
        """Plain JSON-serialisable form."""
        out = asdict(self)
        out["marks"] = self.marks
        out["marks_disagree"] = self.disagree
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)


# cv2.rotate's code for a turn counter-clockwise by 90, 180 and 270 degrees
_TURNS = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180,
          270: cv2.ROTATE_90_CLOCKWISE}


def _decode_image(path: Path, data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """The image as coded, and as a viewer shows it when its EXIF orientation turns or
    mirrors it (else None). Decoded twice: EXIF sits in a JPEG's APP1, a PNG's eXIf or a
    WebP's EXIF chunk, and the decoder knows where better than a byte search would."""
    buffer = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise UnreadableMediaError(path, "not a decodable image")
    shown = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    same = shown is None or (shown.shape == image.shape and np.array_equal(shown, image))
    return image, None if same else shown


Displayed = Callable[[np.ndarray], np.ndarray]  # a frame as coded -> as a player shows it


class _BothSchemes:
    """Feeds each frame to the v2 detector while the v1 detector consumes them (one decode);
    with *displayed*, the v2 detector also gets each frame as a player shows it."""

    def __init__(self, frames: Iterator[np.ndarray], displayed: Displayed | None) -> None:
        self.frames = frames
        self.detector = watermark.Detector()
        self.displayed = displayed
        self.count = 0

    def add(self, frame: np.ndarray, keyframe: bool = False) -> None:
        add = self.detector.add_keyframe if keyframe else self.detector.add
        add(frame, AS_CODED)
        if self.displayed is not None:
            add(self.displayed(frame), AS_DISPLAYED)

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame in self.frames:
            self.count += 1
            self.add(frame)
            yield frame


def _check_watermarks(frames: Iterator[np.ndarray], keyframes: Iterable[np.ndarray] = (),
                      displayed: Displayed | None = None
                      ) -> tuple[WatermarkEvidence, WatermarkEvidence, int]:
    """The v2 evidence (the frames as coded and, with *displayed*, as a player shows them
    too: a copy's tag may turn the pixels that carry the mark, or turn back pixels a copy
    turned; both views' hypotheses count), the v1 evidence, and the frames read."""
    both = _BothSchemes(frames, displayed)
    legacy = watermark_v1.detect(both)
    if both.count:
        for frame in keyframes:
            both.add(frame, keyframe=True)
    return both.detector.result(), legacy, both.count


def _turned(turn: int) -> Displayed | None:
    """A frame turned *turn* degrees counter-clockwise (None for no turn)."""
    if not turn:
        return None
    return functools.partial(cv2.rotate, rotateCode=_TURNS[turn])


def verify_file(path: str | os.PathLike[str], trust_anchors: bytes | None = None
                ) -> VerifyResult:
    """Check an image or video for the swapd metadata tag, watermark and C2PA manifest
    (*trust_anchors*: PEM CA certificates whose signers count as trusted).

    Raises :class:`UnreadableMediaError` for a missing, empty, corrupt, unsupported or
    unreadable file (a permission denied included).
    """
    p = Path(path)
    try:
        return _verify(p, trust_anchors)
    except OSError as exc:  # reading it, or a tool it needs (ffmpeg) failing to start
        other = f" ({exc.filename})" if exc.filename and Path(exc.filename) != p else ""
        raise UnreadableMediaError(p, f"cannot check it: {exc.strerror or exc}{other}"
                                   ) from exc


def _verify(p: Path, trust_anchors: bytes | None) -> VerifyResult:
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        check_file(p)
        data = p.read_bytes()
        image, shown = _decode_image(p, data)
        metadata = read_image_tag(p, data)
        evidence, legacy, _ = _check_watermarks(
            iter([image]), displayed=None if shown is None else lambda _coded: shown)
        kind = "image"
    elif suffix in VIDEO_SUFFIXES:
        check_file(p)
        probe = probe_media(p) if ffprobe_exe() else None
        if probe is not None and not any(
            s.get("codec_type") == "video" for s in probe.get("streams", [])
        ):
            raise UnreadableMediaError(p, "no video stream")
        metadata = read_video_tag(p, probe)
        evidence, legacy, count = _check_watermarks(sample_video_frames(p, probe=probe),
                                                    sample_keyframes(p, probe=probe),
                                                    _turned(video_turn(probe)))
        if count == 0:
            raise UnreadableMediaError(p, "no video frame could be decoded")
        kind = "video"
    else:
        supported = ", ".join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))
        raise UnreadableMediaError(
            p, f"unsupported file type {suffix or '(none)'!r} (supported: {supported})"
        )
    manifest = read_manifest(p, trust_anchors)
    return VerifyResult(
        path=str(p),
        kind=kind,
        metadata_tag=metadata is not None,
        metadata=metadata,
        watermark=evidence,
        marked=metadata is not None or evidence.marked or legacy.marked or manifest.says_swapd,
        legacy_watermark=legacy,
        c2pa=manifest,
    )

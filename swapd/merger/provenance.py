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
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from swapd.media import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    MediaToolMissing,
    UnreadableMediaError,
    display_turn,
    ffmpeg_exe,
    ffprobe_exe,
    probe_media,
)
from swapd.merger import watermark, watermark_v1
from swapd.merger.content_credentials import ManifestEvidence, read_manifest
from swapd.merger.metadata_tag import check_file, read_image_tag, read_video_tag
from swapd.merger.watermark import AS_CODED, AS_DISPLAYED, WatermarkEvidence

MAX_VIDEO_FRAMES = 60
# Decoding a whole video with OpenCV is fine up to about this many pixels (900 frames of
# 640x360, a second or two); past it only keyframes are decoded (or, without ffprobe, seeked).
_SEQUENTIAL_PIXEL_BUDGET = 900 * 640 * 360
_SEQUENTIAL_FRAME_LIMIT = 900


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


def _video_turn(probe: dict | None) -> int:
    """Degrees counter-clockwise a player turns the first video stream's frames."""
    for stream in (probe or {}).get("streams", []):
        if stream.get("codec_type") == "video" and not stream.get("disposition", {}).get(
                "attached_pic"):  # cover art is no frame of the video
            return display_turn(stream)
    return 0


def _frame_count(cap: cv2.VideoCapture, probe: dict | None) -> int:
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if n > 0 or not probe:
        return n
    for stream in probe.get("streams", []):
        if stream.get("codec_type") == "video" and str(stream.get("nb_frames", "")).isdigit():
            return int(stream["nb_frames"])
    return 0


def _video_geometry(probe: dict | None) -> tuple[int, int, float] | None:
    """(width, height, duration s) of the first video stream, if ffprobe told us."""
    if not probe:
        return None
    for stream in probe.get("streams", []):
        if stream.get("codec_type") == "video":
            try:
                duration = float(stream.get("duration") or probe["format"]["duration"])
                width, height = int(stream["width"]), int(stream["height"])
            except (KeyError, TypeError, ValueError):
                return None
            # a hostile header's zero size would read zero-byte frames without end
            return (width, height, duration) if width > 0 and height > 0 else None
    return None


def _keyframes(
    path: Path, width: int, height: int, duration: float, max_frames: int
) -> Iterator[np.ndarray]:
    """Up to *max_frames* keyframes spread over the file, decoded by ffmpeg.

    Only keyframes are decoded (``-skip_frame nokey``), so a long video costs about as
    much as *max_frames* frame decodes; keyframes also carry the cleanest watermark.
    """
    step = max(duration / max_frames, 0.001)
    spread = f"select='isnan(prev_selected_t)+gte(t-prev_selected_t\\,{step:.3f})'"
    cmd = [
        ffmpeg_exe(), "-nostdin", "-v", "error", "-noautorotate", "-skip_frame", "nokey",
        "-i", str(path),
        "-map", "0:v:0", "-vf", spread, "-fps_mode", "passthrough", "-frames:v", str(max_frames),
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-",
    ]  # fmt: skip
    frame_bytes = width * height * 3
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=errors)
        assert proc.stdout is not None
        produced = 0
        try:
            while len(data := proc.stdout.read(frame_bytes)) == frame_bytes:
                produced += 1
                yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
        finally:
            proc.stdout.close()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if produced == 0 and proc.returncode != 0:
            errors.seek(0)
            lines = errors.read().decode("utf-8", "replace").strip().splitlines()
            reason = lines[-1] if lines else f"ffmpeg exit status {proc.returncode}"
            raise UnreadableMediaError(path, f"cannot decode its video ({reason})")


def sample_video_frames(
    path: str | os.PathLike[str], max_frames: int = MAX_VIDEO_FRAMES, probe: dict | None = None
) -> Iterator[np.ndarray]:
    """Yield up to *max_frames* BGR frames spread evenly over the whole video.

    Short videos are decoded straight through with OpenCV, keeping every n-th frame;
    long or large ones (with ffprobe data in *probe*) are sampled at keyframes by ffmpeg.
    """
    p = Path(path)
    cap = _open_coded(p)
    if not cap.isOpened():
        raise UnreadableMediaError(p, "OpenCV cannot open it as a video")
    try:
        total = _frame_count(cap, probe)
        geometry = _video_geometry(probe)
        if _sampled_at_keyframes(total, geometry):
            cap.release()
            yield from _keyframes(p, *geometry, max_frames)
            return
        if total <= 0:  # unknown length: take the first frames
            for _ in range(max_frames):
                ok, frame = cap.read()
                if not ok:
                    return
                yield frame
            return
        wanted = sorted({int(round(i)) for i in np.linspace(0, total - 1, min(max_frames, total))})
        if total <= _SEQUENTIAL_FRAME_LIMIT:
            targets = set(wanted)
            for index in range(wanted[-1] + 1):
                if not cap.grab():
                    return  # the container over-reported its length
                if index in targets:
                    ok, frame = cap.retrieve()
                    if ok:
                        yield frame
        else:  # long, and no ffprobe: seek (slow with long GOPs, but bounded)
            for index in wanted:
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                ok, frame = cap.read()
                if ok:
                    yield frame
    finally:
        cap.release()


def _open_coded(path: Path) -> cv2.VideoCapture:
    """*path* opened by OpenCV with its frames as coded: a rotation tag is not applied (the
    mark is in the coded pixels, which a tag added to a copy does not turn; and ffmpeg's
    keyframe decode, ``-noautorotate``, sees them so too)."""
    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
    return cap


def _sampled_at_keyframes(total: int, geometry: tuple[int, int, float] | None) -> bool:
    """Does :func:`sample_video_frames` sample a video of *total* frames (and ffprobe's
    *geometry*) at its keyframes, as too large to decode straight through?"""
    return geometry is not None and total * geometry[0] * geometry[1] > _SEQUENTIAL_PIXEL_BUDGET


def sample_keyframes(
    path: str | os.PathLike[str], max_frames: int = MAX_VIDEO_FRAMES, probe: dict | None = None
) -> Iterator[np.ndarray]:
    """Yield up to *max_frames* keyframes of a video, decoded apart from the frames
    :func:`sample_video_frames` yields (the watermark's keyframe pooling: a re-encode codes
    the mark afresh in its keyframes only, and every re-encode starts with one).

    Nothing when those frames are keyframes already (a video too large to decode straight
    through, with ffprobe's data in *probe*), nor when ffmpeg cannot decode them: the
    frames are evidence enough.
    """
    p = Path(path)
    cap = _open_coded(p)
    try:
        total, geometry = _frame_count(cap, probe), _video_geometry(probe)
        if _sampled_at_keyframes(total, geometry):
            return
        if geometry is None:
            fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
            width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
            height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
            if width <= 0 or height <= 0:
                return
            geometry = (width, height, total / fps if fps > 0 and total > 0 else 1.0)
    finally:
        cap.release()
    try:
        yield from _keyframes(p, *geometry, max_frames)
    except (UnreadableMediaError, MediaToolMissing, OSError):
        return


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
                                                    _turned(_video_turn(probe)))
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

"""Merging: swap the faces in a video or image with an exported model and write the result.

Per frame: detect faces (or replay the alignments record of ``swapd faces extract``, or
faceswap's ``.fsa``, found beside the footage) -> model crop from each face's 5 landmarks ->
swap (all faces of a few frames in one batch) -> colour-match -> paste back -> watermark ->
encode.  Every output is watermarked and carries the provenance tag; there is deliberately no
option to skip either.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Literal

import numpy as np

from swapd.errors import FileProblem
from swapd.extract.alignments import RecordedFaces, image_frame_names, video_frame_names
from swapd.extract.detectors.base import Detection, Detector
from swapd.extract.detectors.registry import create_detector
from swapd.extract.face_tracker import FaceTracker
from swapd.faces.alignment import model_crop_matrix, warp_face
from swapd.media import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    UnreadableMediaError,
    frame_times,
    probe_video,
    read_ahead,
    read_frames,
    read_image,
)
from swapd.merger import watermark
from swapd.merger.blend import face_mask, feather, match_colour, paste_back
from swapd.merger.frame_ranges import FrameRanges, in_ranges
from swapd.merger.sequence import IMAGE_EXTENSIONS, ImageFormat, merge_sequence, write_marked_image
from swapd.merger.session import SwapSession
from swapd.merger.video import CODECS, MAX_CRF, X264_PRESETS, VideoWriter

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]
OUTPUT_TAG = "_swapd"
# A container may count a frame or two its decoder drops (edit lists); more is a broken file.
_FRAME_SLACK = 0.02


class MergeError(FileProblem, RuntimeError):
    """A merge failed for a reason other than an unreadable input (which raises
    :class:`swapd.media.UnreadableMediaError`)."""


@dataclass(frozen=True)
class MergeOptions:
    """How to merge.  Detector options go to the detector plugin named by ``detector``."""

    detector: str = "mtcnn"
    min_face_size: int = 40  # pixels
    score_threshold: float | None = None  # None: the detector plugin's default
    faces: Literal["all", "largest"] = "all"
    colour_match: bool = True
    # Share of the crop size the blend mask keeps inside the mean face's outline. 0.08, not
    # 0.04: on a turned head the far temple lies outside the face the model learned (its loss
    # counts the landmarks' hull only), and 0.04 let those untrained pixels show.
    mask_erode: float = 0.08
    mask_blur: float = 0.08
    # A model that learned its mask blends with it (it follows the face the model was trained
    # on, turned heads included), softened by these shares. Less erosion let the edge of the
    # learned mask (the B face's hairline above the brows, a far temple) show as a light
    # seam in the demo's merges (benchmarks/results/demo_merge_masks.png).
    learned_mask: bool = True
    learned_mask_erode: float = 0.05
    learned_mask_blur: float = 0.08
    redetect_every: int = 5  # video: full detection every n frames, tracking between (1 = off)
    batch_frames: int = 4  # frames whose faces go through the model in one batch
    device: str = "auto"  # "auto" | "cpu" | "cuda"

    # --- Output (issue 16, writers): codec, quality, still/sequence format, frame ranges ---
    codec: Literal["h264", "h265", "vp9"] = "h264"  # video, always in MP4
    crf: int = 18  # quality: 0 (lossless) .. 51 (h264, h265) or 63 (vp9)
    preset: str = "veryfast"  # x264/x265 preset; for vp9 mapped onto libvpx's -cpu-used
    image_format: ImageFormat = "png"  # stills and image sequences: "png" or "jpeg"
    frame_ranges: FrameRanges = ()  # faceswap's: swap only in these (inclusive), copy the rest
    pipeline: bool = True  # video: detect a batch ahead in a thread (same frames out as off)

    def __post_init__(self) -> None:
        if self.faces not in ("all", "largest"):
            raise ValueError(f"faces must be 'all' or 'largest', got {self.faces!r}")
        for name in ("batch_frames", "redetect_every", "min_face_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if not 0 <= self.crf <= MAX_CRF[self.codec]:
            raise ValueError(f"crf must be in 0..{MAX_CRF[self.codec]} for {self.codec}, "
                             f"got {self.crf}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}, "
                             f"got {self.preset!r}")
        if self.image_format not in IMAGE_EXTENSIONS:
            raise ValueError(f"image_format must be 'png' or 'jpeg', got {self.image_format!r}")
        for first, last in self.frame_ranges:
            if not 0 <= first <= last:
                raise ValueError(f"frame range {first}-{last} is not FIRST-LAST")


@dataclass(frozen=True)
class _Plan:
    """A batch of frames with the faces found in them: (frame index, frame->crop matrix) and
    the crop of each, and how many frames were passed over (outside the frame ranges)."""

    frames: list[np.ndarray]
    jobs: list[tuple[int, np.ndarray]]
    crops: list[np.ndarray]
    skipped: int


@dataclass(frozen=True)
class MergeResult:
    """A finished merge: where it went and how it went."""

    output_path: Path
    frames: int
    faces_swapped: int
    seconds: float
    fps: float
    frames_without_face: int = 0  # written as they were (watermarked and tagged all the same)


def output_path_for(input_path: str | os.PathLike[str], output_dir: str | os.PathLike[str],
                    image_format: ImageFormat = "png", name_suffix: str = "") -> Path:
    """``<stem>_swapd.mp4`` for a video, ``<stem>_swapd.png`` (or ``.jpg``) for an image,
    the folder ``<name>_swapd`` for an image sequence (a folder); ``name_suffix`` goes after
    ``_swapd`` (a re-merge's ``_<iteration>``)."""
    p = Path(input_path)
    if p.is_dir():
        return Path(output_dir) / f"{p.name}{OUTPUT_TAG}{name_suffix}"
    suffix = IMAGE_EXTENSIONS[image_format] if p.suffix.lower() in IMAGE_SUFFIXES else ".mp4"
    return Path(output_dir) / f"{p.stem}{OUTPUT_TAG}{name_suffix}{suffix}"


class Merger:
    """A loaded model and detector, reusable for many files."""

    def __init__(self, model_path: str | os.PathLike[str], options: MergeOptions | None = None,
                 *, detector: Detector | None = None) -> None:
        self.options = options or MergeOptions()
        self.session = SwapSession(model_path, device=self.options.device)
        self.detector = detector or create_detector(
            self.options.detector, min_face_size=self.options.min_face_size,
            score_threshold=self.options.score_threshold, device=self.options.device)
        info = self.session.info
        self.mask = face_mask(info.input_size, info.coverage, info.centering,
                              self.options.mask_erode, self.options.mask_blur)

    def _faces(self, frame: np.ndarray, detector: Detector) -> list[Detection]:
        found = detector.detect(frame)
        if self.options.faces == "largest" and found:
            return [max(found, key=lambda d: d.area)]
        return found

    def swap_frames(self, frames: list[np.ndarray], detector: Detector | None = None) -> int:
        """Swap every face in ``frames`` in place and watermark them; returns faces swapped.

        ``detector`` overrides the merger's own (e.g. a :class:`FaceTracker` for video).
        """
        return self._swap(frames, detector)[0]

    def swap_or_skip(self, frames: list[np.ndarray], detector: Detector,
                     swap: list[bool]) -> tuple[int, int]:
        """:meth:`swap_frames` for the frames whose ``swap`` is true; the others are only
        watermarked (and the detector told it passed them over). (faces swapped, frames to
        swap in which no face was found)."""
        return self._swap(frames, detector, swap)

    def _swap(self, frames: list[np.ndarray], detector: Detector | None = None,
              swap: list[bool] | None = None) -> tuple[int, int]:
        """:meth:`swap_frames`: (faces swapped, frames in which no face was found)."""
        return self._apply(self._plan(frames, detector, swap))

    def _plan(self, frames: list[np.ndarray], detector: Detector | None = None,
              swap: list[bool] | None = None) -> _Plan:
        """The first half of :meth:`_swap`: find the faces and cut their crops (it only
        reads the frames, so it can run a batch ahead of :meth:`_apply`)."""
        info = self.session.info
        detector = detector or self.detector
        jobs: list[tuple[int, np.ndarray]] = []
        crops = []
        skipped = 0
        for index, frame in enumerate(frames):
            if swap is not None and not swap[index]:
                skipped += 1
                skip = getattr(detector, "skip", None)
                if callable(skip):
                    skip()
                continue
            for face in self._faces(frame, detector):
                matrix = model_crop_matrix(face.landmarks5, info.input_size, info.coverage,
                                           info.centering)
                jobs.append((index, matrix))
                crops.append(warp_face(frame, matrix, info.input_size))
        return _Plan(frames, jobs, crops, skipped)

    def _apply(self, plan: _Plan) -> tuple[int, int]:
        """The second half of :meth:`_swap`: swap, blend and watermark the planned frames."""
        frames, jobs, crops, skipped = plan.frames, plan.jobs, plan.crops, plan.skipped
        if crops:
            originals = np.stack(crops)
            swapped, learned = self.session.swap_with_masks(originals)
            for k, ((index, matrix), new, old) in enumerate(
                    zip(jobs, swapped, originals, strict=True)):
                mask = self.mask
                if learned is not None and self.options.learned_mask:
                    mask = feather(learned[k], self.options.learned_mask_erode,
                                   self.options.learned_mask_blur)
                if self.options.colour_match:
                    new = match_colour(new, old, mask)
                paste_back(frames[index], new, mask, matrix)
        for index, frame in enumerate(frames):
            frames[index] = watermark.embed(frame)
        return len(jobs), len(frames) - skipped - len({index for index, _ in jobs})

    def merge_file(self, input_path: str | os.PathLike[str], output_dir: str | os.PathLike[str],
                   progress: Progress | None = None,
                   alignments: dict[str, list[Detection]] | None = None,
                   name_suffix: str = "") -> MergeResult:
        """Merge one video or image into ``output_dir`` (see :func:`merge_file`)."""
        src = Path(input_path)
        suffix = src.suffix.lower()
        out = output_path_for(src, output_dir, self.options.image_format, name_suffix)
        started = time.perf_counter()
        if src.is_dir():
            frames, faces, faceless = merge_sequence(self, src, out, progress, alignments)
        elif suffix in VIDEO_SUFFIXES:
            frames, faces, faceless = self._merge_video(src, out, progress, alignments)
        elif suffix in IMAGE_SUFFIXES:
            frames, faces, faceless = self._merge_image(src, out, progress, alignments)
        else:
            supported = ", ".join(sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES))
            raise UnreadableMediaError(src, f"unsupported file type {suffix or '(none)'!r} "
                                            f"(supported: {supported})")
        seconds = time.perf_counter() - started
        log.info("merged %s -> %s: %d frames, %d faces, %.1f s", src, out, frames, faces, seconds)
        if faceless:
            log.warning("%s: no face found in %d of %d frames (written as they were)", src,
                        faceless, frames)
        return MergeResult(out, frames, faces, seconds, frames / seconds if seconds else 0.0,
                           faceless)

    def provenance(self, src: Path) -> dict[str, object]:
        """The extra keys of a merged file's provenance tag."""
        return {"source_file": src.name, "model": self.session.info.model,
                "model_file": self.session.path.name}

    def _merge_video(self, src: Path, out: Path, progress: Progress | None,
                     alignments: dict[str, list[Detection]] | None) -> tuple[int, int, int]:
        info = probe_video(src)
        total = info.expected_frames
        done = faces = faceless = 0
        tracker: Detector = FaceTracker(self.detector, self.options.redetect_every)
        if alignments:
            tracker = RecordedFaces(alignments, partial(video_frame_names, src), tracker)
        options = self.options
        with VideoWriter(out, info.width, info.height, info.fps, info, crf=options.crf,
                         preset=options.preset, provenance=self.provenance(src),
                         codec=options.codec, times=frame_times(src)) as writer:
            for plan in self._plans(read_frames(info), tracker):
                batch = plan.frames
                swapped, without = self._apply(plan)
                faces, faceless = faces + swapped, faceless + without
                for frame in batch:
                    writer.write(frame)
                done += len(batch)
                if progress is not None:
                    progress(done, total)
            if info.frames and done < info.frames * (1 - _FRAME_SLACK) - 1:
                raise UnreadableMediaError(
                    src, f"truncated or corrupt: decoded {done} of {info.frames} frames")
        return done, faces, faceless

    def _plans(self, frames: Iterable[np.ndarray], detector: Detector) -> Iterator[_Plan]:
        """Batches of frames, planned (:meth:`_plan`): with ``pipeline``, in a thread a batch
        or two ahead, so detection overlaps the swap and blend of the batch before (decoding
        and encoding run in ffmpeg processes of their own already)."""
        options = self.options
        first = 1  # faceswap numbers a video's frames from 1

        def plans() -> Iterator[_Plan]:
            nonlocal first
            for batch in _batched(frames, options.batch_frames):
                swap = [in_ranges(first + k, options.frame_ranges) for k in range(len(batch))]
                first += len(batch)
                yield self._plan(batch, detector, swap)

        return read_ahead(plans(), 2) if options.pipeline else plans()

    def _merge_image(self, src: Path, out: Path, progress: Progress | None,
                     alignments: dict[str, list[Detection]] | None) -> tuple[int, int, int]:
        image = read_image(src)
        if min(image.shape[:2]) < watermark.MIN_SIZE:
            raise MergeError(src, f"image {image.shape[1]}x{image.shape[0]} is too small to "
                                  f"watermark (minimum {watermark.MIN_SIZE}x{watermark.MIN_SIZE})")
        frames = [image]
        detector = self.detector
        if alignments:
            detector = RecordedFaces(alignments, lambda _: image_frame_names(src), detector)
        faces, faceless = self._swap(frames, detector)
        write_marked_image(frames[0], out, self.options.image_format, self.provenance(src))
        if progress is not None:
            progress(1, 1)
        return 1, faces, faceless


def faceless_text(faceless: int, frames: int) -> str:
    """The warning for a merge that found no face in ``faceless`` of its ``frames``."""
    if frames == 1:
        return "no face found: the image was written unchanged (marked all the same)"
    return (f"no face found in {faceless} of {frames} frames: those frames were written "
            "unchanged (marked all the same)")


def _batched(frames: Iterable[np.ndarray], n: int) -> Iterator[list[np.ndarray]]:
    it = iter(frames)
    while batch := list(islice(it, n)):
        yield batch


def merge_file(input_path: str | os.PathLike[str], output_dir: str | os.PathLike[str],
               model_path: str | os.PathLike[str], options: MergeOptions | None = None,
               progress: Progress | None = None,
               alignments: dict[str, list[Detection]] | None = None,
               name_suffix: str = "") -> MergeResult:
    """Swap the faces in one video or image with ``model_path`` and write it to ``output_dir``.

    Videos become ``<stem>_swapd.mp4`` (H.264 with the source's audio), images
    ``<stem>_swapd.png``; both watermarked and provenance-tagged.  ``progress(done, total)`` is
    called as frames finish (``total`` may be None when the container does not say).  An
    unreadable input raises :class:`UnreadableMediaError` naming the file; no partial output is
    ever left behind. ``alignments`` (see :func:`swapd.extract.alignments.load_alignments`):
    the faces recorded per frame by ``swapd faces extract``, used instead of detecting.
    """
    return Merger(model_path, options).merge_file(input_path, output_dir, progress, alignments,
                                                  name_suffix)

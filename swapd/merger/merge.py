"""Merging: swap the faces in a video or image with an exported model and write the result.

Per frame: detect faces (or replay the alignments record of ``swapd faces extract``, or
faceswap's ``.fsa``, found beside the footage) -> 68 landmarks per face (the landmark
plugin, as extraction places them) -> model crop from them -> swap (all faces of a few frames
in one batch) -> colour-match -> paste back -> watermark -> encode.  Every output is
watermarked and carries the provenance tag; there is deliberately no option to skip either.
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

import numpy as np

from swapd import threads
from swapd.config import MergeLook
from swapd.errors import FileProblem
from swapd.extract.alignments import RecordedFaces, image_frame_names, video_frame_names
from swapd.extract.detectors.base import Detection, Detector
from swapd.extract.detectors.registry import create_detector
from swapd.extract.face_tracker import FaceTracker
from swapd.extract.landmarkers.registry import create_landmarker, place_landmarks
from swapd.faces.alignment import warp_face
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
from swapd.merger.c2pa_credentials import load_credentials
from swapd.merger.compose import Composer, Placed
from swapd.merger.finish import UpscaleRefused
from swapd.merger.frame_ranges import in_ranges
from swapd.merger.options import MergeOptions
from swapd.merger.sequence import IMAGE_EXTENSIONS, ImageFormat, merge_sequence, write_marked_image
from swapd.merger.session import SwapSession
from swapd.merger.video import VideoWriter

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]
OUTPUT_TAG = "_swapd"
# A container may count a frame or two its decoder drops (edit lists); more is a broken file.
_FRAME_SLACK = 0.02


class MergeError(FileProblem, RuntimeError):
    """A merge failed for a reason other than an unreadable input (which raises
    :class:`swapd.media.UnreadableMediaError`)."""


def require_markable(src: Path, width: int, height: int, what: str = "image") -> None:
    """A MergeError when frames of ``width`` x ``height`` are too small to carry the
    watermark: such a source is set aside before any work, never merged unmarked."""
    if min(width, height) < watermark.MIN_SIZE:
        raise MergeError(src, f"{what} {width}x{height} is too small to watermark (minimum "
                              f"{watermark.MIN_SIZE}x{watermark.MIN_SIZE})")


@dataclass(frozen=True)
class _Plan:
    """A batch of frames with the faces found in them, placed by ``composer`` (frame index,
    placement) with the crop of each, and which frames are swapped (None: all; the others,
    outside the frame ranges, are copied as they are)."""

    frames: list[np.ndarray]
    jobs: list[tuple[int, Placed]]
    crops: list[np.ndarray]
    swap: list[bool] | None
    composer: Composer


@dataclass(frozen=True)
class _Inferred:
    """A plan with the model's output for its crops (None: no face in the batch)."""

    plan: _Plan
    originals: np.ndarray | None
    swapped: np.ndarray | None
    prd: np.ndarray | None
    dst: np.ndarray | None


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
        # Credentials first: bad ones stop the merge before any work (never a merge unmarked).
        self.credentials = load_credentials(self.options.c2pa_certificate,
                                            self.options.c2pa_private_key,
                                            timestamp_url=self.options.c2pa_timestamp_url)
        # The colour transfers' small matrix products would wake OpenBLAS's threads, which
        # then spin beside the merge (idt at 256 px: twice the CPU for the same work).
        threads.openblas_in_calling_thread()
        self.look = self.options.look
        if self.options.encode_crf < self.options.crf:
            log.warning("crf %d is above %d, the most swapd encodes %s at (past it the encode "
                        "wears the watermark away): videos are encoded at %d",
                        self.options.crf, self.options.encode_crf, self.options.codec,
                        self.options.encode_crf)
        self.session = SwapSession(model_path, device=self.options.device)
        self.detector = detector or create_detector(
            self.options.detector, min_face_size=self.options.min_face_size,
            score_threshold=self.options.score_threshold, device=self.options.device)
        self.landmarker = create_landmarker(self.options.landmarks)

    def composer(self, look: MergeLook | None = None) -> Composer:
        """A new file's (or preview's) merge state, with ``look`` (default: the options')."""
        o = self.options
        return Composer(look or self.look, self.session.info,
                        prd=self.session.mask_name is not None,
                        dst=self.session.dst_mask_name is not None, colour=o.colour_match,
                        learned=o.learned_mask,
                        tuned=((o.mask_erode, o.mask_blur),
                               (o.learned_mask_erode, o.learned_mask_blur)))

    def _faces(self, frame: np.ndarray, detector: Detector) -> list[Detection]:
        found = detector.detect(frame)
        if self.options.faces == "largest" and found:
            found = [max(found, key=lambda d: d.area)]
        # Recorded faces with 68 points keep them; the others get the landmark plugin's.
        return place_landmarks(self.landmarker, frame, found, "")[0]

    def swap_frames(self, frames: list[np.ndarray], detector: Detector | None = None,
                    composer: Composer | None = None) -> int:
        """Swap every face in ``frames`` in place and watermark them; returns faces swapped.

        ``detector`` overrides the merger's own (e.g. a :class:`FaceTracker` for video);
        ``composer`` carries a video's state from batch to batch (default: a new one).
        """
        return self._swap(frames, detector, composer)[0]

    def swap_or_skip(self, frames: list[np.ndarray], detector: Detector, swap: list[bool],
                     composer: Composer | None = None) -> tuple[int, int]:
        """:meth:`swap_frames` for the frames whose ``swap`` is true; the others are only
        watermarked (and the detector told it passed them over). (faces swapped, frames to
        swap in which no face was found)."""
        return self._apply(self._plan(frames, detector, swap, composer))

    def _swap(self, frames: list[np.ndarray], detector: Detector | None = None,
              composer: Composer | None = None) -> tuple[int, int]:
        """:meth:`swap_frames`: (faces swapped, frames in which no face was found)."""
        return self._apply(self._plan(frames, detector, None, composer))

    def _plan(self, frames: list[np.ndarray], detector: Detector | None = None,
              swap: list[bool] | None = None, composer: Composer | None = None) -> _Plan:
        """The first half of :meth:`_swap`: find and place the faces and cut their crops (it
        only reads the frames, so it can run a batch ahead of :meth:`_apply`). Refuses an
        upscale beyond max_upscale (:class:`UpscaleRefused`)."""
        detector = detector or self.detector
        composer = composer or self.composer()
        jobs: list[tuple[int, Placed]] = []
        for index, frame in enumerate(frames):
            if swap is not None and not swap[index]:
                skip = getattr(detector, "skip", None)
                if callable(skip):
                    skip()
                continue
            jobs += [(index, p) for p in composer.place(self._faces(frame, detector))]
        size = self.session.info.input_size
        crops = [warp_face(frames[i], p.matrix, size) for i, p in jobs]
        return _Plan(frames, jobs, crops, swap, composer)

    def _apply(self, plan: _Plan) -> tuple[int, int]:
        """The second half of :meth:`_swap`: swap, blend and watermark the planned frames."""
        return self._finish(self._infer(plan))

    def _infer(self, plan: _Plan) -> _Inferred:
        """Run the model on a plan's crops (the part of :meth:`_apply` that only reads)."""
        if not plan.jobs:
            return _Inferred(plan, None, None, None, None)
        originals = np.stack(plan.crops)
        return _Inferred(plan, originals, *self.session.swap_all(originals))

    def _finish(self, inferred: _Inferred) -> tuple[int, int]:
        """Blend the swapped faces into the plan's frames and watermark them; (faces swapped,
        frames to swap in which no face was found)."""
        plan = inferred.plan
        frames, jobs, composer = plan.frames, plan.jobs, plan.composer
        originals, swapped, prd, dst = (inferred.originals, inferred.swapped, inferred.prd,
                                        inferred.dst)
        swapping = [plan.swap is None or plan.swap[i] for i in range(len(frames))]
        raw = composer.look.mode == "raw-predict"
        swapped_by_frame: dict[int, list[np.ndarray]] = {}
        frames[:] = [composer.before(f) if on else f for f, on in zip(frames, swapping,
                                                                       strict=True)]
        for k, (index, placed) in enumerate(jobs):
            mask = composer.mask(placed, None if prd is None else prd[k],
                                 None if dst is None else dst[k])
            assert originals is not None and swapped is not None  # jobs: inferred
            if raw:
                swapped_by_frame.setdefault(index, []).append(swapped[k])
                continue
            composer.compose(frames[index], originals[k], swapped[k], mask, placed)
        for index, frame in enumerate(frames):
            if swapping[index]:  # a frame outside the frame ranges is copied as it is
                if raw:
                    frame = composer.raw_predict(frame, swapped_by_frame.get(index, []))
                frame = composer.after(frame)
            frames[index] = watermark.embed(frame)
        return len(jobs), sum(swapping) - len({index for index, _ in jobs})

    def merge_file(self, input_path: str | os.PathLike[str], output_dir: str | os.PathLike[str],
                   progress: Progress | None = None,
                   alignments: dict[str, list[Detection]] | None = None,
                   name_suffix: str = "") -> MergeResult:
        """Merge one video or image into ``output_dir`` (see :func:`merge_file`)."""
        src = Path(input_path)
        suffix = src.suffix.lower()
        out = output_path_for(src, output_dir, self.options.image_format, name_suffix)
        started = time.perf_counter()
        try:
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
        except UpscaleRefused as exc:  # a face drawn beyond max_upscale: the merge names it
            raise MergeError(src, str(exc)) from None
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
        require_markable(src, info.width, info.height, "video")
        total = info.expected_frames
        done = faces = faceless = 0
        tracker: Detector = FaceTracker(self.detector, self.options.redetect_every)
        composer = self.composer()
        if alignments:
            tracker = RecordedFaces(alignments, partial(video_frame_names, src), tracker)
        options = self.options
        with VideoWriter(out, info.width, info.height, info.fps, info, crf=options.encode_crf,
                         preset=options.preset, provenance=self.provenance(src),
                         codec=options.codec, times=frame_times(src),
                         credentials=self.credentials) as writer:
            for inferred in self._inferred(read_frames(info), tracker, composer):
                batch = inferred.plan.frames
                swapped, without = self._finish(inferred)
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

    def _inferred(self, frames: Iterable[np.ndarray], detector: Detector, composer: Composer
                  ) -> Iterator[_Inferred]:
        """Batches of frames, planned (:meth:`_plan`) and run through the model
        (:meth:`_infer`). With ``pipeline`` each in a thread of its own, a batch or two
        ahead: detection, the model and the caller's blend, watermark and write of the
        batch before all overlap (decoding and encoding run in ffmpeg processes of their
        own already). The same frames come out either way.

        The composer is shared: ``place`` runs in the planning thread, a batch or more ahead
        of ``mask``/``compose`` in the caller's, which must read only what a placement copied
        when it was made (its matrix, points, motion), never the live track."""
        def inferred() -> Iterator[_Inferred]:
            plans = self._plans(frames, detector, composer)
            try:
                for plan in plans:
                    yield self._infer(plan)
            finally:  # stopped early: the planning thread stops too
                close = getattr(plans, "close", None)
                if close is not None:
                    close()

        # Depth 1 here (2 for the plans): about 5 batches of frames in flight in all
        return read_ahead(inferred(), 1) if self.options.pipeline else inferred()

    def _plans(self, frames: Iterable[np.ndarray], detector: Detector, composer: Composer
               ) -> Iterator[_Plan]:
        """Batches of frames, planned (:meth:`_plan`): with ``pipeline``, in a thread a batch
        or two ahead."""
        options = self.options
        first = 1  # faceswap numbers a video's frames from 1

        def plans() -> Iterator[_Plan]:
            nonlocal first
            for batch in _batched(frames, options.batch_frames):
                swap = [in_ranges(first + k, options.frame_ranges) for k in range(len(batch))]
                first += len(batch)
                yield self._plan(batch, detector, swap, composer)

        return read_ahead(plans(), 2) if options.pipeline else plans()

    def _merge_image(self, src: Path, out: Path, progress: Progress | None,
                     alignments: dict[str, list[Detection]] | None) -> tuple[int, int, int]:
        image = read_image(src)
        require_markable(src, image.shape[1], image.shape[0])
        frames = [image]
        detector = self.detector
        if alignments:
            detector = RecordedFaces(alignments, lambda _: image_frame_names(src), detector)
        faces, faceless = self._swap(frames, detector)
        write_marked_image(frames[0], out, self.options.image_format, self.provenance(src),
                           self.credentials, src)
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

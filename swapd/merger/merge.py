"""Merging: swap the faces in a video or image with an exported model and write the result.

Per frame: detect faces (or replay the alignments record of ``swapd faces extract``, or
faceswap's ``.fsa``, found beside the footage) -> model crop from each face's 5 landmarks ->
swap (all faces of a few frames in one batch) -> colour-match -> paste back -> watermark ->
encode.  Every output is watermarked and carries the provenance tag; there is deliberately no
option to skip either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from swapd.errors import FileProblem
from swapd.extract.alignments import RecordedFaces, image_frame_names, video_frame_names
from swapd.extract.detectors.base import Detection, Detector
from swapd.extract.detectors.registry import create_detector
from swapd.extract.face_tracker import FaceTracker
from swapd.faces.alignment import model_crop_matrix, warp_face
from swapd.fsutil import durable_replace
from swapd.media import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    UnreadableMediaError,
    probe_video,
    read_frames,
    read_image,
)
from swapd.merger import watermark
from swapd.merger.blend import face_mask, feather, match_colour, paste_back
from swapd.merger.c2pa_credentials import load_credentials
from swapd.merger.content_credentials import sign_file
from swapd.merger.metadata_tag import tag_image
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
    crf: int = 18
    preset: str = "veryfast"
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    # The C2PA signing chain and key (PEM); None: swapd's local CA (made on first use).
    c2pa_certificate: str | None = None
    c2pa_private_key: str | None = None

    def __post_init__(self) -> None:
        if self.faces not in ("all", "largest"):
            raise ValueError(f"faces must be 'all' or 'largest', got {self.faces!r}")
        for name in ("batch_frames", "redetect_every", "min_face_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {self.crf}")


@dataclass(frozen=True)
class MergeResult:
    """A finished merge: where it went and how it went."""

    output_path: Path
    frames: int
    faces_swapped: int
    seconds: float
    fps: float
    frames_without_face: int = 0  # written as they were (watermarked and tagged all the same)


def output_path_for(input_path: str | os.PathLike[str], output_dir: str | os.PathLike[str]
                    ) -> Path:
    """``<stem>_swapd.mp4`` for a video, ``<stem>_swapd.png`` for an image."""
    p = Path(input_path)
    suffix = ".png" if p.suffix.lower() in IMAGE_SUFFIXES else ".mp4"
    return Path(output_dir) / f"{p.stem}{OUTPUT_TAG}{suffix}"


class Merger:
    """A loaded model and detector, reusable for many files."""

    def __init__(self, model_path: str | os.PathLike[str], options: MergeOptions | None = None,
                 *, detector: Detector | None = None) -> None:
        self.options = options or MergeOptions()
        # Credentials first: bad ones stop the merge before any work (never a merge unmarked).
        self.credentials = load_credentials(self.options.c2pa_certificate,
                                            self.options.c2pa_private_key)
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

    def _swap(self, frames: list[np.ndarray], detector: Detector | None = None
              ) -> tuple[int, int]:
        """:meth:`swap_frames`: (faces swapped, frames in which no face was found)."""
        info = self.session.info
        detector = detector or self.detector
        jobs: list[tuple[int, np.ndarray]] = []
        crops = []
        for index, frame in enumerate(frames):
            for face in self._faces(frame, detector):
                matrix = model_crop_matrix(face.landmarks5, info.input_size, info.coverage,
                                           info.centering)
                jobs.append((index, matrix))
                crops.append(warp_face(frame, matrix, info.input_size))
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
        return len(jobs), len(frames) - len({index for index, _ in jobs})

    def merge_file(self, input_path: str | os.PathLike[str], output_dir: str | os.PathLike[str],
                   progress: Progress | None = None,
                   alignments: dict[str, list[Detection]] | None = None) -> MergeResult:
        """Merge one video or image into ``output_dir`` (see :func:`merge_file`)."""
        src = Path(input_path)
        suffix = src.suffix.lower()
        out = output_path_for(src, output_dir)
        started = time.perf_counter()
        if suffix in VIDEO_SUFFIXES:
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

    def _provenance(self, src: Path) -> dict[str, object]:
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
        with VideoWriter(out, info.width, info.height, info.fps, info, crf=self.options.crf,
                         preset=self.options.preset, provenance=self._provenance(src),
                         credentials=self.credentials) as writer:
            for batch in _batched(read_frames(info), self.options.batch_frames):
                swapped, without = self._swap(batch, tracker)
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
        ok, data = cv2.imencode(".png", frames[0])
        if not ok:  # not the footage's fault: no MergeError, which would set the source aside
            raise RuntimeError(f"{out}: PNG encoding failed")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.stem}.{uuid.uuid4().hex[:8]}.part.png")
        try:
            tmp.write_bytes(data.tobytes())
            tag_image(tmp, self._provenance(src))
            sign_file(tmp, src, self.credentials, title=out.name)
            durable_replace(tmp, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
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
               alignments: dict[str, list[Detection]] | None = None) -> MergeResult:
    """Swap the faces in one video or image with ``model_path`` and write it to ``output_dir``.

    Videos become ``<stem>_swapd.mp4`` (H.264 with the source's audio), images
    ``<stem>_swapd.png``; both watermarked and provenance-tagged.  ``progress(done, total)`` is
    called as frames finish (``total`` may be None when the container does not say).  An
    unreadable input raises :class:`UnreadableMediaError` naming the file; no partial output is
    ever left behind. ``alignments`` (see :func:`swapd.extract.alignments.load_alignments`):
    the faces recorded per frame by ``swapd faces extract``, used instead of detecting.
    """
    return Merger(model_path, options).merge_file(input_path, output_dir, progress, alignments)

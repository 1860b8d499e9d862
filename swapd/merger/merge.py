"""Merging: swap the faces in a video or image with an exported model and write the result.

Per frame: detect faces (or replay the alignments record of ``swapd faces extract``, or
faceswap's ``.fsa``, found beside the footage) -> 68 landmarks per face (the landmark
plugin, as extraction places them) -> model crop from them -> swap (all faces of a few frames
in one batch) -> colour-match -> paste back -> watermark -> encode.  Every output is
watermarked and carries the provenance tag; there is deliberately no option to skip either.
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

from swapd.config import MergeLook
from swapd.errors import FileProblem
from swapd.extract.alignments import RecordedFaces, image_frame_names, video_frame_names
from swapd.extract.detectors.base import Detection, Detector
from swapd.extract.detectors.registry import create_detector
from swapd.extract.face_tracker import FaceTracker
from swapd.extract.landmarkers.registry import create_landmarker, place_landmarks
from swapd.faces.alignment import warp_face
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
from swapd.merger.compose import Composer, Placed
from swapd.merger.finish import UpscaleRefused
from swapd.merger.look import LOOK_KEYS, look_of
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
    # Each face is cut by the landmarks of this plugin, as `swapd faces extract` places them by
    # default, so the model sees the crop it trained on ("detector": the detector's own points).
    landmarks: str = "face_mesh"
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
    # --- the look of a merge (issue 16): the job file's [merge] keys, `swapd merge` flags.
    # Names, values and defaults are swapd.config.MergeLook's (validated there); colour_match
    # = False above turns the colour transfer off whatever color_transfer says.
    color_transfer: str = "rct"
    mode: str = "overlay"
    hist_match_threshold: int = 255
    masked_hist_match: bool = True
    balance_colorspace: str = "hsv"
    balance_1: float = 0.0
    balance_2: float = 0.0
    balance_3: float = 0.0
    balance_contrast: float = 0.0
    balance_brightness: float = 0.0
    mask: str = "auto"
    erosion: float = 0.0
    erosion_top: float = 0.0
    erosion_bottom: float = 0.0
    erosion_left: float = 0.0
    erosion_right: float = 0.0
    blur: float = 0.0
    mask_smoothing: float = 0.3
    box_smoothing: float = 0.5
    sharpen: str = "none"
    sharpen_amount: float = 150.0
    sharpen_radius: float = 0.3
    sharpen_threshold: float = 5.0
    output_face_scale: int = 0
    motion_blur_power: int = 0
    image_denoise_power: int = 0
    bicubic_degrade_power: int = 0
    color_degrade_power: int = 0
    max_upscale: float = 16.0
    # --- end of the look

    def __post_init__(self) -> None:
        if self.faces not in ("all", "largest"):
            raise ValueError(f"faces must be 'all' or 'largest', got {self.faces!r}")
        for name in ("batch_frames", "redetect_every", "min_face_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {self.crf}")
        self.look  # noqa: B018 (validates the look's options, naming the key)

    @property
    def look(self) -> MergeLook:
        """The look's options, validated (a ValueError names the key)."""
        return look_of(self)

    @classmethod
    def with_look(cls, look: MergeLook | dict[str, object], **others: object) -> MergeOptions:
        """Options with ``look``'s values (a MergeLook, or a job's [merge] section)."""
        values = dict(look) if isinstance(look, dict) else look.model_dump()
        return cls(**{k: v for k, v in values.items() if k in LOOK_KEYS}, **others)


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
        self.look = self.options.look
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

    def _swap(self, frames: list[np.ndarray], detector: Detector | None = None,
              composer: Composer | None = None) -> tuple[int, int]:
        """:meth:`swap_frames`: (faces swapped, frames in which no face was found)."""
        detector = detector or self.detector
        composer = composer or self.composer()
        jobs: list[tuple[int, Placed]] = []
        for index, frame in enumerate(frames):
            jobs += [(index, p) for p in composer.place(self._faces(frame, detector))]
        swapped_by_frame: dict[int, list[np.ndarray]] = {}
        if jobs:
            size = self.session.info.input_size
            originals = np.stack([warp_face(frames[i], p.matrix, size) for i, p in jobs])
            swapped, prd, dst = self.session.swap_all(originals)
        frames[:] = [composer.before(frame) for frame in frames]
        if jobs:
            for k, (index, placed) in enumerate(jobs):
                mask = composer.mask(placed, None if prd is None else prd[k],
                                     None if dst is None else dst[k])
                if composer.look.mode == "raw-predict":
                    swapped_by_frame.setdefault(index, []).append(swapped[k])
                    continue
                composer.compose(frames[index], originals[k], swapped[k], mask, placed)
        for index, frame in enumerate(frames):
            if composer.look.mode == "raw-predict":
                frame = composer.raw_predict(frame, swapped_by_frame.get(index, []))
            frames[index] = watermark.embed(composer.after(frame))
        return len(jobs), len(frames) - len({index for index, _ in jobs})

    def _swap_refusing(self, src: Path, frames: list[np.ndarray], detector: Detector,
                       composer: Composer) -> tuple[int, int]:
        """:meth:`_swap`; a face upscaled beyond max_upscale fails the merge, naming it."""
        try:
            return self._swap(frames, detector, composer)
        except UpscaleRefused as exc:
            raise MergeError(src, str(exc)) from None

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
        composer = self.composer()
        if alignments:
            tracker = RecordedFaces(alignments, partial(video_frame_names, src), tracker)
        with VideoWriter(out, info.width, info.height, info.fps, info, crf=self.options.crf,
                         preset=self.options.preset, provenance=self._provenance(src)) as writer:
            for batch in _batched(read_frames(info), self.options.batch_frames):
                swapped, without = self._swap_refusing(src, batch, tracker, composer)
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
        faces, faceless = self._swap_refusing(src, frames, detector, self.composer())
        ok, data = cv2.imencode(".png", frames[0])
        if not ok:  # not the footage's fault: no MergeError, which would set the source aside
            raise RuntimeError(f"{out}: PNG encoding failed")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.stem}.{uuid.uuid4().hex[:8]}.part.png")
        try:
            tmp.write_bytes(data.tobytes())
            tag_image(tmp, self._provenance(src))
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

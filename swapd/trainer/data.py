"""Training data: the model crop, in-RAM face sets that follow their folder, batch loading.

Faces on disk are aligned square images (BGR as cv2 decodes them). Each is decoded once,
cropped with :func:`crop_for_model` and kept in RAM as uint8, with its face/eye/mouth masks
drawn from the landmarks in its header (:mod:`swapd.faces.masks`). :meth:`FaceSet.refresh`
rescans the folder by ``stat`` so faces added during training join and removed ones leave.
:class:`BatchLoader` builds augmented batches in a background thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from swapd.errors import FileProblem
from swapd.extract.detectors.base import Detector
from swapd.extract.detectors.registry import create_detector
from swapd.extract.face_landmarks import find_face_landmarks
from swapd.faces.alignment import (
    CENTERING_PADDING,
    Centering,
    aligned_matrix,
    recentre,
    recentre_matrix,
    transform_points,
    warp_face,
)
from swapd.faces.dfl_jpg import DFLFormatError, read_dfl_meta
from swapd.faces.faceswap_png import FaceFormatError, read_faceswap_header
from swapd.faces.landmarks import landmark_array
from swapd.faces.masks import (
    MASK_CHANNELS,
    MaskType,
    full_face_mask,
    grow_face,
    landmark_masks,
)
from swapd.faces.pose import PoseError, estimate_pose
from swapd.media import IMAGE_SUFFIXES
from swapd.trainer.augment import Augmenter, AugmentSettings
from swapd.trainer.warp_landmarks import ClosestMatches

log = logging.getLogger(__name__)


class FaceSetError(FileProblem, ValueError):
    """A face folder that is missing or holds no usable face."""


def crop_for_model(img: np.ndarray, size: int, coverage: float) -> np.ndarray:
    """Centre crop keeping ``coverage`` of a square face's side, resized to ``size``.

    The one definition of the model crop: training and merging both call it. Works for
    HxW and HxWxC arrays; the result keeps ``img``'s dtype and channel count.
    """
    h, w = img.shape[:2]
    if h != w:
        raise ValueError(f"face image is not square ({w}x{h})")
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    side = max(1, int(round(h * coverage)))
    start = (h - side) // 2
    crop = img[start : start + side, start : start + side]
    if side == size:
        return crop.copy()
    out = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return out.reshape(size, size, *img.shape[2:])


def _decode(data: np.ndarray, grayscale: bool) -> np.ndarray:
    """Decode an image file's bytes; ValueError with the reason if it fails."""
    if data.size == 0:
        raise ValueError("empty file")
    flags = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    img = cv2.imdecode(data, flags)
    if img is None:
        raise ValueError("not a decodable image")
    return img


# How DeepFaceLab's face types compare with swapd's centerings (their crops are close, not
# identical: DFL's own mean face and paddings differ a little).
DFL_CENTERING = {"half_face": "legacy", "midfull_face": "legacy", "full_face": "face",
                 "full_face_no_align": "face", "whole_face": "face", "head": "head",
                 "head_no_align": "head", "mark_only": "face"}


@dataclass(frozen=True)
class StoredGeometry:
    """What a face file says about its own crop: landmarks in its pixels, its centering."""

    landmarks: np.ndarray | None = None
    centering: str | None = None  # None: unknown, taken to be the trainer's
    frame_landmarks: np.ndarray | None = None  # faceswap's, in the source frame's pixels
    # Cut the trainer's crop from the landmarks themselves (DeepFaceLab's face types pad its
    # own mean face, which swapd's centerings match only roughly).
    realign: bool = False


def _points(value: object) -> np.ndarray | None:
    """68x2 or 5x2 finite landmarks, or None (a face without usable ones trains unmasked)."""
    try:
        return landmark_array(value)
    except ValueError:
        return None


def stored_geometry(data: bytes, where: str) -> StoredGeometry:
    """Landmarks and centering of an aligned face file's bytes.

    DeepFaceLab JPGs: the landmarks of their metadata (the crop is re-derived from them), the
    nearest centering to the face type. faceswap
    PNGs: swapd's extras when swapd wrote the file (landmarks and centering); faceswap itself
    stores faces head-centred (since 2.0) and its frame landmarks only. Hostile or broken DFL
    metadata raises :class:`DFLFormatError`.
    """
    if data[:2] == b"\xff\xd8":
        dfl = read_dfl_meta(data)
        if dfl is None:
            return StoredGeometry()
        return StoredGeometry(dfl.landmarks.astype(np.float64), DFL_CENTERING[dfl.face_type],
                              realign=True)
    try:
        header = read_faceswap_header(data, where)
    except FaceFormatError:
        return StoredGeometry()
    if not header:
        return StoredGeometry()
    extra = header.get("swapd")
    if not isinstance(extra, dict):
        # faceswap stores faces head-centred since its 2.0 alignments; older ones are legacy.
        source = header.get("source")
        version = source.get("alignments_version", 2.0) if isinstance(source, dict) else 2.0
        legacy = isinstance(version, (int, float)) and version < 2.0
        alignments = header.get("alignments")
        frame = (_points(alignments.get("landmarks_xy")) if isinstance(alignments, dict)
                 else None)
        return StoredGeometry(centering="legacy" if legacy else "head", frame_landmarks=frame)
    centering = extra.get("centering")
    centering = centering if centering in CENTERING_PADDING else None
    return StoredGeometry(_points(extra.get("aligned_landmarks")), centering)


# Landmarks for a face whose file lacks them in its image's pixels:
# (path, (mtime_ns, size), image as stored, frame landmarks or None) -> N x 2 points or None.
LandmarkSource = Callable[[Path, tuple[int, int], np.ndarray, np.ndarray | None],
                          np.ndarray | None]


class FoundLandmarks:
    """The trainer's landmark source: the face index's landmarks when it holds this exact
    file (the service indexed it already), else the detector's (see
    :mod:`swapd.extract.face_landmarks`; the detector is made on first use)."""

    def __init__(self, indexed: Callable[[Path, tuple[int, int]], object] | None = None,
                 detector: str = "mtcnn") -> None:
        self.indexed, self.detector_name = indexed, detector
        self._detector: Detector | None = None
        self._lock = threading.Lock()

    def __call__(self, path: Path, stamp: tuple[int, int], image: np.ndarray,
                 frame_landmarks: np.ndarray | None) -> np.ndarray | None:
        if self.indexed is not None:
            points = _points(self.indexed(path, stamp))
            if points is not None:
                return points
        with self._lock:
            if self._detector is None:
                self._detector = create_detector(self.detector_name)
        found = find_face_landmarks(image, self._detector, frame_landmarks)
        return None if found is None else found.points


def _inside(points: np.ndarray, side: int, tolerance: float = 0.1) -> bool:
    """Landmarks within the image (give or take ``tolerance`` of its side)."""
    margin = tolerance * side
    return bool(points.min() >= -margin and points.max() <= side + margin)


def crop_landmarks(points: np.ndarray, side: int, size: int, coverage: float) -> np.ndarray:
    """Landmarks of a ``side``-pixel aligned face moved into :func:`crop_for_model`'s crop."""
    crop = max(1, int(round(side * coverage)))
    start = (side - crop) // 2
    # Pixel centres: x in the face maps to (x - start + 0.5) * size / crop - 0.5 in the crop.
    return (points - start + 0.5) * (size / crop) - 0.5


@dataclass(frozen=True)
class _Entry:
    stamp: tuple[int, int]  # (mtime_ns, size): a changed file is decoded again
    face: np.ndarray | None
    mask: np.ndarray | None = None  # face/eyes/mouth, uint8 HxWx3
    has_landmarks: bool = False
    reason: str | None = None
    yaw: float | None = None  # degrees, from the landmarks
    pitch: float | None = None
    landmarks: np.ndarray | None = None  # 68x2 float32 in the model crop's pixels


class FaceArrays(NamedTuple):
    """One consistent snapshot of a :class:`FaceSet`'s stacked arrays (row i: face i)."""

    faces: np.ndarray  # uint8 NHWC
    masks: np.ndarray  # uint8 NHWC, face/eyes/mouth
    weights: np.ndarray  # sampling probabilities by yaw band
    landmarks: np.ndarray  # float32 (N, 68, 2) in the crop's pixels; NaN where unknown
    mask_known: np.ndarray  # bool (N,): the mask was drawn from landmarks (not all-face)


class FaceSet:
    """All faces of one folder, decoded once and cropped to the model input (uint8 NHWC).

    ``faces`` and ``masks`` (face, eyes, mouth: uint8 NHWC with 3 channels; a face without
    landmarks gets an all-face mask) and ``landmarks`` (68 points in the crop, NaN when not
    known) are stacked arrays, replaced together and never mutated (:attr:`arrays`), so readers
    in other threads keep a consistent set. ``skipped`` maps unusable files to the
    reason; ``without_landmarks`` counts usable faces whose masks are not known.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        size: int,
        coverage: float = 0.875,
        grayscale: bool = False,
        mask_type: MaskType = "extended",
        centering: Centering = "face",
        mask_dilation: float = 0.0,
        find_landmarks: LandmarkSource | None = None,
        uniform_yaw: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.find_landmarks = find_landmarks
        self.centering: Centering = centering
        self.size = size
        self.coverage = coverage
        self.grayscale = grayscale
        self.mask_type: MaskType = mask_type
        self.mask_dilation = mask_dilation
        self._entries: dict[Path, _Entry] = {}
        self._lock = threading.Lock()
        self.uniform_yaw = uniform_yaw
        self._arrays = FaceArrays(np.empty((0, size, size, 1 if grayscale else 3), np.uint8),
                                  np.empty((0, size, size, MASK_CHANNELS), np.uint8),
                                  np.empty(0), np.empty((0, 68, 2), np.float32),
                                  np.empty(0, bool))
        self.paths: list[Path] = []
        self.skipped: dict[Path, str] = {}
        self.without_landmarks = 0
        self.refresh()

    @property
    def faces(self) -> np.ndarray:
        return self._arrays.faces

    @property
    def masks(self) -> np.ndarray:
        return self._arrays.masks

    @property
    def landmarks(self) -> np.ndarray:
        return self._arrays.landmarks

    @property
    def arrays(self) -> FaceArrays:
        """Faces, masks, weights and landmarks of one moment (a refresh replaces them all)."""
        return self._arrays

    def __len__(self) -> int:
        return len(self.paths)

    def poses(self) -> np.ndarray:
        """(yaw, pitch) in degrees of each face in ``paths`` order; NaN where unknown."""
        with self._lock:
            entries = [self._entries[path] for path in self.paths]
        return np.array([[np.nan if e.yaw is None else e.yaw,
                          np.nan if e.pitch is None else e.pitch] for e in entries],
                        dtype=np.float64).reshape(-1, 2)

    def _scan(self) -> dict[Path, tuple[int, int]]:
        if not self.folder.is_dir():
            raise FaceSetError(self.folder, "face folder does not exist")
        found = {}
        with os.scandir(self.folder) as it:
            for entry in it:
                name = entry.name
                if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                try:
                    if not entry.is_file():
                        continue
                    st = entry.stat()
                except OSError:  # vanished between listing and stat
                    continue
                found[Path(entry.path)] = (st.st_mtime_ns, st.st_size)
        return found

    def _load(self, path: Path, stamp: tuple[int, int]) -> _Entry:
        try:
            raw = path.read_bytes()  # read once: decoded, and its header parsed
            img = _decode(np.frombuffer(raw, np.uint8), self.grayscale)
            stored = stored_geometry(raw, str(path))
            points = stored.landmarks
            if points is not None and not _inside(points, img.shape[0]):
                points = None  # landmarks far outside the image are not this face's
            if points is None and self.find_landmarks is not None:
                points = self._found_landmarks(path, stamp, img, stored.frame_landmarks)
            if stored.realign and points is not None and len(points) == 68:
                # Cut exactly as swapd's extraction would have: align by the face's own 68
                # landmarks at the trainer's centering (any DFL face type, any scale).
                matrix = aligned_matrix(points, img.shape[0], self.centering)
                img = warp_face(img, matrix, img.shape[0])
                points = transform_points(points, matrix)
            elif stored.centering is not None and stored.centering != self.centering:
                # A face stored at another centering (faceswap keeps head-centred faces) is
                # re-cut at the trainer's before the coverage crop, landmarks alike.
                img = recentre(img, stored.centering, self.centering)
                if points is not None:
                    points = transform_points(points, recentre_matrix(
                        img.shape[0], stored.centering, self.centering))
            face = crop_for_model(img, self.size, self.coverage)
            yaw = pitch = None
            if points is not None:
                with contextlib.suppress(PoseError):
                    pose = estimate_pose(points)
                    yaw, pitch = pose.yaw, pose.pitch
            if points is None:
                mask = full_face_mask(self.size)
            else:
                points = crop_landmarks(points, img.shape[0], self.size, self.coverage)
                mask = grow_face(landmark_masks(points, self.size, self.mask_type),
                                 self.mask_dilation)
        except DFLFormatError as exc:
            return _Entry(stamp, None, reason=exc.reason)
        except (OSError, ValueError, OverflowError, cv2.error) as exc:
            return _Entry(stamp, None, reason=str(exc))
        return _Entry(stamp, face.reshape(self.size, self.size, -1), mask, points is not None,
                      yaw=yaw, pitch=pitch,
                      landmarks=(points.astype(np.float32)
                                 if points is not None and len(points) == 68 else None))

    def _found_landmarks(self, path: Path, stamp: tuple[int, int], img: np.ndarray,
                         frame: np.ndarray | None) -> np.ndarray | None:
        assert self.find_landmarks is not None
        try:
            points = self.find_landmarks(path, stamp, img, frame)
        except Exception:  # the face is still good to train on, with an all-face mask
            log.exception("finding landmarks in %s failed", path)
            return None
        return points if points is not None and _inside(points, img.shape[0]) else None

    def refresh(self) -> tuple[int, int]:
        """Rescan the folder: decode new or changed files, drop removed ones.

        Returns (added, removed) counts of usable faces.
        """
        with self._lock:
            found = self._scan()
            before = {p for p, e in self._entries.items() if e.face is not None}
            entries = {}
            for path, stamp in found.items():
                old = self._entries.get(path)
                entries[path] = (
                    old if old is not None and old.stamp == stamp else self._load(path, stamp)
                )
            self._entries = entries
            good = sorted(p for p, e in entries.items() if e.face is not None)
            self.skipped = {p: e.reason or "" for p, e in sorted(entries.items()) if e.face is None}
            self.without_landmarks = sum(not entries[p].has_landmarks for p in good)
            if good:
                unknown = np.full((68, 2), np.nan, np.float32)
                self._arrays = FaceArrays(
                    np.stack([entries[p].face for p in good]),  # type: ignore[misc]
                    np.stack([entries[p].mask for p in good]),  # type: ignore[misc]
                    yaw_weights([entries[p].yaw for p in good]),
                    np.stack([unknown if entries[p].landmarks is None
                              else entries[p].landmarks for p in good]),  # type: ignore[misc]
                    np.array([entries[p].has_landmarks for p in good], bool))
            else:
                self._arrays = FaceArrays(self.faces[:0], self.masks[:0], np.empty(0),
                                          self.landmarks[:0], np.empty(0, bool))
            self.paths = good
            now = set(good)
            return len(now - before), len(before - now)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` faces and their masks drawn at random (with replacement only when the set is
        smaller; always with ``uniform_yaw``, where each yaw band is drawn equally often)."""
        arrays = self._arrays
        idx = self.draw(rng, n, arrays)
        return arrays.faces[idx], arrays.masks[idx]

    def draw(self, rng: np.random.Generator, n: int, arrays: FaceArrays) -> np.ndarray:
        """The rows of ``arrays`` (a snapshot from :attr:`arrays`) that :meth:`sample` takes."""
        count = len(arrays.faces)
        if count == 0:
            raise FaceSetError(self.folder, "no usable faces")
        if self.uniform_yaw:
            return rng.choice(count, size=n, p=arrays.weights)
        return rng.choice(count, size=n, replace=count < n)


# DeepFaceLab's uniform_yaw: faces are drawn by yaw band, each band as often as any other.
YAW_BAND_DEGREES = 10.0


def yaw_weights(yaws: list[float | None]) -> np.ndarray:
    """Sampling probabilities that give every occupied yaw band (and the faces of unknown
    yaw, as one band) the same share."""
    bands = [None if yaw is None else int(np.floor(yaw / YAW_BAND_DEGREES)) for yaw in yaws]
    counts: dict[int | None, int] = {}
    for band in bands:
        counts[band] = counts.get(band, 0) + 1
    weights = np.array([1.0 / counts[band] for band in bands])
    return weights / weights.sum()


def to_tensor_layout(batch: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW in [0, 1] (contiguous, ready for ``torch.from_numpy``)."""
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


@dataclass
class Batch:
    """One training batch per side: warped inputs, their targets and the targets' masks
    (face, eyes, mouth), all float32 NCHW in [0, 1]; and per face whether its mask was drawn
    from landmarks (float32 (N,), 1 or 0: an all-face mask must not teach a learned mask)."""

    input_a: np.ndarray
    target_a: np.ndarray
    mask_a: np.ndarray
    input_b: np.ndarray
    target_b: np.ndarray
    mask_b: np.ndarray
    mask_known_a: np.ndarray
    mask_known_b: np.ndarray


class LoaderClosedError(RuntimeError):
    """``get()`` on a closed :class:`BatchLoader`."""


class BatchLoader:
    """Builds augmented batches for both sides in background threads.

    A bounded queue keeps a few batches ready; an exception in a thread is re-raised by
    :meth:`get`. ``close()`` stops the threads and waits for them. ``workers`` threads build
    batches side by side (OpenCV and numpy release the GIL for the heavy parts), each into
    its own queue, read in turn, so the batch order follows from ``seed`` however many.
    """

    def __init__(
        self,
        set_a: FaceSet,
        set_b: FaceSet,
        batch_size: int,
        augment: AugmentSettings,
        seed: int | list[int] = 0,
        prefetch: int = 3,
        workers: int = 1,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        """``shard`` (rank, world size): under DistributedDataParallel each process draws the
        same global batch of ``batch_size`` faces per side and keeps its own share, so the
        processes together train on exactly the faces one process would (with one worker)."""
        if set_a.size != set_b.size:
            raise ValueError("both face sets must have the same crop size")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        rank, world = shard
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} does not split over {world} processes")
        self.set_a, self.set_b = set_a, set_b
        self.batch_size = batch_size
        self._share = slice(rank * batch_size // world, (rank + 1) * batch_size // world)
        self._augmenter = Augmenter(set_a.size, augment)
        # Warp to landmarks: each side's faces matched with the other side's closest ones.
        self._matches = (ClosestMatches() if augment.warp and augment.warp_to_landmarks
                         else None)
        seeds = seed if isinstance(seed, list) else [seed]
        # Per worker: the draw of faces (the same in every process of a shard group) and the
        # augmentation (each process its own).
        rngs = [(np.random.default_rng(seeds if workers == 1 else [*seeds, k]),
                 np.random.default_rng([*seeds, k, 7919, rank])) for k in range(workers)]
        # One queue per worker, read in turn: worker k builds steps k, k + workers, ..., so
        # the order of batches is fixed by the seed however the threads race (and every
        # process of a DDP group takes its share of the same global draw at each step).
        depth = max(2, -(-prefetch // workers))
        self._queues: list[queue.Queue[Batch | BaseException]] = [
            queue.Queue(maxsize=depth) for _ in range(workers)]
        self._next = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(pair, q), daemon=True,
                                          name=f"swapd-batch-loader-{k}")
                         for k, (pair, q) in enumerate(zip(rngs, self._queues, strict=True))]
        for thread in self._threads:
            thread.start()

    def _make(self, rngs: tuple[np.random.Generator, np.random.Generator]) -> Batch:
        """Draw and augment one batch of each side. Both sets' arrays are read once, so faces,
        masks, landmarks (and the match table) agree even while a refresh replaces them. With
        warp to landmarks each face comes with the landmarks of its closest matches on the
        other side (the augmenter draws one)."""
        draw, augment = rngs
        snapshots = (self.set_a.arrays, self.set_b.arrays)
        parts: dict[str, np.ndarray] = {}
        for side, face_set in enumerate((self.set_a, self.set_b)):
            own, other = snapshots[side], snapshots[1 - side]
            idx = face_set.draw(draw, self.batch_size, own)[self._share]
            landmarks = None
            if self._matches is not None:
                table = self._matches.table(side, own.landmarks, other.landmarks)[idx]
                # (n, k, 68, 2); NaN for a face without landmarks (its table row is -1).
                candidates = np.where((table >= 0)[..., None, None], other.landmarks[table],
                                      np.nan)
                landmarks = (own.landmarks[idx], candidates.astype(np.float32))
            inputs, targets, masks = self._augmenter(own.faces[idx], augment, own.masks[idx],
                                                     landmarks=landmarks)
            name = "ab"[side]
            parts |= {f"input_{name}": to_tensor_layout(inputs),
                      f"target_{name}": to_tensor_layout(targets),
                      f"mask_{name}": to_tensor_layout(masks),
                      f"mask_known_{name}": own.mask_known[idx].astype(np.float32)}
        return Batch(**parts)

    def _put(self, item: Batch | BaseException,
             out: queue.Queue[Batch | BaseException]) -> bool:
        while not self._stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, rngs: tuple[np.random.Generator, np.random.Generator],
             out: queue.Queue[Batch | BaseException]) -> None:
        while not self._stop.is_set():
            try:
                item: Batch | BaseException = self._make(rngs)
            except FaceSetError:
                # A folder emptied mid-training: wait for faces to come back (the trainer
                # reports the empty set itself) rather than ending the thread.
                self._stop.wait(0.5)
                continue
            except BaseException as exc:  # handed to the consumer, then the thread ends
                self._put(exc, out)
                return
            if not self._put(item, out):
                return

    def get(self, timeout: float | None = 60.0) -> Batch:
        """The next batch (blocks until one is ready)."""
        while True:
            if self._stop.is_set():
                raise LoaderClosedError("batch loader is closed")
            source = self._queues[self._next]
            try:
                item = source.get(timeout=0.1 if timeout is None else min(timeout, 0.1))
            except queue.Empty:
                if timeout is not None:
                    timeout -= 0.1
                    if timeout <= 0:
                        raise TimeoutError("no batch ready in time") from None
                if not self._threads[self._next].is_alive() and source.empty():
                    raise RuntimeError("batch loader thread ended unexpectedly") from None
                continue
            self._next = (self._next + 1) % len(self._queues)
            if isinstance(item, BaseException):
                raise item
            return item

    def close(self) -> None:
        """Stop the threads and drop queued batches; safe to call twice."""
        self._stop.set()
        for source in self._queues:
            while True:
                try:
                    source.get_nowait()
                except queue.Empty:
                    break
        for thread in self._threads:
            thread.join(timeout=10)

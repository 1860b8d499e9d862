"""Training data: the model crop, in-RAM face sets that follow their folder.

Faces on disk are aligned square images (BGR as cv2 decodes them). Each is decoded once,
cropped with :func:`crop_for_model` and kept in RAM as uint8, with its face/eye/mouth masks
drawn from the landmarks in its header (:mod:`swapd.faces.masks`). :meth:`FaceSet.refresh`
rescans the folder by ``stat`` so faces added during training join and removed ones leave.
:mod:`swapd.trainer.batches` builds augmented batches from them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from swapd.errors import FileProblem
from swapd.extract.detect import Detector, create_detector
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

"""Training data: the model crop, in-RAM face sets that follow their folder.

Faces on disk are aligned square images (BGR as cv2 decodes them). Each is decoded once,
cropped with :func:`crop_for_model` and kept in RAM as uint8, with its face/eye/mouth masks
drawn from its landmarks (:mod:`swapd.faces.masks`); a DeepFaceLab user's own mask (XSeg, else
drawn polygons) is the face mask where a face has one. Where the face sits in its image comes
from the service's face index when it holds the file, else from the one face reader
(:mod:`swapd.faces.validate`): file -> index -> this cache -> batches. :meth:`FaceSet.refresh`
rescans the folder by ``stat`` so faces added during training join and removed ones leave.
:mod:`swapd.trainer.batches` builds augmented batches from them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from swapd.errors import FileProblem
from swapd.faces.alignment import (
    CENTERING_PADDING,
    Centering,
    aligned_matrix,
    recentre_matrix,
    transform_points,
)
from swapd.faces.masks import (
    FACE,
    MASK_CHANNELS,
    MaskType,
    full_face_mask,
    grow_face,
    landmark_masks,
)
from swapd.faces.validate import BadFaceError, FaceLayout, face_files, inspect_face_bytes
from swapd.trainer.face_cache import BoundedFaces, release_freed_memory
from swapd.trainer.landmark_finder import FoundLandmarks, LandmarkFinder
from swapd.trainer.model_crop import (
    crop_for_model,
    crop_landmarks,
    decode_face,
    landmarks_inside,
    to_channels_last,
    to_tensor_layout,
    warp_aligned,
)
from swapd.trainer.sampling import YAW_BAND_DEGREES, draw_rows, face_weights, yaw_weights

log = logging.getLogger(__name__)

# (from landmark_finder and model_crop, where they moved)
__all__ = ["YAW_BAND_DEGREES", "FoundLandmarks", "LandmarkFinder", "crop_for_model",
           "crop_landmarks", "to_channels_last", "to_tensor_layout", "yaw_weights"]


class FaceSetError(FileProblem, ValueError):
    """A face folder that is missing or holds no usable face."""


class StaleSnapshot(KeyError):
    """A capped set's snapshot outlived its faces: two refreshes came and went while a
    loader thread built one batch from it (the thread draws again from the current one)."""


# The service's face index, as a face set reads it: a folder -> its files' layouts by name,
# each with the (mtime_ns, size) of the file it was read from (a changed file is read again).
IndexedFaces = Mapping[str, tuple[tuple[int, int], FaceLayout]]
FaceIndex = Callable[[Path], IndexedFaces]


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
    mask_source: str | None = None  # "xseg", "polys", "landmarks"; None: all-face


class FaceArrays(NamedTuple):
    """One consistent snapshot of a :class:`FaceSet`'s stacked arrays (row i: face i)."""

    faces: np.ndarray  # uint8 NHWC
    masks: np.ndarray  # uint8 NHWC, face/eyes/mouth
    weights: np.ndarray  # sampling probabilities (by yaw band, times focus_weight)
    landmarks: np.ndarray  # float32 (N, 68, 2) in the crop's pixels; NaN where unknown
    mask_known: np.ndarray  # bool (N,): the mask was drawn from landmarks (not all-face)
    weighted: bool = False  # draw by ``weights`` (uniform_yaw, or focus faces), not evenly
    paths: tuple[Path, ...] = ()  # row i's file: its key in ``cache``
    # A capped set's cache, which holds these rows' pixels (``faces`` and ``masks`` are then
    # empty); None: they are in ``faces`` and ``masks``
    cache: BoundedFaces | None = None


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
        find_landmarks: LandmarkFinder | None = None,
        uniform_yaw: bool = False,
        index: FaceIndex | None = None,
        capacity: int | None = None,
        spill_dir: Path | None = None,
    ) -> None:
        """``index``: the service's face index (see :data:`FaceIndex`): the faces it holds
        are read from it, their files only decoded; other files are read whole (see
        :func:`swapd.faces.validate.inspect_face_bytes`), and ``find_landmarks`` finds the
        landmarks of those that carry none in their image. ``capacity``: with more usable
        faces than this, at most this many are held decoded and the rest compressed
        (:class:`~swapd.trainer.face_cache.BoundedFaces`; None: all decoded), and those
        past its RAM for compressed faces in a file in ``spill_dir``."""
        self.folder = Path(folder)
        self.index = index
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
        # Faces marked focus (file names) are drawn focus_weight times as often as the others.
        self.focus: frozenset[str] = frozenset()
        self.focus_weight = 1.0
        self._arrays = FaceArrays(np.empty((0, size, size, 1 if grayscale else 3), np.uint8),
                                  np.empty((0, size, size, MASK_CHANNELS), np.uint8),
                                  np.empty(0), np.empty((0, 68, 2), np.float32),
                                  np.empty(0, bool))
        self.paths: list[Path] = []
        self.skipped: dict[Path, str] = {}
        self.without_landmarks = 0
        self.capacity = capacity
        self.spill_dir = spill_dir
        self.bounded: BoundedFaces | None = None  # made when the folder outgrows capacity
        # Faces removed (or gone bad) at the last refresh, let go of at the next one: a loader
        # thread may still be building a batch from the snapshot before it
        self._retiring: set[Path] = set()
        self.refresh()

    @property
    def faces(self) -> np.ndarray:
        """Every face (with a cap: all decoded into a new array; prefer :meth:`take`)."""
        return self.take(np.arange(len(self._arrays.paths)))[0]

    @property
    def masks(self) -> np.ndarray:
        return self.take(np.arange(len(self._arrays.paths)))[1]

    def take(self, rows: np.ndarray, arrays: FaceArrays | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """The faces and masks of ``rows`` of ``arrays`` (default: the current snapshot).
        Raises :class:`StaleSnapshot` when a capped snapshot's faces were let go since."""
        arrays = self._arrays if arrays is None else arrays
        if arrays.cache is None:
            return arrays.faces[rows], arrays.masks[rows]
        try:
            return arrays.cache.take([arrays.paths[int(i)] for i in np.atleast_1d(rows)])
        except KeyError as exc:
            if arrays is self._arrays:
                raise
            raise StaleSnapshot(*exc.args) from exc

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

    def mask_sources(self) -> list[str | None]:
        """What each face in ``paths`` order trains with as its face mask: "xseg" or "polys"
        (a DeepFaceLab user's), "landmarks" (their hull), None (no landmarks: all of it)."""
        with self._lock:
            return [self._entries[path].mask_source for path in self.paths]

    def _scan(self) -> dict[Path, tuple[int, int]]:
        if not self.folder.is_dir():
            raise FaceSetError(self.folder, "face folder does not exist")
        return {path: (st.st_mtime_ns, st.st_size) for path, st in face_files(self.folder)}

    def _load(self, path: Path, stamp: tuple[int, int], indexed: IndexedFaces) -> _Entry:
        try:
            raw = path.read_bytes()  # read once: decoded, and (without an index) its header
            img = decode_face(np.frombuffer(raw, np.uint8), self.grayscale)
            layout = self._layout(path, stamp, raw, img, indexed)
            points = layout.landmarks
            if points is not None and not landmarks_inside(points, img.shape[0]):
                points = None  # landmarks far outside the image are not this face's
            user_mask = layout.mask
            matrix = None
            recut = layout.realign and points is not None and len(points) in (5, 68)
            if recut:
                # Cut exactly as swapd's extraction would have: align by the face's own
                # landmarks at the trainer's centering (any DFL face type, faceswap's
                # pose-dependent crops, any scale).
                matrix = aligned_matrix(points, img.shape[0], self.centering)
            elif layout.centering in CENTERING_PADDING and layout.centering != self.centering:
                # A face stored at another centering (faceswap keeps head-centred faces) is
                # re-cut at the trainer's before the coverage crop, landmarks alike.
                matrix = recentre_matrix(img.shape[0], layout.centering, self.centering)
            if matrix is not None:
                img = warp_aligned(img, matrix, recut)
                user_mask = None if user_mask is None else warp_aligned(user_mask, matrix, recut)
                points = None if points is None else transform_points(points, matrix)
            face = crop_for_model(img, self.size, self.coverage)
            if points is None:
                mask = full_face_mask(self.size)
            else:
                points = crop_landmarks(points, img.shape[0], self.size, self.coverage)
                mask = landmark_masks(points, self.size, self.mask_type)
            if user_mask is not None:  # a DeepFaceLab user's mask replaces the hull
                mask[..., FACE] = crop_for_model(user_mask, self.size, self.coverage)
            known = points is not None or user_mask is not None
            if known:
                mask = grow_face(mask, self.mask_dilation)
            source = layout.mask_source if user_mask is not None else (
                "landmarks" if points is not None else None)
        except BadFaceError as exc:
            return _Entry(stamp, None, reason=exc.reason or "unusable")
        except (OSError, ValueError, OverflowError, cv2.error) as exc:
            return _Entry(stamp, None, reason=str(exc) or type(exc).__name__)
        return _Entry(stamp, face.reshape(self.size, self.size, -1), mask, known,
                      yaw=layout.yaw, pitch=layout.pitch,
                      landmarks=(points.astype(np.float32)
                                 if points is not None and len(points) == 68 else None),
                      mask_source=source)

    def _layout(self, path: Path, stamp: tuple[int, int], raw: bytes, img: np.ndarray,
                indexed: IndexedFaces) -> FaceLayout:
        """The index's layout of this very file, else the reader's (BadFaceError for a file
        the reader refuses), with landmarks found by ``find_landmarks`` when the file has
        none in its image."""
        held = indexed.get(path.name)
        if held is not None and held[0] == stamp:
            return held[1]
        info = inspect_face_bytes(path, raw, min_size=1, decoded=img, stray_landmarks="drop")
        if info.landmarks is None and self.find_landmarks is not None:
            info.landmarks = self._found_landmarks(path, img, info.frame_landmarks)
        return info.layout()

    def _found_landmarks(self, path: Path, img: np.ndarray, frame: np.ndarray | None
                         ) -> np.ndarray | None:
        assert self.find_landmarks is not None
        try:
            points = self.find_landmarks(img, frame)
        except Exception:  # the face is still good to train on, with an all-face mask
            log.exception("finding landmarks in %s failed", path)
            return None
        return points if points is not None and landmarks_inside(points, img.shape[0]) else None

    def close(self) -> None:
        """Let go of the capped cache's spill file (a set without a cap holds none)."""
        if self.bounded is not None:
            self.bounded.close()

    def refresh(self) -> tuple[int, int]:
        """Rescan the folder: decode new or changed files, drop removed ones.

        Returns (added, removed) counts of usable faces.
        """
        with self._lock:
            found = self._scan()
            indexed = self.index(self.folder) if self.index is not None else {}
            before = {p for p, e in self._entries.items() if e.reason is None}
            if (self.bounded is None and self.capacity is not None
                    and len(found) > self.capacity):
                self.bounded = BoundedFaces(self.capacity, self._arrays.faces.shape[1:],
                                            self._arrays.masks.shape[1:],
                                            spill_dir=self.spill_dir)
            entries = {}
            loaded = False
            for path, stamp in found.items():
                old = self._entries.get(path)
                entries[path] = (
                    old if old is not None and old.stamp == stamp
                    else self._load(path, stamp, indexed)
                )
                loaded |= entries[path] is not old
                if self.bounded is not None and entries[path].face is not None:
                    entries[path] = self._pack(path, entries[path])
            good = sorted(p for p, e in entries.items() if e.reason is None)
            self.skipped = {p: e.reason or "" for p, e in sorted(entries.items())
                            if e.reason is not None}
            self.without_landmarks = sum(not entries[p].has_landmarks for p in good)
            self._entries = entries
            self._arrays = self._stack(good, entries)
            self.paths = good
            now = set(good)
            self._retire(before, now)
            if loaded:
                release_freed_memory()  # the per-face buffers just freed by the stacking
            return len(now - before), len(before - now)

    def _retire(self, before: set[Path], held: set[Path]) -> None:
        """The snapshot just replaced held ``before``, the new one holds ``held``: a capped
        cache lets go of the faces the snapshot before last held and the two since do not (a
        loader thread reads one snapshot for one batch, so the faces of the one just replaced
        stay until the next refresh)."""
        if self.bounded is not None:
            for path in self._retiring - held:
                self.bounded.discard(path)
        self._retiring = before - held

    def _pack(self, path: Path, entry: _Entry) -> _Entry:
        """With a cap: the face's pixels go to the bounded cache, the entry keeps the rest."""
        assert self.bounded is not None
        self.bounded.put(path, entry.face, entry.mask)  # type: ignore[arg-type]
        return replace(entry, face=None, mask=None)

    def _stack(self, good: list[Path], entries: dict[Path, _Entry]) -> FaceArrays:
        """The arrays of the usable faces ``good``. Without a cap each entry then keeps a view
        of its row, not its own copy: the set's pixels are held once, not twice."""
        shape = self._arrays.faces.shape[1:]
        mask_shape = self._arrays.masks.shape[1:]
        faces = np.empty((0, *shape), np.uint8)
        masks = np.empty((0, *mask_shape), np.uint8)
        if good and self.bounded is None:
            faces = np.stack([entries[p].face for p in good])  # type: ignore[misc]
            masks = np.stack([entries[p].mask for p in good])  # type: ignore[misc]
            for i, path in enumerate(good):
                entries[path] = replace(entries[path], face=faces[i], mask=masks[i])
        unknown = np.full((68, 2), np.nan, np.float32)
        weights, weighted = self._weights(good, entries)
        landmarks = np.stack([unknown if entries[p].landmarks is None else entries[p].landmarks
                              for p in good]) if good else np.empty((0, 68, 2), np.float32)
        return FaceArrays(faces, masks, weights, landmarks,  # type: ignore[arg-type]
                          np.array([entries[p].has_landmarks for p in good], bool), weighted,
                          tuple(good), self.bounded)

    def _weights(self, good: list[Path], entries: dict[Path, _Entry]
                 ) -> tuple[np.ndarray, bool]:
        """Each face's sampling probability and whether they are uneven
        (:func:`~swapd.trainer.sampling.face_weights`)."""
        return face_weights([entries[p].yaw for p in good],
                            np.array([p.name in self.focus for p in good], bool),
                            self.uniform_yaw, self.focus_weight)

    def set_focus(self, names: set[str] | frozenset[str], weight: float) -> None:
        """Draw the faces named (file names) ``weight`` times as often as the others, from
        the next batch on (the marks the dashboard's snapshot tracker sets)."""
        with self._lock:
            self.focus, self.focus_weight = frozenset(names), float(weight)
            weights, weighted = self._weights(self.paths, self._entries)
            self._arrays = self._arrays._replace(weights=weights, weighted=weighted)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` faces and their masks drawn at random (with replacement only when the set is
        smaller; always with ``uniform_yaw``, where each yaw band is drawn equally often)."""
        arrays = self._arrays
        return self.take(self.draw(rng, n, arrays), arrays)

    def draw(self, rng: np.random.Generator, n: int, arrays: FaceArrays) -> np.ndarray:
        """The rows of ``arrays`` (a snapshot from :attr:`arrays`) that :meth:`sample` takes."""
        if not arrays.paths:
            raise FaceSetError(self.folder, "no usable faces")
        return draw_rows(rng, n, arrays.weights if arrays.weighted else None,
                         len(arrays.paths), self.uniform_yaw)


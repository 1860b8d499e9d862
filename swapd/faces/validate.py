"""The one reader of aligned face files.

`inspect_face_file` reads one file and either describes it (`FaceFileInfo`) or raises
`BadFaceError` naming the file and the problem: empty, not an image, truncated or corrupt,
not square, too small, unreadable metadata or masks, landmarks outside the image. Ingest
indexes what it finds; the trainer cuts its crops by `FaceLayout` (landmarks, stored centering,
the mask a DeepFaceLab user made, pose), from the index or, for files no index holds, from
this reader. The folder scan, quarantine and the settle check live in
:mod:`swapd.faces.folders` (re-exported here).
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from swapd.errors import FileProblem
from swapd.faces.alignment import CENTERING_PADDING
from swapd.faces.dfl_jpg import DFL_CENTERING, DFLFormatError, DFLMeta, read_dfl_meta
from swapd.faces.dfl_masks import DFLMaskError, dfl_face_mask
from swapd.faces.faceswap_png import (
    MAX_FILE_BYTES,
    FaceFormatError,
    FaceswapMeta,
    meta_from_png,
    png_chunks,
    png_pixel_check,
)
from swapd.faces.folders import face_files, file_is_stable, quarantine_file, stable_files
from swapd.faces.landmarks import landmark_array
from swapd.faces.pose import Pose, PoseError, estimate_pose

__all__ = ["BadFaceError", "FaceFileInfo", "FaceLayout", "face_files", "file_is_stable",
           "inspect_face_bytes", "inspect_face_file", "quarantine_file", "sniff_format",
           "stable_files"]

# How far (as a share of the image size) landmarks may lie outside the image before a face
# is rejected: a jaw point just past the edge of a tight crop is normal, a face elsewhere is not.
LANDMARK_TOLERANCE = 0.1

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"BM", "bmp"),
)


class BadFaceError(FileProblem, ValueError):
    """A face file that cannot be used; `reason` says why in words a user can act on."""


@dataclass(frozen=True)
class FaceLayout:
    """Where a face sits in its aligned image: what the trainer needs beside the pixels, from
    the file (:meth:`FaceFileInfo.layout`) or from the service's face index."""

    landmarks: np.ndarray | None  # 68x2 (or 5x2) in the image's pixels
    centering: str | None = None  # the crop it is stored at; None: unknown (the trainer's)
    # Cut the trainer's crop from the landmarks themselves (DeepFaceLab's face types pad its
    # own mean face, which swapd's centerings match only roughly).
    realign: bool = False
    yaw: float | None = None  # degrees (see swapd.faces.pose)
    pitch: float | None = None
    # The face mask a user made (DeepFaceLab's XSeg mask or polygons), uint8 in the image's
    # pixels, and where it came from ("xseg", "polys"); None: drawn from the landmarks.
    mask: np.ndarray | None = None
    mask_source: str | None = None


@dataclass
class FaceFileInfo:
    path: Path
    width: int
    height: int
    channels: int  # 1 grayscale, 3 BGR, 4 BGRA
    format: str  # "png", "jpeg", "webp", "bmp"
    landmarks: np.ndarray | None  # 68x2 (or 5x2) in the aligned image's pixels, when known
    meta: FaceswapMeta | None  # faceswap metadata of a PNG, when present
    dfl: DFLMeta | None = None  # DeepFaceLab metadata of a JPEG, when present
    content_hash: str | None = None  # BLAKE2b-128 of the file's bytes, hex
    # Where ``landmarks`` came from: "file", or a detector ("mapped:mtcnn": the file's frame
    # landmarks moved into the image; "detected:mtcnn"); None while there are none.
    landmarks_from: str | None = None
    # DeepFaceLab's XSeg mask or polygons in the image's pixels (uint8, 255 = face), and which
    face_mask: np.ndarray | None = None
    face_mask_source: str | None = None

    @property
    def mask_source(self) -> str | None:
        """What the face trains with as its face mask: "xseg" or "polys" (a DeepFaceLab
        user's mask), "landmarks" (the landmark hull), None (no landmarks: all of it)."""
        if self.face_mask_source is not None:
            return self.face_mask_source
        return None if self.landmarks is None else "landmarks"

    @property
    def recut_from_landmarks(self) -> bool:
        """Whether the trainer cuts its crop from the face's own landmarks: a DeepFaceLab
        face type, or faceswap's pose-dependent crop as swapd extracts it (neither is one of
        swapd's centerings)."""
        extras = self.meta.swapd if self.meta is not None else None
        return self.dfl is not None or bool(extras and extras.get("geometry") == "faceswap")

    @property
    def kind(self) -> str:
        """Which tool's aligned face this is: "faceswap", "deepfacelab" or "plain"."""
        if self.meta is not None:
            return "faceswap"
        if self.dfl is not None:
            return "deepfacelab"
        return "plain"

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``swapd faces inspect --json`` prints)."""
        angles = self.pose()
        pose = None if angles is None else dict(zip(("yaw", "pitch", "roll"),
                                                     angles.as_tuple(), strict=True))
        source = None
        if self.meta is not None:
            source = self.meta.source_filename
        elif self.dfl is not None:
            source = self.dfl.source_filename
        out: dict[str, Any] = {
            "path": str(self.path),
            "format": {"faceswap": "faceswap_png", "deepfacelab": "dfl_jpg"}.get(
                self.kind, self.format),
            "width": self.width,
            "height": self.height,
            "channels": self.channels,
            "grayscale": self.channels == 1,
            "status": "aligned" if self.pose_landmarks is not None else "unaligned",
            "landmarks": None if self.landmarks is None else np.round(self.landmarks, 2).tolist(),
            "landmarks_from": self.landmarks_from,
            "source_landmarks": (None if self.meta is None
                                 else np.round(self.meta.landmarks_xy, 2).tolist()),
            "pose": pose,
            "source_filename": source,
        }
        if self.meta is not None:
            out["face_index"] = self.meta.face_index
            out["source_frame_dims"] = self.meta.source_frame_dims
            out["alignments_version"] = self.meta.alignments_version
            out["masks"] = sorted(self.meta.mask)
            if self.meta.swapd:
                out["centering"] = self.meta.swapd.get("centering")
        if self.dfl is not None:
            out["face_type"] = self.dfl.face_type
            out["source_rect"] = self.dfl.source_rect
            out["has_xseg_mask"] = self.dfl.has_xseg_mask
            out["has_seg_polys"] = self.dfl.has_seg_polys
            out["source_landmarks"] = (None if self.dfl.source_landmarks is None
                                       else np.round(self.dfl.source_landmarks, 2).tolist())
        out["mask_source"] = self.mask_source
        return out

    @property
    def pose_landmarks(self) -> np.ndarray | None:
        """Landmarks to measure the head pose from: the aligned image's, else the source
        frame's (the alignment keeps yaw and pitch)."""
        if self.landmarks is not None:
            return self.landmarks
        if self.meta is not None and self.meta.landmarks_xy.shape == (68, 2):
            return self.meta.landmarks_xy
        return None

    @property
    def frame_landmarks(self) -> np.ndarray | None:
        """faceswap's landmarks, in the source frame's pixels (a detector maps them into the
        image when the file has none there)."""
        return None if self.meta is None else self.meta.landmarks_xy

    @property
    def centering(self) -> str | None:
        """The crop the face is stored at: swapd's own when swapd wrote the file, faceswap's
        head (legacy before its 2.0 alignments), the nearest to a DeepFaceLab face type. None
        when unknown, and where the trainer needs the file itself, so the face index (which
        keeps this) leaves the face to it: faceswap's pose-dependent crops as swapd extracts
        them (re-cut from their landmarks, see :attr:`recut_from_landmarks`) and a DeepFaceLab
        face with a mask of its own (the mask is in the file)."""
        if self.face_mask is not None:
            return None
        if self.dfl is not None:
            return DFL_CENTERING[self.dfl.face_type]
        if self.meta is None or self.recut_from_landmarks:
            return None
        if self.meta.swapd is not None:
            centering = self.meta.swapd.get("centering")
            return centering if centering in CENTERING_PADDING else None
        return "legacy" if self.meta.alignments_version < 2.0 else "head"

    def pose(self) -> Pose | None:
        """The head pose, from :attr:`pose_landmarks`, in degrees to 2 places (as the face
        index keeps it); None without landmarks or when none solves."""
        if self.pose_landmarks is None:
            return None
        try:
            angles = estimate_pose(self.pose_landmarks)
        except PoseError:
            return None
        return Pose(*(round(v, 2) for v in angles.as_tuple()))

    def layout(self) -> FaceLayout:
        """What the trainer cuts the face's crop by (see :class:`FaceLayout`)."""
        pose = self.pose()
        return FaceLayout(self.landmarks, self.centering, realign=self.recut_from_landmarks,
                          yaw=None if pose is None else pose.yaw,
                          pitch=None if pose is None else pose.pitch,
                          mask=self.face_mask, mask_source=self.face_mask_source)


def sniff_format(data: bytes) -> str | None:
    """The image format from the first bytes, or None."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _check_jpeg(data: bytes, path: Path) -> None:
    """Walk the JPEG header segments and require the end-of-image marker."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise BadFaceError(path, f"corrupt JPEG: bad marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            raise BadFaceError(path, "corrupt JPEG: image ends before any image data")
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if length < 2 or pos + 2 + length > len(data):
            raise BadFaceError(path, "truncated JPEG: a header segment runs past the end")
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        pos += 2 + length
    else:
        raise BadFaceError(path, "truncated JPEG: no image data")
    # Some writers pad after the end marker; anything else missing it was cut short.
    if not data.rstrip(b"\x00\r\n\t ").endswith(b"\xff\xd9"):
        raise BadFaceError(path, "truncated JPEG: no end-of-image marker (file cut short?)")


def _check_landmarks(points: np.ndarray, width: int, height: int, path: Path,
                     where: str) -> None:
    tol_x, tol_y = LANDMARK_TOLERANCE * width, LANDMARK_TOLERANCE * height
    lo, hi = points.min(axis=0), points.max(axis=0)
    if lo[0] < -tol_x or lo[1] < -tol_y or hi[0] > width + tol_x or hi[1] > height + tol_y:
        raise BadFaceError(path, f"landmarks lie outside the {where} ({width}x{height}): "
                                 f"x {lo[0]:.0f}..{hi[0]:.0f}, y {lo[1]:.0f}..{hi[1]:.0f}")


def _aligned_landmarks(meta: FaceswapMeta, path: Path) -> np.ndarray | None:
    """Landmarks in the aligned image (68, or the 5 a detector found), from swapd's extras
    when it wrote the file."""
    extra = meta.swapd or {}
    points = extra.get("aligned_landmarks")
    if points is None:
        return None
    try:
        return landmark_array(points, "swapd.aligned_landmarks")
    except ValueError as exc:
        raise BadFaceError(path, str(exc)) from exc


def inspect_face_file(path: str | os.PathLike[str], min_size: int = 64) -> FaceFileInfo:
    """Describe an aligned face file, or raise BadFaceError saying what is wrong with it."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise BadFaceError(p, f"cannot read file ({exc.strerror or exc})") from exc
    if not p.is_file():
        raise BadFaceError(p, "not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise BadFaceError(p, f"file is {st.st_size} bytes, too large for an aligned face")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise BadFaceError(p, f"cannot read file ({exc.strerror or exc})") from exc
    return inspect_face_bytes(p, data, min_size)


def inspect_face_bytes(path: Path, data: bytes, min_size: int = 64,
                       decoded: np.ndarray | None = None,
                       stray_landmarks: Literal["refuse", "drop"] = "refuse") -> FaceFileInfo:
    """:func:`inspect_face_file` on the bytes of ``path``, read already. ``decoded``: the
    image, when the caller decoded it (the trainer): its size is taken from it and the image
    data is not checked again. ``stray_landmarks``: landmarks far outside the image (or the
    source frame) make the file bad ("refuse", ingest: it is set aside), or are left out
    ("drop", the trainer: the face trains whole, without eye or mouth weights)."""
    p = path
    if not data:
        raise BadFaceError(p, "empty file (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        # (its bytes are never quoted: a link may point at any file, /etc/passwd included)
        raise BadFaceError(p, "not an image: its first bytes are not those of a PNG, JPEG, "
                              "WebP or BMP")
    meta = None
    size: tuple[int, int, int] | None = None  # width, height, channels, once known
    if decoded is not None:
        size = decoded.shape[1], decoded.shape[0], 1 if decoded.ndim == 2 else decoded.shape[2]
    if fmt == "png":
        try:
            chunks = png_chunks(data, str(p))
            meta = meta_from_png(data, str(p), chunks)
            size = size or png_pixel_check(data, chunks, str(p))
        except FaceFormatError as exc:
            raise BadFaceError(p, exc.reason) from exc
    dfl = None
    if fmt == "jpeg":
        _check_jpeg(data, p)
        try:
            dfl = read_dfl_meta(data)
        except DFLFormatError as exc:
            raise BadFaceError(p, exc.reason) from exc

    if size is None:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise BadFaceError(p, f"corrupt {fmt.upper()}: the image data cannot be decoded")
        size = image.shape[1], image.shape[0], 1 if image.ndim == 2 else int(image.shape[2])
    width, height, channels = size
    if width != height:
        raise BadFaceError(p, f"not square ({width}x{height}): aligned faces are square crops")
    if width < min_size:
        raise BadFaceError(p, f"too small ({width}x{height}, minimum {min_size}x{min_size})")

    landmarks = face_mask = mask_source = None
    if dfl is not None:
        landmarks = dfl.landmarks.astype(np.float64)
        try:
            face_mask, mask_source = dfl_face_mask(dfl.extra, width, height)
        except DFLMaskError as exc:
            raise BadFaceError(p, str(exc)) from exc
    if meta is not None:
        landmarks = _aligned_landmarks(meta, p)
    try:
        if landmarks is not None:
            _check_landmarks(landmarks, width, height, p, "image")
        if (meta is not None and meta.source_frame_dims is not None
                and meta.landmarks_xy.shape[0] >= 4 and stray_landmarks == "refuse"):
            frame_h, frame_w = meta.source_frame_dims
            _check_landmarks(meta.landmarks_xy, frame_w, frame_h, p, "source frame")
    except BadFaceError:
        if stray_landmarks == "refuse":
            raise
        landmarks = None  # not this face's
    return FaceFileInfo(path=p, width=width, height=height, channels=channels, format=fmt,
                        landmarks=landmarks, meta=meta, dfl=dfl,
                        landmarks_from=None if landmarks is None else "file",
                        face_mask=face_mask, face_mask_source=mask_source,
                        content_hash=hashlib.blake2b(data, digest_size=16).hexdigest())

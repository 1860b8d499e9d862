"""Writing one extracted face: as faceswap's aligned PNG or as DeepFaceLab's aligned JPG.

Both cut the face exactly as their tool's own extractor does from the same 68 frame landmarks
(:mod:`swapd.faces.faceswap_align`, :mod:`swapd.faces.dfl_align`) and write every field the
tool reads. Faces come with 68 points from a landmark plugin
(:mod:`swapd.extract.landmarkers`, MediaPipe's face mesh by default); one with only a 5-point
detector's points (MTCNN, ``--landmarks detector``, or a face the plugin could not see) gets 68
fitted to them (:func:`~swapd.faces.faceswap_align.landmarks_68`). swapd keeps the points found,
moved into the face, in its own extras, and trains from those.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from swapd.extract.detectors.base import Detection
from swapd.extract.frames import Frame
from swapd.faces.alignment import transform_points
from swapd.faces.dfl_align import DFL_WRITE_TYPES, dfl_crop, dfl_matrix
from swapd.faces.dfl_jpg import DFLMeta, encode_dfl_jpg
from swapd.faces.faceswap_align import (
    FaceswapCentering,
    faceswap_crop,
    faceswap_matrix,
    landmarks_68,
)
from swapd.faces.faceswap_png import FaceswapMeta, write_aligned_png
from swapd.faces.pose import PoseError, estimate_pose
from swapd.fsutil import atomic_write_bytes

FaceFormat = Literal["faceswap", "dfl"]
THUMB_SIZE, THUMB_QUALITY = 96, 60  # faceswap's alignments-file thumbnails


@dataclass(frozen=True)
class Cut:
    """A face cut from its frame: the image, the frame -> face matrix, the 68 frame
    landmarks it was aligned by (found, or fitted to 5)."""

    face: np.ndarray
    matrix: np.ndarray
    landmarks_68: np.ndarray


@dataclass(frozen=True)
class Written:
    """One face written: its file name, the frame -> face matrix, the 68 frame landmarks
    written in it, and (faceswap) the JPEG thumbnail for the alignments file."""

    file: str
    matrix: np.ndarray
    landmarks_68: np.ndarray
    thumb: bytes | None = None


def thumbnail(face: np.ndarray) -> bytes:
    """faceswap's 96 px JPEG thumbnail of an aligned face."""
    small = cv2.resize(face, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding of a thumbnail failed")
    return data.tobytes()


def _box(detection: Detection) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = detection.box
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


class FaceWriter:
    """Cuts and writes the faces of one extraction into ``out``."""

    def __init__(self, out: Path, size: int, fmt: FaceFormat = "faceswap",
                 centering: FaceswapCentering = "head", face_type: str = "whole_face",
                 detector: str = "mtcnn", is_video: bool = False) -> None:
        if fmt == "dfl" and face_type not in DFL_WRITE_TYPES:
            raise ValueError(f"face type {face_type!r}: swapd writes "
                             f"{', '.join(DFL_WRITE_TYPES)}")
        self.out, self.size, self.format = out, size, fmt
        self.centering, self.face_type = centering, face_type
        self.detector, self.is_video = detector, is_video

    def cut(self, image: np.ndarray, detection: Detection) -> Cut:
        """The aligned face of ``detection`` in the frame ``image``."""
        points68, _ = landmarks_68(detection.points)
        if self.format == "dfl":
            matrix = dfl_matrix(points68, self.size, self.face_type)
            return Cut(dfl_crop(image, matrix, self.size), matrix, points68)
        matrix = faceswap_matrix(points68, self.size, self.centering)
        return Cut(faceswap_crop(image, matrix, self.size), matrix, points68)

    def save(self, frame: Frame, frame_shape: tuple[int, ...], detection: Detection,
             index: int, cut: Cut, landmarker: str | None = None) -> Written:
        """Write the face :meth:`cut` gave, with its tool's metadata (``landmarker``: the
        plugin that placed its landmarks, default the detector)."""
        x, y, w, h = _box(detection)
        if self.format == "dfl":
            name = f"{frame.stem}_{index}.jpg"
            meta = DFLMeta(face_type=self.face_type,
                           landmarks=transform_points(cut.landmarks_68, cut.matrix),
                           source_filename=frame.dfl_name, source_rect=(x, y, x + w, y + h),
                           source_landmarks=cut.landmarks_68, image_to_face_mat=cut.matrix)
            atomic_write_bytes(self.out / name, encode_dfl_jpg(cut.face, meta), durable=False)
            return Written(name, cut.matrix, cut.landmarks_68)
        name = f"{frame.stem}_{index}.png"
        found = detection.points
        try:
            pose: list[float] | None = list(estimate_pose(found).as_tuple())
        except PoseError:
            pose = None
        meta = FaceswapMeta(
            x=x, y=y, w=w, h=h, landmarks_xy=cut.landmarks_68, original_filename=name,
            face_index=index, source_filename=frame.name, source_is_video=self.is_video,
            source_frame_dims=(int(frame_shape[0]), int(frame_shape[1])),
            swapd={"centering": self.centering, "geometry": "faceswap", "size": self.size,
                   "pose": pose, "detector": self.detector,
                   "score": round(float(detection.score), 4), "landmark_points": len(found),
                   "landmarker": landmarker or self.detector,
                   "landmarks_fitted": len(found) != 68,
                   "aligned_landmarks": transform_points(found, cut.matrix).round(2).tolist()})
        write_aligned_png(self.out / name, cut.face, meta, durable=False)
        return Written(name, cut.matrix, cut.landmarks_68, thumbnail(cut.face))


def read_thumbnail(path: str | os.PathLike[str]) -> bytes | None:
    """The thumbnail of a face written earlier (a resumed extraction), None when it is gone."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else thumbnail(image)

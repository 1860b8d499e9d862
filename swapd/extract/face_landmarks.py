"""Landmarks for aligned faces that do not carry them in the aligned image's pixels.

Plain PNG/JPG faces have no metadata at all, and faceswap's own PNGs store landmarks in the
source frame's pixels only (the aligned image's follow from faceswap's mean face, which swapd
does not share). :func:`find_face_landmarks` runs a detector plugin on the face image itself;
when the file also carries frame landmarks, the similarity transform that takes their five
points onto the detected five maps all of them into the image, so a faceswap face keeps its
full 68-point layout. A face the detector cannot find is left without landmarks: the index
calls it "unaligned" and the trainer gives it an all-face mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from swapd.extract.detectors.base import Detection, Detector
from swapd.faces.alignment import transform_points, umeyama
from swapd.faces.landmarks import five_points
from swapd.faces.validate import FaceFileInfo
from swapd.media import read_image

# Margin added around the face image before detecting, as a share of its side: a tight crop
# leaves the detector no context around the face.
PAD = 0.25
# The padded image is searched at this side (or its own, if smaller): the face fills a known
# share of it, so a small image is enough and keeps the detector's image pyramid short.
SEARCH_SIDE = 128
# A detector that can refine (MTCNN) is first tried on boxes of these shares of the image side
# around its centre, where an aligned face sits: three O-Net passes per guess cost about half
# a full search and place the points as well (measured on synthetic faces at face, head and
# legacy centering); only when no guess holds a face does the full search run.
GUESSES = (0.55, 0.4, 0.7)
GUESS_PASSES = 3
# How far (RMS, as a share of the eye distance) the mapped frame landmarks may fall from the
# detected five for the mapping to be trusted: beyond it the detected points are used alone.
MAX_MAPPING_ERROR = 0.15


@dataclass(frozen=True)
class FoundLandmarks:
    points: np.ndarray  # N x 2 in the face image's pixels
    method: str  # "detected:<plugin>" or "mapped:<plugin>" (frame landmarks moved by five)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:  # 16-bit faces
        image = (image / 257).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image[:, :, :3]


def _central_face(found: list[Detection], centre: np.ndarray) -> Detection | None:
    """The face nearest the image centre (an aligned face image holds one face, centred)."""
    if not found:
        return None
    return min(found, key=lambda d: float(np.linalg.norm(d.points.mean(axis=0) - centre)))


def _refine_from_guesses(image: np.ndarray, detector: Detector) -> Detection | None:
    refine = getattr(detector, "refine", None)
    if not callable(refine):
        return None
    centre = np.array([image.shape[1], image.shape[0]], dtype=np.float64) / 2
    side = min(image.shape[:2])
    for share in GUESSES:
        half = share * side / 2
        box = np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half])
        guess: Detection | None = Detection(box, 1.0, np.tile(centre, (5, 1)))
        for _ in range(GUESS_PASSES):  # each pass re-centres the box on what O-Net found
            assert guess is not None
            guess = _central_face(refine(image, [guess]), centre)
            if guess is None:
                break
        if guess is not None:
            return guess
    return None


def _full_search(image: np.ndarray, detector: Detector) -> Detection | None:
    """The detector's full search on the image, padded and scaled to SEARCH_SIDE; the result
    is in the image's pixels."""
    side = max(image.shape[:2])
    pad = int(round(PAD * side))
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    scale = min(1.0, SEARCH_SIDE / max(padded.shape[:2]))
    if scale < 1.0:
        padded = cv2.resize(padded, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    centre = np.array([padded.shape[1], padded.shape[0]], dtype=np.float64) / 2
    best = _central_face(detector.detect(padded), centre)
    if best is None:
        return None

    def to_image(points: np.ndarray) -> np.ndarray:  # padded, scaled pixels -> the face's
        return (points + 0.5) / scale - 0.5 - pad

    landmarks = None if best.landmarks is None else to_image(best.landmarks)
    return Detection(to_image(best.box.reshape(2, 2)).ravel(), best.score,
                     to_image(best.landmarks5), landmarks)


def find_face_landmarks(face: np.ndarray, detector: Detector,
                        frame_landmarks: np.ndarray | None = None) -> FoundLandmarks | None:
    """Landmarks of the face an aligned face image shows, or None when none is found.

    ``frame_landmarks`` (68x2 or 5x2, any frame's pixels): the file's own landmarks, mapped
    into the image when they agree with what the detector finds.
    """
    image = _as_bgr(face)
    best = _refine_from_guesses(image, detector) or _full_search(image, detector)
    if best is None:
        return None
    name = getattr(detector, "name", type(detector).__name__)
    detected = best.points
    if frame_landmarks is not None and np.asarray(frame_landmarks).shape in ((68, 2), (5, 2)):
        frame = np.asarray(frame_landmarks, dtype=np.float64)
        src = five_points(frame) if len(frame) == 68 else frame
        dst = best.landmarks5
        matrix = umeyama(src, dst)
        eyes = float(np.linalg.norm(dst[0] - dst[1]))
        error = float(np.sqrt(((transform_points(src, matrix) - dst) ** 2).sum(axis=1).mean()))
        if eyes > 0 and error / eyes <= MAX_MAPPING_ERROR:
            return FoundLandmarks(transform_points(frame, matrix), f"mapped:{name}")
    return FoundLandmarks(detected, f"detected:{name}")


def add_found_landmarks(info: FaceFileInfo, detector: Detector) -> bool:
    """Give a checked face file without landmarks in its image's pixels the detector's.

    Sets ``info.landmarks`` and ``info.landmarks_from``; returns whether landmarks were found.
    """
    if info.landmarks is not None:
        return True
    frame = info.meta.landmarks_xy if info.meta is not None else None
    found = find_face_landmarks(read_image(info.path), detector, frame)
    if found is None:
        return False
    info.landmarks, info.landmarks_from = found.points, found.method
    return True

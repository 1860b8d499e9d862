"""The blend mask of a swapped face: which mask (DeepFaceLab's mask modes), its edge (erosion
per side and blur, faceswap's mask_blend), and its steadiness across video frames.

Mask modes, all in model-crop space:

- ``auto``: the model's learned mask when it has one, else the mean face's outline (swapd's
  default before issue 16).
- ``mean-face``: the hull of the mean face (brows lifted), the same for every face.
- ``dst``: the hull of this face's own landmarks (DeepFaceLab's name; faceswap's "extended"
  with 68 points, the ellipse derived from them with MTCNN's 5).
- ``full``: the whole crop, feathered at its edge.
- ``learned-prd``: the mask the model drew with the swapped face; ``learned-dst``: the mask
  of the destination's reconstruction (a .dfm's ``out_face_mask:0``); their product and sum.

Each mode has swapd's tuned edge (the outline pulled in a little and feathered, so untrained
pixels never show); ``erosion`` (and per side) and ``blur`` add to it, in percent of the
face's radius (faceswap's: the square root of the mask's area, halved).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from swapd.extract.detectors.base import Detection
from swapd.faces.masks import FACE, landmark_masks
from swapd.merger.blend import face_mask, feather

LEARNED_MODES = ("learned-prd", "learned-dst", "learned-prd*learned-dst",
                 "learned-prd+learned-dst")


@dataclass(frozen=True)
class Edge:
    """User changes to a mask's edge: erosion (+) or dilation (-) overall and per side, and
    extra blur, in percent of the face's radius."""

    erosion: float = 0.0
    top: float = 0.0
    bottom: float = 0.0
    left: float = 0.0
    right: float = 0.0
    blur: float = 0.0

    @property
    def changes(self) -> bool:
        return any((self.erosion, self.top, self.bottom, self.left, self.right, self.blur))


def resolve_mode(mode: str, prd: bool, dst: bool) -> str:
    """The mask mode a model can give: ``auto`` picks, and a learned mask the model lacks
    falls back to the one it has (or the mean face)."""
    if mode == "auto":
        return "learned-prd" if prd else "mean-face"
    if mode not in LEARNED_MODES:
        return mode
    wants_prd, wants_dst = "prd" in mode, "dst" in mode
    if (not wants_prd or prd) and (not wants_dst or dst):
        return mode
    if prd:
        return "learned-prd"
    if dst:
        return "learned-dst"
    return "mean-face"


def raw_mask(mode: str, size: int, coverage: float, centering: str,
             landmarks: np.ndarray | None, prd: np.ndarray | None,
             dst: np.ndarray | None) -> np.ndarray:
    """The unfeathered mask of ``mode`` (resolved), float32 (size, size) in [0, 1].
    ``landmarks``: the face's points in crop pixels (for ``dst``)."""
    if mode == "mean-face" or (mode == "dst" and landmarks is None):
        return np.array(face_mask(size, coverage, centering, 0.0, 0.0))
    if mode == "dst":
        assert landmarks is not None
        return landmark_masks(landmarks, size)[..., FACE].astype(np.float32) / 255.0
    if mode == "full":
        return np.ones((size, size), np.float32)
    if mode == "learned-prd":
        assert prd is not None
        return prd.astype(np.float32)
    if mode == "learned-dst":
        assert dst is not None
        return dst.astype(np.float32)
    assert prd is not None and dst is not None
    if mode == "learned-prd*learned-dst":
        return (prd * dst).astype(np.float32)
    return np.clip(prd + dst, 0.0, 1.0).astype(np.float32)


def shape_mask(mask: np.ndarray, tuned: tuple[float, float], edge: Edge) -> np.ndarray:
    """The blend mask: ``mask`` with swapd's ``tuned`` edge (erode, blur as shares of the
    crop) and the user's ``edge``."""
    erode, blur = tuned
    if edge.changes:
        mask = _user_edge(mask, edge)
    out = feather(mask, erode, blur)
    if edge.blur > 0:
        radius = face_radius(mask)
        out = cv2.GaussianBlur(out, (0, 0), max(0.3, edge.blur / 100.0 * radius / 2.0))
        border = max(1, out.shape[0] // 64)
        out[:border], out[-border:], out[:, :border], out[:, -border:] = 0, 0, 0, 0
    return out


def face_radius(mask: np.ndarray) -> float:
    """faceswap's measure of a mask's size: half the square root of its area, in pixels."""
    return float(np.sqrt(max(float(mask.sum()), 1.0)) / 2.0)


def _user_edge(mask: np.ndarray, edge: Edge) -> np.ndarray:
    radius = face_radius(mask)
    out = np.ascontiguousarray(mask, dtype=np.float32)
    px = round(abs(edge.erosion) / 100.0 * radius)
    if px:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
        out = (cv2.erode if edge.erosion > 0 else cv2.dilate)(out, kernel)
    for amount, side in ((edge.top, "top"), (edge.bottom, "bottom"), (edge.left, "left"),
                         (edge.right, "right")):
        px = round(abs(amount) / 100.0 * radius)
        if px:
            out = _erode_side(out, side, px, amount > 0)
    return out


def _erode_side(mask: np.ndarray, side: str, px: int, erode: bool) -> np.ndarray:
    """Move one side of the mask in (erode) or out by ``px``: a one-sided line kernel."""
    vertical = side in ("top", "bottom")
    shape = (1, px + 1) if vertical else (px + 1, 1)  # (width, height) for cv2
    kernel = np.ones((shape[1], shape[0]), np.uint8)
    # The anchor at the kernel's end that faces away from the side looks toward it: an
    # erosion from the top keeps a pixel only when the px above it are in the mask.
    far = px if erode else 0
    near = 0 if erode else px
    pos = far if side in ("top", "left") else near
    anchor = (0, pos) if vertical else (pos, 0)
    op = cv2.erode if erode else cv2.dilate
    return op(mask, kernel, anchor=anchor, borderType=cv2.BORDER_CONSTANT, borderValue=0)


# --- across video frames ------------------------------------------------------------------

# How fast the smoothing lets go as the face moves: at 1 % of its size per frame, the new
# frame's weight rises by this share (0.5 at rest with box = 0.5 -> 0.6 at 1 %/frame).
_FOLLOW = 10.0


@dataclass
class _Track:
    points: np.ndarray  # smoothed 5 landmarks
    speed: float = 0.0
    motion: np.ndarray = field(default_factory=lambda: np.zeros(2))  # pixels since the last
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # face sizes per frame
    mask: np.ndarray | None = None
    seen: int = 0


@dataclass
class FaceSteadier:
    """Steadies faces across a video's frames: each face is followed (nearest in the frame
    before), its 5 landmarks (so its crop, box and paste) smoothed by a speed-adaptive
    filter (the "one euro" filter: strong at rest, little lag when the head moves), and its
    blend mask averaged with the frame before's. ``box``/``mask``: 0 off .. <1 strongest."""

    box: float = 0.5
    mask: float = 0.3
    tracks: list[_Track] = field(default_factory=list)

    def place(self, faces: list[Detection]) -> list[_Track]:
        """Each face's track (its smoothed landmarks5 in ``points``), in order; call once per
        frame, in the frames' order."""
        previous, self.tracks = self.tracks, []
        used: set[int] = set()
        for face in faces:
            points = np.asarray(face.landmarks5, np.float64)
            scale = _size(points)
            best, best_d = None, 0.5 * scale
            for i, track in enumerate(previous):
                d = float(np.linalg.norm(track.points.mean(0) - points.mean(0)))
                if i not in used and d < best_d:
                    best, best_d = i, d
            if best is None:
                track = _Track(points.copy())
            else:
                used.add(best)
                track = previous[best]
                before = track.points.mean(0)
                track.points, track.speed = self._filter(track, points, scale)
                track.motion = track.points.mean(0) - before
                track.seen += 1
            self.tracks.append(track)
        return list(self.tracks)

    def _filter(self, track: _Track, points: np.ndarray, scale: float
                ) -> tuple[np.ndarray, float]:
        if self.box <= 0:
            return points.copy(), 0.0
        # The face's speed from its signed step averaged over frames: a detector's noise
        # (steps this way and that) cancels out, a real motion adds up.
        step = (points - track.points).mean(0) / scale  # face sizes per frame
        velocity = 0.6 * track.velocity + 0.4 * step
        track.velocity = velocity
        speed = float(np.linalg.norm(velocity))
        rest = 1.0 - self.box  # the new frame's weight when the face is still
        weight = min(1.0, rest + speed * _FOLLOW)
        return track.points + weight * (points - track.points), speed

    def steady_mask(self, track: _Track, mask: np.ndarray) -> np.ndarray:
        """``mask`` (crop space) averaged with the track's previous one."""
        if self.mask > 0 and track.mask is not None and track.mask.shape == mask.shape:
            mask = (self.mask * track.mask + (1.0 - self.mask) * mask).astype(np.float32)
        track.mask = mask
        return mask


def _size(points: np.ndarray) -> float:
    """A face's size from its 5 points: eyes to mouth, and across the eyes."""
    eyes = (points[0] + points[1]) / 2
    mouth = (points[3] + points[4]) / 2
    return max(1.0, float(np.linalg.norm(mouth - eyes) + np.linalg.norm(points[1] - points[0])))

"""Procedural synthetic faces: distinct identities drawn by swapd itself.

The demo and every test use these instead of photographs of people. An `Identity` is a seeded set
of looks (head shape, skin, hair, eyes, brows, nose, mouth) plus small offsets of the 68 3D
landmarks of `MEAN_FACE_3D`. `render_face` poses the identity's 3D head, projects it with a
pinhole camera and paints it (2x supersampled, shaded from the light direction, lightly blurred),
so the returned landmarks are exact ground truth and a real detector (MTCNN) finds the face.

Pose convention (degrees, camera frame x right, y down, z toward the camera): positive yaw turns
the nose toward the image right, positive pitch lifts the nose (looking up), positive roll turns
the face clockwise in the image. The rotation is R = Rz(roll) @ Rx(pitch) @ Ry(yaw).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from swapd.faces.alignment import Centering, aligned_matrix, transform_points, warp_face
from swapd.faces.landmarks import MEAN_FACE_3D

BGR = tuple[int, int, int]

SKIN_TONES: tuple[BGR, ...] = (
    (196, 214, 246), (170, 196, 236), (150, 182, 226), (120, 160, 205),
    (96, 136, 186), (78, 112, 164), (66, 96, 142), (58, 86, 128),
)
HAIR_COLOURS: tuple[BGR, ...] = (
    (22, 22, 26), (28, 40, 62), (40, 66, 104), (36, 64, 150),
    (110, 186, 228), (160, 162, 166), (70, 120, 180),
)
EYE_COLOURS: tuple[BGR, ...] = (
    (30, 55, 95), (170, 120, 60), (80, 135, 70), (50, 95, 120), (130, 125, 115),
)
LIP_COLOURS: tuple[BGR, ...] = ((95, 95, 185), (80, 85, 160), (105, 110, 200), (70, 70, 130))
CLOTHES_COLOURS: tuple[BGR, ...] = (
    (140, 60, 30), (40, 120, 40), (60, 60, 60), (30, 40, 150), (170, 150, 140), (120, 40, 110),
)
HAIR_STYLES = ("short", "long", "bob", "curly", "fringe", "bald")

_SUPERSAMPLE = 2
_CAMERA_DISTANCE_CM = 55.0
_PIVOT = np.array([0.0, 3.0, -6.0])  # the head turns about a point inside the skull


@dataclass(frozen=True)
class Identity:
    """A synthetic person's looks; every field is fixed by the seed."""

    name: str
    seed: int
    head_width: float
    head_height: float
    jaw_width: float
    skin: BGR
    hair: BGR
    hair_style: str
    hair_volume: float
    eye_colour: BGR
    eye_size: float
    brow_thickness: float
    nose_width: float
    nose_length: float
    mouth_width: float
    lip: BGR
    clothes: BGR
    offsets: np.ndarray = field(repr=False)  # 68x3 cm added to the shaped mean face

    def landmarks_3d(self) -> np.ndarray:
        """The identity's neutral 68 3D landmarks (cm, MEAN_FACE_3D's frame)."""
        pts = MEAN_FACE_3D.copy()
        lower = np.clip((pts[:, 1] - 3.0) / 7.0, 0.0, 1.0)  # 0 above the nose, 1 at the chin
        pts[:, 0] *= self.head_width * (1.0 + (self.jaw_width - 1.0) * lower)
        pts[:, 1] *= self.head_height
        for eye in (slice(36, 42), slice(42, 48)):
            centre = pts[eye].mean(axis=0)
            pts[eye] = centre + (pts[eye] - centre) * self.eye_size
        nose = slice(28, 36)
        pts[nose, 1] = pts[27, 1] + (pts[nose, 1] - pts[27, 1]) * self.nose_length
        pts[31:36, 0] *= self.nose_width
        pts[48:68, 0] *= self.mouth_width
        return pts + self.offsets


@dataclass(frozen=True)
class Expression:
    """Mouth opening, smile and eye blink, each 0..1."""

    mouth_open: float = 0.0
    smile: float = 0.0
    blink: float = 0.0


@dataclass(frozen=True)
class Lighting:
    """A directional light (camera frame, pointing from the face toward the light) + ambient."""

    direction: tuple[float, float, float] = (-0.45, -0.55, 0.7)
    intensity: float = 0.6
    ambient: float = 0.5


@dataclass
class RenderedFace:
    image: np.ndarray  # BGR uint8, frame_size
    landmarks: np.ndarray  # 68x2 float, frame pixels, ground truth
    pose: tuple[float, float, float]  # yaw, pitch, roll in degrees


def _pick(rng: np.random.Generator, options: Sequence) -> object:
    return options[int(rng.integers(len(options)))]


def _jitter(rng: np.random.Generator, colour: BGR, amount: float = 12.0) -> BGR:
    out = np.clip(np.asarray(colour, dtype=np.float64) + rng.normal(0, amount, 3), 0, 255)
    return (int(out[0]), int(out[1]), int(out[2]))


def make_identity(seed: int, name: str | None = None) -> Identity:
    """A distinct procedural identity; the same seed always gives the same person."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0.0, 0.12, (68, 3))
    offsets[:, 2] *= 0.5
    offsets[[27, 28, 29, 30, 33, 51, 57, 62, 66, 8], 0] = 0.0  # keep the midline on the midline
    return Identity(
        name=name or f"synthetic{seed}",
        seed=seed,
        head_width=float(rng.uniform(0.9, 1.1)),
        head_height=float(rng.uniform(0.93, 1.07)),
        jaw_width=float(rng.uniform(0.85, 1.12)),
        skin=_jitter(rng, _pick(rng, SKIN_TONES), 6),
        hair=_jitter(rng, _pick(rng, HAIR_COLOURS), 8),
        hair_style=str(_pick(rng, HAIR_STYLES)),
        hair_volume=float(rng.uniform(0.3, 1.0)),
        eye_colour=_jitter(rng, _pick(rng, EYE_COLOURS), 8),
        eye_size=float(rng.uniform(1.0, 1.2)),
        brow_thickness=float(rng.uniform(0.7, 1.4)),
        nose_width=float(rng.uniform(0.85, 1.25)),
        nose_length=float(rng.uniform(0.9, 1.1)),
        mouth_width=float(rng.uniform(0.88, 1.12)),
        lip=_jitter(rng, _pick(rng, LIP_COLOURS), 8),
        clothes=_jitter(rng, _pick(rng, CLOTHES_COLOURS), 15),
        offsets=offsets,
    )


def _demo_identity(seed: int, name: str, **looks: object) -> Identity:
    base = make_identity(seed, name)
    values = {k: getattr(base, k) for k in Identity.__dataclass_fields__}
    values.update(looks)
    return Identity(**values)  # type: ignore[arg-type]


# Two strongly contrasting people for `swapd demo`: pale, dark-haired, long narrow face versus
# dark-skinned, blond, short-haired, broad face.
DEMO_A = _demo_identity(
    101, "alice", head_width=0.92, head_height=1.06, jaw_width=0.88, skin=(192, 210, 244),
    hair=(24, 26, 32), hair_style="long", hair_volume=0.8, eye_colour=(170, 120, 60),
    eye_size=1.1, brow_thickness=0.9, nose_width=0.9, nose_length=1.05, mouth_width=0.92,
    lip=(100, 100, 190), clothes=(150, 70, 30),
)
DEMO_B = _demo_identity(
    202, "bob", head_width=1.09, head_height=0.95, jaw_width=1.1, skin=(58, 86, 130),
    hair=(112, 190, 230), hair_style="short", hair_volume=0.5, eye_colour=(30, 55, 95),
    eye_size=0.95, brow_thickness=1.35, nose_width=1.22, nose_length=0.95, mouth_width=1.1,
    lip=(75, 80, 125), clothes=(40, 120, 40),
)


# ---------------------------------------------------------------------------------------------
# Geometry


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rz(roll) @ Rx(pitch) @ Ry(yaw), angles in degrees (see the module docstring)."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def _expressed(points: np.ndarray, expr: Expression, identity: Identity) -> np.ndarray:
    """Move the neutral 3D landmarks for mouth opening, smile and blink."""
    pts = points.copy()
    drop = 1.4 * expr.mouth_open * identity.head_height
    pts[[55, 56, 57, 58, 59, 65, 66, 67], 1] += drop
    pts[[54, 48, 60, 64], 1] += drop * 0.35
    jaw_weight = np.sin(np.pi * np.arange(17) / 16.0) ** 2
    pts[0:17, 1] += drop * 0.75 * jaw_weight
    pts[48:68, 0] *= 1.0 - 0.08 * expr.mouth_open
    for corner, side in ((48, -1.0), (60, -1.0), (54, 1.0), (64, 1.0)):
        pts[corner, 0] += side * 0.45 * expr.smile
        pts[corner, 1] -= 0.5 * expr.smile
    pts[[49, 53, 61, 63], 1] -= 0.15 * expr.smile
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        pts[upper, 1] += (pts[lower, 1] - pts[upper, 1]) * 0.9 * expr.blink
    return pts


class _Camera:
    """Pose + pinhole projection of head-frame points to frame pixels."""

    def __init__(self, rotation: np.ndarray, focal: float, centre: tuple[float, float]) -> None:
        self.rotation = rotation
        self.focal = focal
        self.centre = np.asarray(centre, dtype=np.float64)

    def to_camera(self, pts: np.ndarray) -> np.ndarray:
        return (pts - _PIVOT) @ self.rotation.T

    def project(self, pts: np.ndarray) -> np.ndarray:
        cam = self.to_camera(np.asarray(pts, dtype=np.float64).reshape(-1, 3))
        depth = _CAMERA_DISTANCE_CM - cam[:, 2]
        return self.centre + self.focal * cam[:, :2] / depth[:, None]

    def facing(self, normals: np.ndarray) -> np.ndarray:
        """z of rotated normals: > 0 where a surface faces the camera."""
        return normals @ self.rotation[2]


def _ellipsoid(centre: Sequence[float], radii: Sequence[float], n_lat: int = 14,
               n_lon: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Surface points and unit normals of an ellipsoid, as a (lat, lon) grid flattened."""
    lat = np.linspace(-np.pi / 2, np.pi / 2, n_lat)
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    unit = np.stack([np.cos(la) * np.sin(lo), np.sin(la), np.cos(la) * np.cos(lo)], axis=-1)
    r = np.asarray(radii, dtype=np.float64)
    pts = np.asarray(centre, dtype=np.float64) + unit * r
    normals = unit / r
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    return pts.reshape(-1, 3), normals.reshape(-1, 3)


# ---------------------------------------------------------------------------------------------
# Painting


class _Canvas:
    """A supersampled drawing area over a region of the frame, with a coverage mask."""

    def __init__(self, x0: int, y0: int, w: int, h: int) -> None:
        self.x0, self.y0, self.w, self.h = x0, y0, w, h
        self.image = np.zeros((h * _SUPERSAMPLE, w * _SUPERSAMPLE, 3), np.uint8)
        self.alpha = np.zeros((h * _SUPERSAMPLE, w * _SUPERSAMPLE), np.uint8)
        self.shade = np.full((h * _SUPERSAMPLE, w * _SUPERSAMPLE), 255, np.uint8)

    def _fixed(self, pts: np.ndarray) -> np.ndarray:
        local = (np.asarray(pts, np.float64).reshape(-1, 2) - (self.x0, self.y0)) * _SUPERSAMPLE
        return np.round(local * 16).astype(np.int32).reshape(-1, 1, 2)

    def poly(self, pts: np.ndarray, colour: BGR, cover: bool = True) -> None:
        fixed = self._fixed(pts)
        cv2.fillPoly(self.image, [fixed], colour, cv2.LINE_AA, shift=4)
        if cover:
            cv2.fillPoly(self.alpha, [fixed], 255, cv2.LINE_AA, shift=4)

    def line(self, pts: np.ndarray, colour: BGR, thickness: float, closed: bool = False) -> None:
        t = max(1, int(float(thickness) * _SUPERSAMPLE + 0.5))
        cv2.polylines(self.image, [self._fixed(pts)], closed, colour, t, cv2.LINE_AA, shift=4)

    def ellipse(self, centre: np.ndarray, axes: tuple[float, float], angle: float,
                colour: BGR, target: np.ndarray | None = None) -> None:
        c = np.round((np.asarray(centre) - (self.x0, self.y0)) * _SUPERSAMPLE * 16).astype(int)
        ax = (max(1, int(axes[0] * _SUPERSAMPLE * 16)), max(1, int(axes[1] * _SUPERSAMPLE * 16)))
        img = self.image if target is None else target
        cv2.ellipse(img, (int(c[0]), int(c[1])), ax, angle, 0, 360, colour, -1, cv2.LINE_AA,
                    shift=4)

    def darken(self, pts: np.ndarray, amount: float) -> None:
        """Mark a soft shadow region (applied after blurring the shade layer)."""
        cv2.fillPoly(self.shade, [self._fixed(pts)], int(255 * (1 - amount)), cv2.LINE_AA,
                     shift=4)


def _scale(colour: BGR, k: float) -> BGR:
    return tuple(min(255, max(0, int(c * k))) for c in colour)  # type: ignore[return-value]


def _mix(a: BGR, b: BGR, t: float) -> BGR:
    return tuple(int(a[i] * (1 - t) + b[i] * t) for i in range(3))  # type: ignore[return-value]


def _hull(points: np.ndarray) -> np.ndarray:
    return cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)


@functools.lru_cache(maxsize=256)
def _spline_basis(k: int, steps: int, closed: bool) -> np.ndarray:
    """Matrix mapping k control points to a Catmull-Rom curve through them."""
    t = np.linspace(0, 1, steps, endpoint=False)
    weights = 0.5 * np.stack([-t + 2 * t**2 - t**3, 2 - 5 * t**2 + 3 * t**3,
                              t + 4 * t**2 - 3 * t**3, -t**2 + t**3], axis=1)
    segments = k if closed else k - 1
    basis = np.zeros((segments * steps + (0 if closed else 1), k))
    for i in range(segments):
        idx = [(i + j - 1) % k if closed else min(max(i + j - 1, 0), k - 1) for j in range(4)]
        for j in range(4):
            basis[i * steps:(i + 1) * steps, idx[j]] += weights[:, j]
    if not closed:
        basis[-1, k - 1] = 1.0
    return basis


def _curve(pts: np.ndarray, n: int = 24) -> np.ndarray:
    """A smooth open curve through points (Catmull-Rom), about n samples."""
    return _spline_basis(len(pts), max(2, n // (len(pts) - 1)), False) @ pts


def _closed_curve(pts: np.ndarray, n: int = 40) -> np.ndarray:
    """A smooth closed curve through points (Catmull-Rom)."""
    return _spline_basis(len(pts), max(2, n // len(pts)), True) @ pts


def make_background(size: tuple[int, int], seed: int) -> np.ndarray:
    """A non-trivial, face-free backdrop: gradient, soft blobs and a few shelves/frames."""
    w, h = size
    rng = np.random.default_rng(seed)
    sw, sh = max(8, w // 8), max(8, h // 8)
    base = rng.uniform(40, 210, 3)
    tint = rng.uniform(-60, 60, 3)
    gy, gx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    g = (gx / sw * np.cos(rng.uniform(0, 6.3)) + gy / sh * np.sin(rng.uniform(0, 6.3)))
    small = base + g[..., None] * tint
    small += rng.normal(0, 6, (sh, sw, 3))
    img = cv2.resize(np.clip(small, 0, 255).astype(np.uint8), (w, h),
                     interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(3, 7))):
        colour = tuple(int(c) for c in rng.uniform(20, 235, 3))
        x0, y0 = int(rng.uniform(-0.1, 0.9) * w), int(rng.uniform(-0.1, 0.9) * h)
        x1, y1 = x0 + int(rng.uniform(0.05, 0.4) * w), y0 + int(rng.uniform(0.03, 0.3) * h)
        if rng.random() < 0.5:
            cv2.rectangle(img, (x0, y0), (x1, y1), colour, -1, cv2.LINE_AA)
        else:
            cv2.line(img, (x0, y0), (x1, y0), colour, int(rng.integers(2, 8)), cv2.LINE_AA)
    return cv2.GaussianBlur(img, (0, 0), 1.5 + 0.01 * min(w, h))


def render_face(identity: Identity, pose: tuple[float, float, float] = (0.0, 0.0, 0.0),
                expression: Expression | None = None, lighting: Lighting | None = None,
                frame_size: tuple[int, int] = (640, 360),
                centre: tuple[float, float] | None = None, face_height_px: float = 200.0,
                background: np.ndarray | int | None = None) -> RenderedFace:
    """Render one frame of `identity` and return it with its ground-truth 68 landmarks.

    `frame_size` is (width, height); `centre` is where the middle of the face (the box of its
    landmarks) lands, default the frame centre; `face_height_px` is the brow-to-chin height of the
    frontal face; `background` is a BGR image of frame_size, a seed for `make_background`, or
    None for seed 0.
    """
    expr = expression or Expression()
    light = lighting or Lighting()
    w, h = frame_size
    if isinstance(background, np.ndarray):
        if background.shape[:2] != (h, w):
            raise ValueError(f"background is {background.shape[1]}x{background.shape[0]}, "
                             f"frame_size is {w}x{h}")
        frame = background.copy()
    else:
        frame = make_background((w, h), int(background or 0))
    if centre is None:
        centre = (w / 2.0, h / 2.0)

    neutral = identity.landmarks_3d()
    face3d = _expressed(neutral, expr, identity)
    extent = neutral[:, 1].max() - neutral[:, 1].min()
    # Place the middle of the face (its landmarks' box) at `centre` for the unrotated face.
    middle = (neutral.min(axis=0) + neutral.max(axis=0)) / 2.0
    focal = face_height_px * (_CAMERA_DISTANCE_CM - (middle[2] - _PIVOT[2])) / extent
    offset = np.asarray(centre) - focal * (middle[:2] - _PIVOT[:2]) / (
        _CAMERA_DISTANCE_CM - (middle[2] - _PIVOT[2]))
    cam = _Camera(rotation_matrix(*pose), focal, (float(offset[0]), float(offset[1])))
    landmarks = cam.project(face3d)

    _paint(frame, identity, face3d, cam, expr, light)
    return RenderedFace(image=frame, landmarks=landmarks, pose=tuple(float(a) for a in pose))


def _paint(frame: np.ndarray, ident: Identity, lm3: np.ndarray, cam: _Camera,
           expr: Expression, light: Lighting) -> None:
    hw, hh = ident.head_width, ident.head_height
    lm = cam.project(lm3)

    # Skull: an ellipsoid behind the face whose front meets the forehead.
    skull_c, skull_r = (0.0, -1.6 * hh, -7.6), (7.4 * hw, 10.2 * hh, 9.4)
    skull, skull_n = _ellipsoid(skull_c, skull_r)
    skull_2d = cam.project(skull[skull[:, 1] < 3.5 * hh])
    jaw_2d = lm[0:17]
    # Temples and cheekbones keep the far eye inside the outline when the head turns.
    cheek3d = np.array([[s * 6.3 * hw, y * hh, z] for s in (-1.0, 1.0)
                        for y, z in ((-2.5, -2.8), (1.0, -2.5), (3.2, -2.2), (5.5, -1.8))])
    head_outline = _closed_curve(_hull(np.vstack([skull_2d, jaw_2d, cam.project(cheek3d)])), 96)

    # Hair volume ellipsoid and cap below the hairline.
    vol = 1.04 + 0.07 * ident.hair_volume
    hair_r = (skull_r[0] * vol, skull_r[1] * vol, skull_r[2] * vol)
    hair_c = (0.0, skull_c[1] - 0.4 * ident.hair_volume, skull_c[2] - 0.2)
    hair_pts, hair_n = _ellipsoid(hair_c, hair_r, 16, 28)
    hairline = {"fringe": -2.9, "bald": -9.5, "curly": -4.4}.get(ident.hair_style, -4.2) * hh

    # Neck and shoulders.
    neck3d = np.array([[-4.2 * hw, 5.0, -7.0], [4.2 * hw, 5.0, -7.0], [4.6 * hw, 16.0, -7.5],
                       [-4.6 * hw, 16.0, -7.5]])
    neck_base = cam.centre + cam.focal * (np.array([0.0, 15.0]) - _PIVOT[:2]) / (
        _CAMERA_DISTANCE_CM + 8.0)
    shoulder_w = cam.focal * 22.0 / _CAMERA_DISTANCE_CM
    shoulder_h = cam.focal * 9.0 / _CAMERA_DISTANCE_CM

    # Shoulders go straight onto the frame: smooth, unshaded, outside the supersampled canvas.
    shoulder_c = np.round((neck_base + (0, shoulder_h * 1.1)) * 16).astype(int)
    cv2.ellipse(frame, (int(shoulder_c[0]), int(shoulder_c[1])),
                (int(shoulder_w * 16), int(shoulder_h * 1.6 * 16)), 0, 0, 360,
                _scale(ident.clothes, light.ambient + 0.5 * light.intensity), -1, cv2.LINE_AA,
                shift=4)

    back_hair = None
    if ident.hair_style in ("long", "bob", "curly"):
        length = {"long": 14.0, "bob": 6.5, "curly": 5.0}[ident.hair_style] * hh
        back = hair_pts[(hair_pts[:, 1] < 2.0) & (hair_pts[:, 2] < -3.0)]
        tails = np.array([[-hair_r[0] * 1.02, length, -7.5], [hair_r[0] * 1.02, length, -7.5],
                          [-hair_r[0] * 0.8, length + 1.5, -9.0],
                          [hair_r[0] * 0.8, length + 1.5, -9.0]])
        back_hair = _hull(cam.project(np.vstack([back, tails])))

    parts = [head_outline, cam.project(hair_pts), cam.project(neck3d)]
    all_pts = np.vstack(parts if back_hair is None else [*parts, back_hair])
    fh, fw = frame.shape[:2]
    margin = 4
    x0 = int(max(0, np.floor(all_pts[:, 0].min()) - margin))
    y0 = int(max(0, np.floor(all_pts[:, 1].min()) - margin))
    x1 = int(min(fw, np.ceil(all_pts[:, 0].max()) + margin))
    y1 = int(min(fh, np.ceil(all_pts[:, 1].max()) + margin))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    cv = _Canvas(x0, y0, x1 - x0, y1 - y0)
    skin = ident.skin
    if back_hair is not None:
        cv.poly(back_hair, _scale(ident.hair, 0.8))

    cap = hair_pts[hair_pts[:, 1] < hairline]
    if ident.hair_style != "bald":  # the back of the hair cap, hidden by the face
        cv.poly(_hull(cam.project(cap)), _scale(ident.hair, 0.8))
    cv.poly(cam.project(neck3d), _scale(skin, 0.7))
    for side in (-1.0, 1.0):
        t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        ear = np.stack([np.full_like(t, side * 7.05 * hw), 0.9 * hh + 2.6 * hh * np.sin(t),
                        -5.6 + 1.3 * np.cos(t) + 0.8 * side * 0], axis=1)
        ear[:, 0] += side * 0.9 * (np.cos(t) + 1) / 2  # ears stand out at the back
        cv.poly(cam.project(ear), _scale(skin, 0.88))
    cv.poly(head_outline, skin)

    # Soft shading marks: eye sockets, under the brows, the nose side away from the light,
    # under the lower lip and under the chin.
    for eye in (slice(36, 42), slice(42, 48)):
        socket = lm3[eye].copy()
        c = socket.mean(axis=0)
        socket = c + (socket - c) * np.array([1.35, 2.4, 1.0])
        socket[:, 1] -= 0.3
        cv.darken(cam.project(socket), 0.4)
    light_side = 1.0 if light.direction[0] > 0 else -1.0
    wing = 31 if light_side > 0 else 35
    nose_side = np.vstack([lm3[27:31] + [-light_side * 0.15, 0, 0], lm3[[33, wing]],
                           lm3[[wing]] + [-light_side * 0.4, -0.6, -0.4],
                           lm3[[28]] + [-light_side * 1.1, 0.0, -0.8],
                           lm3[[27]] + [-light_side * 1.0, 0.0, -0.8]])
    cv.darken(cam.project(nose_side), 0.45)
    far = 35 if light_side > 0 else 31
    cv.darken(cam.project(np.vstack([lm3[[far]] + [0, -0.4, -0.1], lm3[[far]] + [light_side * 0.4,
                                     0.1, -0.3], lm3[[33]] + [0, 0.1, 0]])), 0.3)
    under_lip = np.vstack([lm3[55:60], lm3[[59]] + [0, 1.0, -0.2], lm3[[55]] + [0, 1.0, -0.2]])
    cv.darken(cam.project(under_lip), 0.12)
    under_nose = np.vstack([lm3[31:36] + [0, 0.2, 0], lm3[[35, 31]] + [0, 0.8, -0.2]])
    cv.darken(cam.project(under_nose), 0.15)

    # Hair on top: the hair ellipsoid above the hairline, with strands following meridians.
    if ident.hair_style != "bald":
        front = cap[cam.facing(hair_n[hair_pts[:, 1] < hairline]) > -0.05]
        cap_2d = _hull(cam.project(front))
        cv.poly(cap_2d, ident.hair)
        rng = np.random.default_rng(ident.seed)
        strand_light = _mix(ident.hair, (255, 255, 255), 0.18)
        strand_dark = _scale(ident.hair, 0.65)
        for _ in range(24):
            lon = rng.uniform(-np.pi * 0.55, np.pi * 0.55)
            lat = np.linspace(-np.pi / 2 + 0.05, np.arcsin(
                np.clip((hairline - hair_c[1]) / hair_r[1], -1, 1)) - 0.02, 10)
            meridian = np.stack([hair_r[0] * np.cos(lat) * np.sin(lon),
                                 hair_r[1] * np.sin(lat),
                                 hair_r[2] * np.cos(lat) * np.cos(lon)], axis=1) + hair_c
            meridian = meridian[cam.facing((meridian - hair_c) / hair_r) > 0.1]
            if len(meridian) < 2:
                continue
            cv.line(cam.project(meridian), strand_light if rng.random() < 0.5 else strand_dark,
                    1.0 + rng.random())
        if ident.hair_style == "curly":
            edge = hair_pts[(hair_pts[:, 1] < hairline + 1.2) & (hair_pts[:, 1] > hairline - 2.5)]
            vis = edge[cam.facing((edge - hair_c) / hair_r) > -0.2]
            for p in cam.project(vis):
                cv.ellipse(p, (cam.focal * 0.9 / _CAMERA_DISTANCE_CM,) * 2, 0.0, ident.hair)

    # Brows take the hair's hue but always stay well darker than the skin.
    brow_colour = _scale(ident.hair, 0.55) if ident.hair_style != "bald" else (40, 45, 60)
    limit = 0.45 * sum(skin) / 3
    if sum(brow_colour) / 3 > limit:
        brow_colour = _scale(brow_colour, limit / (sum(brow_colour) / 3))
    thick = cam.focal * 0.42 * ident.brow_thickness / _CAMERA_DISTANCE_CM
    for brow in (slice(17, 22), slice(22, 27)):
        b = lm3[brow]
        top = cam.project(b + [0, -0.28 * ident.brow_thickness, 0.05])
        bottom = cam.project(b + [0, 0.22 * ident.brow_thickness, 0.05])
        cv.poly(np.vstack([_curve(top, 16), _curve(bottom, 16)[::-1]]), brow_colour)
        cv.line(_curve(cam.project(b), 16), brow_colour, max(1.0, thick * 0.3))

    # Eyes: whites, iris clipped to the opening, pupil, glint, lids.
    for eye in (slice(36, 42), slice(42, 48)):
        e3 = lm3[eye]
        opening = _closed_curve(cam.project(e3), 36)
        eye_c3 = e3.mean(axis=0)
        radius_cm = 0.58 * ident.eye_size
        iris_c = cam.project(eye_c3 + [0, 0, 0.3])[0]
        iris_r = cam.focal * radius_cm / _CAMERA_DISTANCE_CM
        openness = (np.linalg.norm(lm3[eye][[1, 2]] - lm3[eye][[5, 4]], axis=1).mean())
        if openness > 0.12:
            x_lo, y_lo = np.floor(opening.min(axis=0) - 2).astype(int)
            x_hi, y_hi = np.ceil(opening.max(axis=0) + 2).astype(int)
            sub = _Canvas(x_lo, y_lo, x_hi - x_lo, y_hi - y_lo)
            sub.poly(opening, (222, 228, 232))
            sub.ellipse(iris_c, (iris_r, iris_r), 0.0, ident.eye_colour)
            sub.ellipse(iris_c, (iris_r * 0.62, iris_r * 0.62), 0.0,
                        _scale(ident.eye_colour, 0.7))
            sub.ellipse(iris_c, (iris_r * 0.42, iris_r * 0.42), 0.0, (12, 12, 14))
            sub.ellipse(iris_c + (-iris_r * 0.3, -iris_r * 0.35), (iris_r * 0.16,) * 2, 0.0,
                        (245, 245, 250))
            _blit(cv, sub)
        # Upper lid line with lashes, lower lid faint.
        upper = _curve(cam.project(e3[[0, 1, 2, 3]]), 16)
        lower = _curve(cam.project(e3[[3, 4, 5, 0]]), 16)
        lid = max(1.2, iris_r * 0.28)
        cv.line(upper, (20, 18, 22), lid)
        cv.line(lower, _scale(skin, 0.6), max(1.0, lid * 0.45))
        crease = cam.project(e3[[0, 1, 2, 3]] + [0, -0.42, 0.05])
        cv.line(_curve(crease, 12), _scale(skin, 0.75), max(1.0, lid * 0.4))

    # Nose: nostrils, tip highlight, bridge line on the shadow side.
    nostril_colour = _scale(skin, 0.3)
    for a, b in ((31, 32), (35, 34)):
        p = cam.project((lm3[a] * 0.45 + lm3[b] * 0.55 + [0, 0.05, 0])[None])[0]
        r = cam.focal * 0.36 * ident.nose_width / _CAMERA_DISTANCE_CM
        cv.ellipse(p, (r, r * 0.55), 0.0, nostril_colour)
    wing = cam.project(np.vstack([lm3[[31]] + [-0.1, -0.6, -0.2], lm3[[31]],
                                  lm3[[32]] + [0, 0.1, 0]]))
    cv.line(_curve(wing, 10), _scale(skin, 0.55), 1.5)
    wing = cam.project(np.vstack([lm3[[35]] + [0.1, -0.6, -0.2], lm3[[35]],
                                  lm3[[34]] + [0, 0.1, 0]]))
    cv.line(_curve(wing, 10), _scale(skin, 0.55), 1.5)
    tip = cam.project(lm3[[30]] + [0, -0.2, 0.1])[0]
    r = cam.focal * 0.35 / _CAMERA_DISTANCE_CM
    cv.ellipse(tip, (r, r * 0.8), 0.0, _mix(skin, (255, 255, 255), 0.1))

    # Mouth: inner mouth, teeth, lips.
    outer = cam.project(lm3[48:60])
    inner = cam.project(lm3[60:68])
    upper_lip = np.vstack([_curve(outer[0:7], 24), _curve(inner[[4, 3, 2, 1, 0]], 16)])
    lower_lip = np.vstack([_curve(outer[[6, 7, 8, 9, 10, 11, 0]], 24),
                           _curve(inner[[0, 7, 6, 5, 4]], 16)])
    gap = np.linalg.norm(lm3[66] - lm3[62])
    if gap > 0.15:
        mouth = np.vstack([_curve(inner[[0, 1, 2, 3, 4]], 16), _curve(inner[[4, 5, 6, 7, 0]], 16)])
        cv.poly(mouth, (35, 30, 60))
        teeth3 = np.vstack([lm3[61:64] + [0, 0.05, -0.1],
                            lm3[[63, 62, 61]] + [0, min(0.5, gap * 0.45), -0.1]])
        cv.poly(cam.project(teeth3), (215, 225, 230))
    cv.poly(upper_lip, _scale(ident.lip, 0.9))
    cv.poly(lower_lip, ident.lip)
    cv.line(_curve(inner[[0, 1, 2, 3, 4]], 16), _scale(ident.lip, 0.45), 1.2)

    _composite(frame, cv, light, lm, head_outline)


def _blit(dst: _Canvas, src: _Canvas) -> None:
    """Paint a small canvas into a bigger one (both supersampled), through its alpha."""
    ox, oy = (src.x0 - dst.x0) * _SUPERSAMPLE, (src.y0 - dst.y0) * _SUPERSAMPLE
    sh, sw = src.alpha.shape
    x_a, y_a = max(0, ox), max(0, oy)
    x_b, y_b = min(dst.alpha.shape[1], ox + sw), min(dst.alpha.shape[0], oy + sh)
    if x_b <= x_a or y_b <= y_a:
        return
    s = (slice(y_a - oy, y_b - oy), slice(x_a - ox, x_b - ox))
    d = (slice(y_a, y_b), slice(x_a, x_b))
    a = src.alpha[s][..., None].astype(np.float32) / 255.0
    dst.image[d] = (src.image[s] * a + dst.image[d] * (1 - a)).astype(np.uint8)


def _composite(frame: np.ndarray, cv: _Canvas, light: Lighting, lm: np.ndarray,
               head_outline: np.ndarray) -> None:
    """Downsample the canvas, light it, blur slightly and lay it over the frame."""
    size = (cv.w, cv.h)
    fg = cv2.resize(cv.image, size, interpolation=cv2.INTER_AREA)
    fg = cv2.GaussianBlur(fg, (3, 3), 0.6)
    alpha = cv2.resize(cv.alpha, size, interpolation=cv2.INTER_AREA)

    # Shading is smooth, so it is computed on a coarse grid and scaled up.
    k = 4
    small = (max(2, cv.w // k), max(2, cv.h // k))
    shade = cv2.resize(cv.shade, small, interpolation=cv2.INTER_AREA)
    face_scale = float(np.linalg.norm(lm[8] - lm[27]))
    shade = cv2.GaussianBlur(shade, (0, 0), max(0.5, face_scale * 0.05 / k))
    # Lambert shading of an ellipse fitted to the head outline stands in for its normals.
    (cx, cy), (ax_w, ax_h), angle = cv2.fitEllipse(head_outline.astype(np.float32))
    sx, sy = cv.w / small[0], cv.h / small[1]
    yy, xx = np.mgrid[0:small[1], 0:small[0]].astype(np.float32)
    xx = xx * sx + cv.x0 - cx
    yy = yy * sy + cv.y0 - cy
    t = np.radians(angle)
    u = (xx * np.cos(t) + yy * np.sin(t)) / (ax_w / 2 * 1.15)
    v = (-xx * np.sin(t) + yy * np.cos(t)) / (ax_h / 2 * 1.15)
    nx = u * np.cos(t) - v * np.sin(t)
    ny = u * np.sin(t) + v * np.cos(t)
    nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.0, 1.0))
    d = np.asarray(light.direction, dtype=np.float32)
    d /= np.linalg.norm(d)
    lambert = np.clip(nx * d[0] + ny * d[1] + nz * d[2], 0.0, 1.0)
    lit = (light.ambient + light.intensity * lambert) * (shade.astype(np.float32) / 255)
    lit = cv2.resize(lit, size, interpolation=cv2.INTER_LINEAR)
    fg = np.minimum(fg * lit[..., None], 255.0).astype(np.uint8)
    a = alpha.astype(np.float32) * (1.0 / 255.0)
    roi = frame[cv.y0:cv.y0 + cv.h, cv.x0:cv.x0 + cv.w]
    roi[:] = cv2.blendLinear(fg, roi, a, 1.0 - a)


# ---------------------------------------------------------------------------------------------
# Face sets


def random_view(rng: np.random.Generator) -> dict:
    """A varied pose/expression/lighting for training sets (keyword arguments of render_face)."""
    return {
        "pose": (float(rng.uniform(-35, 35)), float(rng.uniform(-18, 18)),
                 float(rng.uniform(-15, 15))),
        "expression": Expression(mouth_open=float(rng.choice([0.0, rng.uniform(0, 1)])),
                                 smile=float(rng.uniform(0, 1)),
                                 blink=float(rng.choice([0.0, 0.0, 0.0, rng.uniform(0, 1)]))),
        "lighting": Lighting(direction=(float(rng.uniform(-0.8, 0.8)),
                                        float(rng.uniform(-0.8, 0.3)), 0.7),
                             intensity=float(rng.uniform(0.35, 0.75)),
                             ambient=float(rng.uniform(0.4, 0.6))),
    }


def write_face_set(folder: str | os.PathLike[str], identity: Identity, count: int, seed: int,
                   size: int = 256, centering: Centering = "face") -> list[Path]:
    """Render `count` varied frames of `identity` and save aligned faceswap-format PNGs.

    Files are named like faceswap's extract output: `<source stem>_<face index>.png`. Returns
    the written paths.
    """
    from swapd.faces.faceswap_png import FaceswapMeta, write_aligned_png

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frame_w = frame_h = int(size * 1.5)  # the crop plus room for roll and shifts
    backgrounds = [make_background((frame_w, frame_h), seed * 1000 + i) for i in range(8)]
    paths = []
    for i in range(count):
        view = random_view(rng)
        height = size * float(rng.uniform(0.7, 0.8))
        centre = (frame_w / 2 + rng.uniform(-0.04, 0.04) * frame_w,
                  frame_h / 2 + rng.uniform(-0.04, 0.04) * frame_h)
        rendered = render_face(identity, frame_size=(frame_w, frame_h), centre=centre,
                               face_height_px=height,
                               background=backgrounds[int(rng.integers(len(backgrounds)))],
                               **view)
        matrix = aligned_matrix(rendered.landmarks, size, centering)
        face = warp_face(rendered.image, matrix, size)
        stem = f"{identity.name}_{seed:04d}_{i:06d}"
        name = f"{stem}_0.png"
        x, y, bw, bh = _landmark_box(rendered.landmarks)
        meta = FaceswapMeta(
            x=x, y=y, w=bw, h=bh, landmarks_xy=rendered.landmarks.astype(np.float32),
            original_filename=name, face_index=0, source_filename=f"{stem}.png",
            source_is_video=False, source_frame_dims=(frame_h, frame_w),
            swapd={"centering": centering, "size": size, "pose": list(rendered.pose),
                   "aligned_landmarks": transform_points(rendered.landmarks, matrix)
                   .round(2).tolist()},
        )
        path = out / name
        write_aligned_png(path, face, meta, durable=False)
        paths.append(path)
    return paths


def _landmark_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """A detector-like face box (x, y, w, h) around 68 landmarks."""
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    top = lo[1] - 0.15 * (hi[1] - lo[1])
    return int(lo[0]), int(top), int(hi[0] - lo[0]), int(hi[1] - top)

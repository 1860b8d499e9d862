"""The painter: ``render_face`` draws an identity in a pose onto a frame, with exact landmarks.

``render_face`` poses the identity's 3D head (:mod:`swapd.demo.head`), projects it with a pinhole
camera and paints it (2x supersampled, shaded from the light direction, lightly blurred), so the
returned landmarks are exact ground truth and a real detector (MTCNN) finds the face. The demo
and the tests use these faces instead of photographs of people.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from swapd.demo.canvas import Canvas, blit, closed_curve, curve, hull
from swapd.demo.colours import mixed, scaled
from swapd.demo.head import (
    CAMERA_DISTANCE_CM,
    PIVOT,
    Camera,
    ellipsoid,
    expressed,
    rotation_matrix,
)
from swapd.demo.identity import Expression, Identity, Lighting


@dataclass
class RenderedFace:
    image: np.ndarray  # BGR uint8, frame_size
    landmarks: np.ndarray  # 68x2 float, frame pixels, ground truth
    pose: tuple[float, float, float]  # yaw, pitch, roll in degrees


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
    face3d = expressed(neutral, expr, identity)
    extent = neutral[:, 1].max() - neutral[:, 1].min()
    # Place the middle of the face (its landmarks' box) at `centre` for the unrotated face.
    middle = (neutral.min(axis=0) + neutral.max(axis=0)) / 2.0
    focal = face_height_px * (CAMERA_DISTANCE_CM - (middle[2] - PIVOT[2])) / extent
    offset = np.asarray(centre) - focal * (middle[:2] - PIVOT[:2]) / (
        CAMERA_DISTANCE_CM - (middle[2] - PIVOT[2]))
    cam = Camera(rotation_matrix(*pose), focal, (float(offset[0]), float(offset[1])))
    landmarks = cam.project(face3d)

    _paint(frame, identity, face3d, cam, expr, light)
    return RenderedFace(image=frame, landmarks=landmarks, pose=tuple(float(a) for a in pose))


def _paint(frame: np.ndarray, ident: Identity, lm3: np.ndarray, cam: Camera,
           expr: Expression, light: Lighting) -> None:
    hw, hh = ident.head_width, ident.head_height
    lm = cam.project(lm3)

    # Skull: an ellipsoid behind the face whose front meets the forehead.
    skull_c, skull_r = (0.0, -1.6 * hh, -7.6), (7.4 * hw, 10.2 * hh, 9.4)
    skull, skull_n = ellipsoid(skull_c, skull_r)
    skull_2d = cam.project(skull[skull[:, 1] < 3.5 * hh])
    jaw_2d = lm[0:17]
    # Temples and cheekbones keep the far eye inside the outline when the head turns.
    cheek3d = np.array([[s * 6.3 * hw, y * hh, z] for s in (-1.0, 1.0)
                        for y, z in ((-2.5, -2.8), (1.0, -2.5), (3.2, -2.2), (5.5, -1.8))])
    head_outline = closed_curve(hull(np.vstack([skull_2d, jaw_2d, cam.project(cheek3d)])), 96)

    # Hair volume ellipsoid and cap below the hairline.
    vol = 1.04 + 0.07 * ident.hair_volume
    hair_r = (skull_r[0] * vol, skull_r[1] * vol, skull_r[2] * vol)
    hair_c = (0.0, skull_c[1] - 0.4 * ident.hair_volume, skull_c[2] - 0.2)
    hair_pts, hair_n = ellipsoid(hair_c, hair_r, 16, 28)
    hairline = {"fringe": -2.9, "bald": -9.5, "curly": -4.4}.get(ident.hair_style, -4.2) * hh

    # Neck and shoulders.
    neck3d = np.array([[-4.2 * hw, 5.0, -7.0], [4.2 * hw, 5.0, -7.0], [4.6 * hw, 16.0, -7.5],
                       [-4.6 * hw, 16.0, -7.5]])
    neck_base = cam.centre + cam.focal * (np.array([0.0, 15.0]) - PIVOT[:2]) / (
        CAMERA_DISTANCE_CM + 8.0)
    shoulder_w = cam.focal * 22.0 / CAMERA_DISTANCE_CM
    shoulder_h = cam.focal * 9.0 / CAMERA_DISTANCE_CM

    # Shoulders go straight onto the frame: smooth, unshaded, outside the supersampled canvas.
    shoulder_c = np.round((neck_base + (0, shoulder_h * 1.1)) * 16).astype(int)
    cv2.ellipse(frame, (int(shoulder_c[0]), int(shoulder_c[1])),
                (int(shoulder_w * 16), int(shoulder_h * 1.6 * 16)), 0, 0, 360,
                scaled(ident.clothes, light.ambient + 0.5 * light.intensity), -1, cv2.LINE_AA,
                shift=4)

    back_hair = None
    if ident.hair_style in ("long", "bob", "curly"):
        length = {"long": 14.0, "bob": 6.5, "curly": 5.0}[ident.hair_style] * hh
        back = hair_pts[(hair_pts[:, 1] < 2.0) & (hair_pts[:, 2] < -3.0)]
        tails = np.array([[-hair_r[0] * 1.02, length, -7.5], [hair_r[0] * 1.02, length, -7.5],
                          [-hair_r[0] * 0.8, length + 1.5, -9.0],
                          [hair_r[0] * 0.8, length + 1.5, -9.0]])
        back_hair = hull(cam.project(np.vstack([back, tails])))

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
    cv = Canvas(x0, y0, x1 - x0, y1 - y0)
    skin = ident.skin
    if back_hair is not None:
        cv.poly(back_hair, scaled(ident.hair, 0.8))

    cap = hair_pts[hair_pts[:, 1] < hairline]
    if ident.hair_style != "bald":  # the back of the hair cap, hidden by the face
        cv.poly(hull(cam.project(cap)), scaled(ident.hair, 0.8))
    cv.poly(cam.project(neck3d), scaled(skin, 0.7))
    for side in (-1.0, 1.0):
        t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        ear = np.stack([np.full_like(t, side * 7.05 * hw), 0.9 * hh + 2.6 * hh * np.sin(t),
                        -5.6 + 1.3 * np.cos(t) + 0.8 * side * 0], axis=1)
        ear[:, 0] += side * 0.9 * (np.cos(t) + 1) / 2  # ears stand out at the back
        cv.poly(cam.project(ear), scaled(skin, 0.88))
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
        cap_2d = hull(cam.project(front))
        cv.poly(cap_2d, ident.hair)
        rng = np.random.default_rng(ident.seed)
        strand_light = mixed(ident.hair, (255, 255, 255), 0.18)
        strand_dark = scaled(ident.hair, 0.65)
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
                cv.ellipse(p, (cam.focal * 0.9 / CAMERA_DISTANCE_CM,) * 2, 0.0, ident.hair)

    # Brows take the hair's hue but always stay well darker than the skin.
    brow_colour = scaled(ident.hair, 0.55) if ident.hair_style != "bald" else (40, 45, 60)
    limit = 0.45 * sum(skin) / 3
    if sum(brow_colour) / 3 > limit:
        brow_colour = scaled(brow_colour, limit / (sum(brow_colour) / 3))
    thick = cam.focal * 0.42 * ident.brow_thickness / CAMERA_DISTANCE_CM
    for brow in (slice(17, 22), slice(22, 27)):
        b = lm3[brow]
        top = cam.project(b + [0, -0.28 * ident.brow_thickness, 0.05])
        bottom = cam.project(b + [0, 0.22 * ident.brow_thickness, 0.05])
        cv.poly(np.vstack([curve(top, 16), curve(bottom, 16)[::-1]]), brow_colour)
        cv.line(curve(cam.project(b), 16), brow_colour, max(1.0, thick * 0.3))

    # Eyes: whites, iris clipped to the opening, pupil, glint, lids.
    for eye in (slice(36, 42), slice(42, 48)):
        e3 = lm3[eye]
        opening = closed_curve(cam.project(e3), 36)
        eye_c3 = e3.mean(axis=0)
        radius_cm = 0.58 * ident.eye_size
        iris_c = cam.project(eye_c3 + [0, 0, 0.3])[0]
        iris_r = cam.focal * radius_cm / CAMERA_DISTANCE_CM
        openness = (np.linalg.norm(lm3[eye][[1, 2]] - lm3[eye][[5, 4]], axis=1).mean())
        if openness > 0.12:
            x_lo, y_lo = np.floor(opening.min(axis=0) - 2).astype(int)
            x_hi, y_hi = np.ceil(opening.max(axis=0) + 2).astype(int)
            sub = Canvas(x_lo, y_lo, x_hi - x_lo, y_hi - y_lo)
            sub.poly(opening, (222, 228, 232))
            sub.ellipse(iris_c, (iris_r, iris_r), 0.0, ident.eye_colour)
            sub.ellipse(iris_c, (iris_r * 0.62, iris_r * 0.62), 0.0,
                        scaled(ident.eye_colour, 0.7))
            sub.ellipse(iris_c, (iris_r * 0.42, iris_r * 0.42), 0.0, (12, 12, 14))
            sub.ellipse(iris_c + (-iris_r * 0.3, -iris_r * 0.35), (iris_r * 0.16,) * 2, 0.0,
                        (245, 245, 250))
            blit(cv, sub)
        # Upper lid line with lashes, lower lid faint.
        upper = curve(cam.project(e3[[0, 1, 2, 3]]), 16)
        lower = curve(cam.project(e3[[3, 4, 5, 0]]), 16)
        lid = max(1.2, iris_r * 0.28)
        cv.line(upper, (20, 18, 22), lid)
        cv.line(lower, scaled(skin, 0.6), max(1.0, lid * 0.45))
        crease = cam.project(e3[[0, 1, 2, 3]] + [0, -0.42, 0.05])
        cv.line(curve(crease, 12), scaled(skin, 0.75), max(1.0, lid * 0.4))

    # Nose: nostrils, tip highlight, bridge line on the shadow side.
    nostril_colour = scaled(skin, 0.3)
    for a, b in ((31, 32), (35, 34)):
        p = cam.project((lm3[a] * 0.45 + lm3[b] * 0.55 + [0, 0.05, 0])[None])[0]
        r = cam.focal * 0.36 * ident.nose_width / CAMERA_DISTANCE_CM
        cv.ellipse(p, (r, r * 0.55), 0.0, nostril_colour)
    wing = cam.project(np.vstack([lm3[[31]] + [-0.1, -0.6, -0.2], lm3[[31]],
                                  lm3[[32]] + [0, 0.1, 0]]))
    cv.line(curve(wing, 10), scaled(skin, 0.55), 1.5)
    wing = cam.project(np.vstack([lm3[[35]] + [0.1, -0.6, -0.2], lm3[[35]],
                                  lm3[[34]] + [0, 0.1, 0]]))
    cv.line(curve(wing, 10), scaled(skin, 0.55), 1.5)
    tip = cam.project(lm3[[30]] + [0, -0.2, 0.1])[0]
    r = cam.focal * 0.35 / CAMERA_DISTANCE_CM
    cv.ellipse(tip, (r, r * 0.8), 0.0, mixed(skin, (255, 255, 255), 0.1))

    # Mouth: inner mouth, teeth, lips.
    outer = cam.project(lm3[48:60])
    inner = cam.project(lm3[60:68])
    upper_lip = np.vstack([curve(outer[0:7], 24), curve(inner[[4, 3, 2, 1, 0]], 16)])
    lower_lip = np.vstack([curve(outer[[6, 7, 8, 9, 10, 11, 0]], 24),
                           curve(inner[[0, 7, 6, 5, 4]], 16)])
    gap = np.linalg.norm(lm3[66] - lm3[62])
    if gap > 0.15:
        mouth = np.vstack([curve(inner[[0, 1, 2, 3, 4]], 16), curve(inner[[4, 5, 6, 7, 0]], 16)])
        cv.poly(mouth, (35, 30, 60))
        teeth3 = np.vstack([lm3[61:64] + [0, 0.05, -0.1],
                            lm3[[63, 62, 61]] + [0, min(0.5, gap * 0.45), -0.1]])
        cv.poly(cam.project(teeth3), (215, 225, 230))
    cv.poly(upper_lip, scaled(ident.lip, 0.9))
    cv.poly(lower_lip, ident.lip)
    cv.line(curve(inner[[0, 1, 2, 3, 4]], 16), scaled(ident.lip, 0.45), 1.2)

    _composite(frame, cv, light, lm, head_outline)


def _composite(frame: np.ndarray, cv: Canvas, light: Lighting, lm: np.ndarray,
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

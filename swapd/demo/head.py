"""The head in 3D and the camera: pose, expression, projection (the painter's geometry).

Pose convention (degrees, camera frame x right, y down, z toward the camera): positive yaw turns
the nose toward the image right, positive pitch lifts the nose (looking up), positive roll turns
the face clockwise in the image. The rotation is R = Rz(roll) @ Rx(pitch) @ Ry(yaw). The head
turns about a point inside the skull (``PIVOT``) and is seen by a pinhole camera
``CAMERA_DISTANCE_CM`` away.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from swapd.demo.identity import Expression, Identity

CAMERA_DISTANCE_CM = 55.0
PIVOT = np.array([0.0, 3.0, -6.0])  # the head turns about a point inside the skull


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rz(roll) @ Rx(pitch) @ Ry(yaw), angles in degrees (see the module docstring)."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def expressed(points: np.ndarray, expr: Expression, identity: Identity) -> np.ndarray:
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


class Camera:
    """Pose + pinhole projection of head-frame points to frame pixels."""

    def __init__(self, rotation: np.ndarray, focal: float, centre: tuple[float, float]) -> None:
        self.rotation = rotation
        self.focal = focal
        self.centre = np.asarray(centre, dtype=np.float64)

    def to_camera(self, pts: np.ndarray) -> np.ndarray:
        return (pts - PIVOT) @ self.rotation.T

    def project(self, pts: np.ndarray) -> np.ndarray:
        cam = self.to_camera(np.asarray(pts, dtype=np.float64).reshape(-1, 3))
        depth = CAMERA_DISTANCE_CM - cam[:, 2]
        return self.centre + self.focal * cam[:, :2] / depth[:, None]

    def facing(self, normals: np.ndarray) -> np.ndarray:
        """z of rotated normals: > 0 where a surface faces the camera."""
        return normals @ self.rotation[2]


def ellipsoid(centre: Sequence[float], radii: Sequence[float], n_lat: int = 14,
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

"""Which of the face mesh's 468 points stands for each of the 68 (faceswap's, dlib's layout).

The 68-point layout (iBUG 300-W, as faceswap, DeepFaceLab and dlib use it; image left is the
subject's right): jaw 0-16 from the image left through the chin (8) to the image right, brows
17-21 and 22-26 (outer to inner, inner to outer), nose bridge 27-30 (top to tip), nostrils
31-35, eyes 36-41 and 42-47 (each from the corner on the image left, clockwise: upper lid
first), outer lips 48-59 and inner lips 60-67 (from the corner on the image left, upper lip
first).

How the table was made: each part is a walk along the named contour of MediaPipe's face mesh
(``mediapipe/python/solutions/face_mesh_connections.py`` in the same mediapipe 0.10.21 wheel,
Apache-2.0: FACEMESH_FACE_OVAL, _LIPS, _RIGHT_EYE / _LEFT_EYE with their upper-lid halves,
_RIGHT_EYEBROW / _LEFT_EYEBROW, _NOSE), taking the vertices that fall where the 68-point layout
puts its points: corners at corners, the lids' points at a third and two thirds. Each brow
point lies midway between a vertex of the brow's upper edge and the one below it on its lower
edge (:data:`BROW_LOWER`): the upper edge alone sat 0.15 (truth) and 0.13 (dlib) inter-ocular
distances from the synthetic faces' truth and from dlib's points, the midline 0.12 from each
(30 faces); neither reference alone decided it. The jaw's 9 points per side are spread evenly
by arc length from the ear (127 / 356, at eye height) to the chin (152), as the 68-point
layout spaces them: of the oval's 12 vertices per side, the one nearest each eighth of the
way, by arc length measured on the model's own output for five frontal faces (127 0, 234 0.10,
93 0.19, 132 0.30, 58 0.42, 172 0.52, 136 0.61, 150 0.70, 149 0.77, 176 0.84, 148 0.91,
152 1), mirrored for the other side. The table was then checked, not fitted, against the
ground truth of swapd's synthetic faces and against dlib on the same frames
(docs/benchmarks.md). It resembles public correspondences (PeizhiYan/Mediapipe_2_Dlib_Landmarks,
which also averages vertex pairs) but was not copied from them.
MediaPipe's "left" is the subject's left (image right).
"""

from __future__ import annotations

import numpy as np

MESH_TO_68: tuple[int, ...] = (
    # jaw 0-16: the face oval from the ear on the image left, through the chin (152)
    127, 234, 132, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 361, 454, 356,
    # brows 17-21 (image left, outer -> inner) and 22-26 (inner -> outer): upper edges (each
    # averaged with the lower-edge vertex of BROW_LOWER)
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge 27-30 (nasion -> tip) and nostrils 31-35 (image left -> right)
    168, 197, 5, 4, 98, 97, 2, 326, 327,
    # eye on the image left 36-41: outer corner, upper lid, inner corner, lower lid
    33, 160, 158, 133, 153, 144,
    # eye on the image right 42-47: inner corner, upper lid, outer corner, lower lid
    362, 385, 387, 263, 373, 380,
    # outer lips 48-59: corner, upper lip to the other corner, lower lip back
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    # inner lips 60-67: corner, upper, corner, lower
    78, 81, 13, 311, 308, 402, 14, 178,
)
assert len(MESH_TO_68) == 68 and len(set(MESH_TO_68)) == 68
# The brows' lower edges (FACEMESH_RIGHT_EYEBROW / _LEFT_EYEBROW), in the order of 17-26.
BROW_LOWER: tuple[int, ...] = (46, 53, 52, 65, 55, 285, 295, 282, 283, 276)


def mesh_to_68(mesh: np.ndarray) -> np.ndarray:
    """The 68 points (68 x 2) of a 468-point face mesh (468 x 2 or 468 x 3)."""
    mesh = np.asarray(mesh)
    if mesh.ndim != 2 or mesh.shape[0] != 468:
        raise ValueError(f"expected a 468-point mesh, got shape {mesh.shape}")
    points = mesh[list(MESH_TO_68), :2].astype(np.float64)
    points[17:27] = (points[17:27] + mesh[list(BROW_LOWER), :2]) / 2
    return points

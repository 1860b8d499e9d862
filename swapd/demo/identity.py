"""Who the demo paints, and how they look at one moment: an identity, an expression, a light.

An :class:`Identity` is a seeded set of looks (head shape, skin, hair, eyes, brows, nose, mouth)
plus small offsets of the 68 3D landmarks of ``MEAN_FACE_3D``; the same seed always gives the
same person. ``DEMO_A`` and ``DEMO_B`` are the two people of ``swapd demo``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from swapd.demo.colours import (
    BGR,
    CLOTHES_COLOURS,
    EYE_COLOURS,
    HAIR_COLOURS,
    LIP_COLOURS,
    SKIN_TONES,
)
from swapd.faces.landmarks import MEAN_FACE_3D

HAIR_STYLES = ("short", "long", "bob", "curly", "fringe", "bald")


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

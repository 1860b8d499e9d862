"""Colours of the demo's synthetic people: BGR palettes to draw looks from, colour arithmetic."""

from __future__ import annotations

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


def scaled(colour: BGR, k: float) -> BGR:
    """``colour`` darkened (k < 1) or brightened (k > 1), clipped to 0..255."""
    return tuple(min(255, max(0, int(c * k))) for c in colour)  # type: ignore[return-value]


def mixed(a: BGR, b: BGR, t: float) -> BGR:
    """``a`` moved toward ``b`` by ``t`` (0: a, 1: b)."""
    return tuple(int(a[i] * (1 - t) + b[i] * t) for i in range(3))  # type: ignore[return-value]

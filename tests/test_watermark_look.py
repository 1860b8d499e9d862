"""How the mark looks on flat areas: its rounding to whole grey levels is dithered, so a flat
or gently shaded frame shows no straight one-level steps along the mark's cell grid (what
plain rounding drew, visible in a 400 % crop), while the change keeps its local mean."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from swapd.merger.watermark import AMP_FLAT, _unit_pattern, detect, embed

H, W = 720, 1280


def straight_step_share(change: np.ndarray, run: int = 12) -> float:
    """Share of positions on a straight one-level step edge at least *run* pixels long, along
    rows or columns: the crisp cell-grid edges that plain rounding of a smooth pattern makes."""
    shares = []
    for plane in (change, change.T):
        edge = (plane[1:] != plane[:-1]).astype(np.int32)
        total = np.cumsum(np.pad(edge, ((0, 0), (1, 0))), axis=1)
        shares.append(float(((total[:, run:] - total[:, :-run]) == run).mean()))
    return max(shares)


def flat_frames() -> dict[str, np.ndarray]:
    ramp = np.linspace(70, 190, W, dtype=np.float32)[None, :].repeat(H, 0)
    return {"grey": np.full((H, W, 3), 128, np.uint8),
            "dark": np.full((H, W, 3), 40, np.uint8),
            "gentle_ramp": cv2.merge([ramp.astype(np.uint8)] * 3)}


@pytest.mark.parametrize("name", list(flat_frames()))
def test_flat_areas_carry_no_straight_steps(name: str) -> None:
    frame = flat_frames()[name]
    change = embed(frame)[..., 1].astype(np.int16) - frame[..., 1].astype(np.int16)
    assert np.abs(change).max() <= AMP_FLAT + 1  # the peak stays where rounding put it
    # plain rounding of the same pattern puts ~1.7 % of positions on such steps
    assert straight_step_share(change) < 0.0005, straight_step_share(change)
    # dithered, not lost: 8x8 block means of the change follow the unrounded mark
    def blocks(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image.astype(np.float32), (W // 8, H // 8), interpolation=cv2.INTER_AREA)

    error = blocks(change) - blocks(_unit_pattern(H, W) * AMP_FLAT)
    assert float(np.sqrt(np.mean(error**2))) < 0.1
    assert detect([embed(frame)]).marked


def test_plain_rounding_would_draw_straight_steps() -> None:
    """The measure above is not blind: the former embedding (the same mark, rounded) fails it."""
    rounded = np.round(_unit_pattern(H, W) * AMP_FLAT).astype(np.int16)
    assert straight_step_share(rounded) > 0.005

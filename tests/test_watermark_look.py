"""How the mark looks on flat areas: its rounding to whole grey levels is dithered, so a flat
or gently shaded frame shows no straight one-level steps along the mark's cell grid (what
plain rounding drew, visible in a 400 % crop), while the change keeps its local mean; and
after the merger's H.264 encode a smooth area changes by 1.16 grey levels on average (the
+-2 flat-area mark of the first v2 embedding: 1.53, a mottling a 400 % crop showed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.demo.painter import make_background
from swapd.media import ffmpeg_exe
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


def through_merger_encode(frame: np.ndarray, path: Path) -> np.ndarray:
    """*frame* as the merger writes it (H.264 CRF 18, veryfast, 3 frames), decoded again."""
    cmd = [ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
           "-s", f"{W}x{H}", "-r", "25", "-i", "-", "-c:v", "libx264", "-crf", "18",
           "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, input=frame.tobytes() * 3, check=True, timeout=120)
    ok, decoded = cv2.VideoCapture(str(path)).read()
    assert ok, path
    return decoded


def test_smooth_area_after_h264_changes_little(tmp_path: Path) -> None:
    """The smoothest 120 x 120 area of a painted backdrop (a flat dark red), marked and not,
    each through the merger's encode: the mean change stays under 1.25 grey levels (1.16;
    the first v2 embedding: 1.53; the benchmark's 400 % crop of the same area,
    watermark_smooth_crop_400.png, is looked at)."""
    frame = make_background((W, H), 3)
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
    _, y, x = min((float(grey[y:y + 120, x:x + 120].std()), y, x)
                  for y in range(0, H - 119, 40) for x in range(0, W - 119, 40))
    source = through_merger_encode(frame, tmp_path / "source.mp4")
    marked = through_merger_encode(embed(frame), tmp_path / "marked.mp4")
    change = np.abs(marked.astype(float) - source.astype(float))[y:y + 120, x:x + 120]
    assert float(change.mean()) < 1.25, float(change.mean())
    assert detect([marked]).marked  # weaker there, still found in the frame

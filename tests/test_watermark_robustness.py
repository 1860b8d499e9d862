"""The watermark where a copy travels: a real 1280x720 merged clip, attacked by real ffmpeg
re-encodes (each alone, and each chained with H.264 CRF 28 and every tag stripped), still
verifies as marked; the same attacks on the unmerged source never do.

Every frame is synthetic (swapd.demo's painted identity); every encode is the real ffmpeg.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import pytest

from swapd.media import ffmpeg_exe
from swapd.merger.merge import merge_file
from swapd.merger.provenance import verify_file
from swapd.merger.watermark import Z_THRESHOLD
from tests.support import require_tools
from tests.test_merger import export_model

SIZE = (1280, 720)
STRIP_AND_CRF28 = ["-map_metadata", "-1", "-c:v", "libx264", "-preset", "veryfast",
                   "-crf", "28", "-pix_fmt", "yuv420p", "-an"]

# name -> ffmpeg options placed before the CRF 28 encode (filters, trims, rates)
ATTACKS: dict[str, list[str]] = {
    "crf28_only": [],
    "scale_75": ["-vf", "scale=trunc(iw*0.75/2)*2:-2"],
    "scale_50": ["-vf", "scale=trunc(iw*0.5/2)*2:-2"],
    "scale_33": ["-vf", "scale=trunc(iw/3/2)*2:240"],
    "crop_left_10": ["-vf", "crop=trunc(iw*0.9/2)*2:ih:iw-trunc(iw*0.9/2)*2:0"],
    "crop_top_10": ["-vf", "crop=iw:trunc(ih*0.9/2)*2:0:ih-trunc(ih*0.9/2)*2"],
    "crop_all_sides_10": ["-vf", "crop=trunc(iw*0.8/2)*2:trunc(ih*0.8/2)*2"],
    "hflip": ["-vf", "hflip"],
    "rotate_plus_2": ["-vf", "rotate=2*PI/180"],
    "rotate_minus_2": ["-vf", "rotate=-2*PI/180"],
    "letterbox_4_3": ["-vf", "pad=iw:trunc(iw*3/4/2)*2:0:(oh-ih)/2:black"],
    "pillarbox_21_9": ["-vf", "pad=trunc(ih*21/9/2)*2:ih:(ow-iw)/2:0:black"],
    "fps_15": ["-vf", "fps=15"],
    "excerpt_2s": ["-ss", "0.5", "-t", "2"],
    "chain_scale50_crop_flip": ["-vf", "crop=trunc(iw*0.9/2)*2:trunc(ih*0.9/2)*2:0:0,hflip,"
                                       "scale=trunc(iw*0.5/2)*2:-2"],
}


def _ffmpeg(args: list[str]) -> None:
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", *args], check=True, timeout=300)


def attack(src: Path, name: str, out_dir: Path) -> Path:
    """``src`` re-encoded with attack ``name`` at CRF 28, without any metadata."""
    out = out_dir / f"{src.stem}.{name}.mp4"
    if not out.exists():
        opts = ATTACKS[name]
        seek = opts[:4] if opts[:1] == ["-ss"] else []
        _ffmpeg([*seek, "-i", str(src), *opts[len(seek):], *STRIP_AND_CRF28, str(out)])
    return out


def single_jpeg_frame(src: Path, out_dir: Path) -> Path:
    """One frame of ``src`` as a JPEG q75 at 50 % size (what a screenshot share does)."""
    png = out_dir / f"{src.stem}.frame.png"
    _ffmpeg(["-ss", "1.2", "-i", str(src), "-frames:v", "1", "-map_metadata", "-1", str(png)])
    frame = cv2.imread(str(png))
    half = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2),
                      interpolation=cv2.INTER_AREA)
    out = out_dir / f"{src.stem}.frame_half_q75.jpg"
    cv2.imwrite(str(out), half, [cv2.IMWRITE_JPEG_QUALITY, 75])
    return out


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3 s 1280x720 synthetic clip, and its merge (marked) by swapd's real merger."""
    require_tools("ffprobe")
    from swapd.demo.clip import write_clip
    from swapd.demo.identity import DEMO_A

    work = tmp_path_factory.mktemp("robust")
    source = work / "source.mp4"
    write_clip(source, DEMO_A, seconds=3.0, size=SIZE, fps=25, seed=11, save_truth=False)
    merged = merge_file(source, work / "out", export_model(work / "invert.onnx")).output_path
    attacked = work / "attacked"
    attacked.mkdir()
    return {"source": source, "merged": merged, "attacked": attacked}


def test_merged_clip_is_marked_by_both_marks(footage: dict[str, Path]) -> None:
    result = verify_file(footage["merged"])
    assert result.metadata_tag and result.watermark.marked and not result.disagree
    assert result.watermark.score > 2 * Z_THRESHOLD
    assert result.watermark.chance_if_unmarked < 1e-12


# The default run checks the hardest of each kind; the rest run with -m slow (~40 s more).
SLOW = {"crf28_only", "scale_75", "scale_50", "crop_left_10", "crop_top_10", "rotate_minus_2",
        "pillarbox_21_9", "fps_15"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in ATTACKS])
def test_attacked_copy_still_verifies(footage: dict[str, Path], name: str) -> None:
    copy = attack(footage["merged"], name, footage["attacked"])
    result = verify_file(copy)
    assert not result.metadata_tag  # stripped: the watermark alone must carry it
    assert result.watermark.marked, (name, result.watermark)
    assert result.marked and result.disagree


# The attack alone: what it does, encoded at the quality a careful re-encode keeps (CRF 18),
# its metadata kept as ffmpeg keeps it by default; the watermark must carry it all the same
ALONE = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-an"]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n != "scale_33"
                                  else n for n in ATTACKS if n != "crf28_only"])
def test_each_attack_alone_keeps_the_watermark(footage: dict[str, Path], name: str) -> None:
    opts = ATTACKS[name]
    seek = opts[:4] if opts[:1] == ["-ss"] else []
    copy = footage["attacked"] / f"alone.{name}.mp4"
    _ffmpeg([*seek, "-i", str(footage["merged"]), *opts[len(seek):], *ALONE, str(copy)])
    result = verify_file(copy)
    assert result.watermark.marked, (name, result.watermark)
    assert result.marked


def test_single_frame_jpeg_at_half_size_verifies(footage: dict[str, Path]) -> None:
    result = verify_file(single_jpeg_frame(footage["merged"], footage["attacked"]))
    assert result.kind == "image" and not result.metadata_tag
    assert result.watermark.marked, result.watermark


@pytest.mark.slow  # ~30 s of ffmpeg on 2 cores
def test_unmarked_versions_of_every_attacked_file_are_not_marked(
        footage: dict[str, Path]) -> None:
    """The same attacks on the source that swapd never touched: never reported marked."""
    scores = {}
    for name in ATTACKS:
        result = verify_file(attack(footage["source"], name, footage["attacked"]))
        scores[name] = result.watermark.score
        assert not result.marked and not result.watermark.marked, (name, result.watermark)
    frame = verify_file(single_jpeg_frame(footage["source"], footage["attacked"]))
    assert not frame.marked
    scores["frame_half_q75"] = frame.watermark.score
    # Far under the threshold, not merely under it (the threshold bounds the search's chance).
    assert max(scores.values()) < Z_THRESHOLD - 2, json.dumps(scores)

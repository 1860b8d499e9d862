"""Rotation tags and EXIF orientations: ``swapd verify`` searches a file's pixels as coded and,
when its tag turns them, as a player shows them too, with both views' hypotheses counted
(the threshold rises to keep the chance bound per file).

A tag added to a copy leaves its pixels, and the mark, where they were; a copy whose pixels
were turned and tagged to turn them back carries the mark turned, upright on screen. Every
video is encoded and tagged by the real ffmpeg, every image decoded by OpenCV.
"""

from __future__ import annotations

import math
import struct
import subprocess
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.media import display_turn, ffmpeg_exe, probe_media
from swapd.merger import provenance, watermark, watermark_search
from swapd.merger.provenance import verify_file
from swapd.merger.verdict import watermark_text
from swapd.merger.video_frames import sample_keyframes
from tests.test_watermark_detection import SIZE, encode, panning_backdrop

TWO_VIEWS = 2 * 3 * watermark_search.HYPOTHESES_PER_POOLING  # two views of three poolings


def tag_rotation(src: Path, degrees: int, dst: Path) -> Path:
    """A stream copy of *src* tagged to be shown turned *degrees* counter-clockwise.

    ffmpeg 6 and later tag with ``-display_rotation`` (counter-clockwise, an input option);
    before, with the stream's ``rotate`` tag, whose direction ffmpeg versions read
    differently, so the tag is checked with ffprobe and written the other way if needed."""
    tag = subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-display_rotation",
                          str(degrees), "-i", str(src), "-c", "copy", str(dst)],
                         capture_output=True, timeout=120)
    if tag.returncode == 0:
        return dst
    for value in (-degrees % 360, degrees % 360):
        subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-i", str(src), "-c", "copy",
                        "-metadata:s:v:0", f"rotate={value}", str(dst)], check=True,
                       timeout=120)
        if turn_of(dst) == degrees % 360:
            return dst
    raise AssertionError(f"ffmpeg could not tag a turn of {degrees} degrees")


def turn_of(path: Path) -> int:
    """What :func:`swapd.media.display_turn` reads from ffprobe for *path*."""
    return display_turn(probe_media(path)["streams"][0])


def decoded(path: Path, autorotate: bool) -> np.ndarray:
    """The first frame as the ffmpeg program decodes it, turned as players turn it or not."""
    stream = probe_media(path)["streams"][0]
    w, h = int(stream["width"]), int(stream["height"])
    if autorotate and display_turn(stream) % 180:
        w, h = h, w
    flag = [] if autorotate else ["-noautorotate"]
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", *flag, "-i", str(path), "-frames:v",
                          "1", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
                         capture_output=True, check=True, timeout=120).stdout
    return np.frombuffer(raw, np.uint8).reshape(h, w, 3)


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_the_turn_read_from_ffprobe_is_the_one_ffmpeg_shows(tmp_path: Path,
                                                            degrees: int) -> None:
    """``display_turn`` and the turn verify applies give exactly the frame ffmpeg's own
    autorotation shows (a lossless clip with a white corner, so every pixel compares)."""
    frame = np.zeros((64, 96, 3), np.uint8)
    frame[:16, :24] = 255
    frame[40:, 80:] = (0, 0, 255)
    src = tmp_path / "src.mp4"  # lossless RGB H.264: every pixel decodes as written
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
                    "-s", "96x64", "-r", "25", "-i", "-", "-frames:v", "1", "-c:v",
                    "libx264rgb", "-qp", "0", "-pix_fmt", "bgr24", str(src)],
                   input=frame.tobytes(), check=True, timeout=120)
    tagged = tag_rotation(src, degrees, tmp_path / "tagged.mp4")
    assert turn_of(tagged) == degrees
    coded, shown = decoded(tagged, autorotate=False), decoded(tagged, autorotate=True)
    turn = provenance._turned(degrees)
    assert turn is not None
    np.testing.assert_array_equal(coded, frame)
    np.testing.assert_array_equal(turn(coded), shown)


def test_a_rotation_tag_does_not_turn_the_mark(tmp_path: Path) -> None:
    """A copy tagged to play turned by 90 degrees, its pixels untouched: the mark is where it
    was, in the frames as coded (OpenCV turned the frames upright before December 2026, and
    the mark with them: 4.9). Both views are searched, and both count."""
    marked = encode([watermark.embed(f) for f in panning_backdrop(6)], tmp_path / "m.mp4")
    rotated = tag_rotation(marked, 90, tmp_path / "rotated.mp4")
    assert cv2.VideoCapture(str(rotated)).get(cv2.CAP_PROP_ORIENTATION_META)
    assert [k.shape for k in sample_keyframes(rotated)] == [(SIZE[1], SIZE[0], 3)]
    found = verify_file(rotated).watermark
    assert found.marked and found.geometry["view"] == watermark.AS_CODED, found
    assert found.hypotheses == TWO_VIEWS and found.threshold == 8.5


@pytest.mark.parametrize("degrees", [90, 180])
def test_pixels_turned_and_tagged_back_are_searched_as_shown(tmp_path: Path,
                                                             degrees: int) -> None:
    """A copy whose pixels were turned (clockwise) and tagged so that players turn them back
    upright: the mark is found in the frames as shown, and not in them as coded (what verify
    searched alone before)."""
    code = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180}[degrees]
    frames = [cv2.rotate(watermark.embed(f), code) for f in panning_backdrop(6, frames=12)]
    turned = encode(frames, tmp_path / "turned.mp4")
    tagged = tag_rotation(turned, degrees, tmp_path / "tagged.mp4")
    assert watermark.detect(frames).score < watermark.Z_THRESHOLD  # as coded: not found
    found = verify_file(tagged).watermark
    assert found.marked and found.geometry["view"] == watermark.AS_DISPLAYED, found
    assert found.hypotheses == TWO_VIEWS and found.threshold == 8.5
    assert "as displayed" in watermark_text(found)
    untagged = verify_file(turned).watermark  # no tag: one view, and the turned mark is lost
    assert not untagged.marked and "view" not in untagged.geometry
    assert untagged.hypotheses == TWO_VIEWS // 2 and untagged.threshold == 8.4


def exif_orientation(orientation: int) -> bytes:
    """A little-endian TIFF block with one IFD entry: Orientation (0x0112)."""
    return (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
            + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0))


def jpeg_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """*image* as a JPEG (q90) with an APP1 Exif segment holding *orientation*."""
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    payload = b"Exif\x00\x00" + exif_orientation(orientation)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _riff_chunk(tag: bytes, payload: bytes) -> bytes:
    return tag + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) % 2)


def webp_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """*image* as a lossless WebP in the extended format: a VP8X header saying it carries
    EXIF, the image's VP8L chunk, and an EXIF chunk (bare TIFF, as the WebP spec has it)."""
    simple = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    assert simple[12:16] == b"VP8L"
    h, w = image.shape[:2]
    vp8x = _riff_chunk(b"VP8X", bytes([0x08, 0, 0, 0]) + (w - 1).to_bytes(3, "little")
                       + (h - 1).to_bytes(3, "little"))
    body = b"WEBP" + vp8x + simple[12:] + _riff_chunk(b"EXIF", exif_orientation(orientation))
    return b"RIFF" + struct.pack("<I", len(body)) + body


def png_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """*image* as a PNG with an ``eXIf`` chunk (bare TIFF) after its header, before IDAT."""
    png = cv2.imencode(".png", image)[1].tobytes()
    header_end = 8 + 4 + 4 + 13 + 4  # the signature, then IHDR: length, type, data, CRC
    data = exif_orientation(orientation)
    chunk = (struct.pack(">I", len(data)) + b"eXIf" + data
             + struct.pack(">I", zlib.crc32(b"eXIf" + data)))
    return png[:header_end] + chunk + png[header_end:]


# EXIF orientation -> what turns a picture into the pixels to store so that a viewer,
# applying the orientation, shows the picture upright
UNDO = {3: lambda im: cv2.rotate(im, cv2.ROTATE_180),
        6: lambda im: cv2.rotate(im, cv2.ROTATE_90_COUNTERCLOCKWISE),
        8: lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE),
        5: lambda im: np.ascontiguousarray(im.transpose(1, 0, 2))}  # a mirrored one


@pytest.mark.parametrize("orientation", sorted(UNDO))
def test_an_exif_orientation_is_searched_both_ways(tmp_path: Path, orientation: int) -> None:
    """A JPEG whose EXIF orientation turns it: found whether the mark is in the coded pixels
    (a tag added to a marked image) or upright on screen (pixels turned, tagged to turn
    back); OpenCV's decode turned it before, which lost the first. An image's two views
    search fewer hypotheses than a video's three poolings: the threshold stays 8.4."""
    marked = watermark.embed(panning_backdrop(3, frames=1)[0])
    tagged = tmp_path / "tagged.jpg"
    tagged.write_bytes(jpeg_with_orientation(marked, orientation))
    shown = cv2.imread(str(tagged))
    assert shown.shape != marked.shape or not np.array_equal(shown, cv2.imread(
        str(tagged), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION))  # OpenCV applies it
    found = verify_file(tagged).watermark
    assert found.marked and found.geometry["view"] == watermark.AS_CODED, found
    assert found.hypotheses == 2 * watermark_search.HYPOTHESES_PER_POOLING
    assert found.threshold == watermark.Z_THRESHOLD

    turned = tmp_path / "turned.jpg"
    turned.write_bytes(jpeg_with_orientation(UNDO[orientation](marked), orientation))
    found = verify_file(turned).watermark
    assert found.marked and found.geometry["view"] == watermark.AS_DISPLAYED, found


@pytest.mark.parametrize("suffix", [".webp", ".png"])
def test_a_webp_or_png_orientation_and_orientation_1(tmp_path: Path, suffix: str) -> None:
    """A WebP's EXIF chunk and a PNG's eXIf (neither with the ``Exif`` prefix of a JPEG's)
    are read too; orientation 1 turns nothing, so one view is searched, as before."""
    marked = watermark.embed(panning_backdrop(4, frames=1)[0])
    write = webp_with_orientation if suffix == ".webp" else png_with_orientation
    turned = tmp_path / f"turned{suffix}"
    turned.write_bytes(write(UNDO[6](marked), 6))
    found = verify_file(turned).watermark
    assert found.marked and found.geometry["view"] == watermark.AS_DISPLAYED, found

    upright = tmp_path / "upright.jpg"
    upright.write_bytes(jpeg_with_orientation(marked, 1))
    found = verify_file(upright).watermark
    assert found.marked and "view" not in found.geometry
    assert found.hypotheses == watermark_search.HYPOTHESES_PER_POOLING


def test_frames_of_two_sizes_count_both_searches() -> None:
    """An untagged file whose frames come in two sizes (a stream that changes resolution) is
    searched once per size: four poolings' hypotheses, more than a video's three, so the
    threshold is 8.5 (it was 8.4 whatever was searched, before December 2026)."""
    frames = panning_backdrop(5, frames=4)
    small = [cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA) for f in frames[2:]]
    found = watermark.detect([watermark.embed(f) for f in frames[:2]]
                             + [watermark.embed(f) for f in small])
    assert found.hypotheses == 4 * watermark_search.HYPOTHESES_PER_POOLING
    assert found.threshold == 8.5 and found.marked and "view" not in found.geometry


def test_the_threshold_keeps_the_bound_per_file() -> None:
    """More hypotheses searched, a higher threshold: the union bound at the threshold never
    exceeds the one the false-positive runs measured at 8.4 (three poolings)."""
    per = watermark_search.HYPOTHESES_PER_POOLING
    assert watermark.threshold_for(per) == watermark.threshold_for(3 * per) == 8.4
    thresholds = [watermark.threshold_for(k * watermark.HYPOTHESES) for k in (2, 3, 4, 8)]
    assert thresholds == sorted(thresholds) and thresholds[0] == 8.5
    for k, t in zip((2, 3, 4, 8), thresholds, strict=True):
        bound = k * watermark.HYPOTHESES * math.exp(-t * t / 2)
        assert bound <= watermark.FALSE_ALARM_BOUND
        looser = t - 0.1  # the next tenth down would break it
        assert k * watermark.HYPOTHESES * math.exp(-looser * looser / 2) > \
            watermark.FALSE_ALARM_BOUND


@pytest.mark.parametrize(("stream", "turn"), [
    ({"side_data_list": [{"rotation": -90}]}, 270),
    ({"side_data_list": [{"rotation": 90}], "tags": {"rotate": "270"}}, 90),
    ({"side_data_list": [{"side_data_type": "Display Matrix", "rotation": 180}]}, 180),
    ({"tags": {"rotate": "90"}}, 270),
    ({"tags": {"rotate": "-180"}}, 180),
    ({"side_data_list": [{"rotation": -89.9}]}, 270),
    ({"tags": {"rotate": "sideways"}}, 0),
    ({"tags": {"rotate": "inf"}}, 0),
    ({"side_data_list": [{"rotation": 1e400}]}, 0),
    ({}, 0),
])
def test_display_turn_reads_either_tag(stream: dict, turn: int) -> None:
    """The display matrix first (counter-clockwise), else the old tag (clockwise); a value
    that is not a number shows the frames as coded."""
    assert display_turn(stream) == turn

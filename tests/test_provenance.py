"""Provenance: watermark robustness and false positives, metadata tags, verify_file.

Every frame is synthetic and made here; every encode uses the real ffmpeg binary.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.media import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    UnreadableMediaError,
    ffmpeg_exe,
    ffprobe_exe,
    probe_media,
)
from swapd.merger import video_frames, watermark
from swapd.merger.metadata_tag import (
    PROVENANCE_TEXT,
    ffmpeg_metadata_args,
    read_metadata_tag,
    tag_image,
    tag_video,
)
from swapd.merger.provenance import verify_file
from swapd.merger.watermark import (
    AMP_TEXTURE,
    HEADROOM,
    Z_THRESHOLD,
    WatermarkError,
    detect,
    embed,
)

W, H = 640, 360
FPS = 24
# The best of 3.8 (image) or 7.7 (video) million hypotheses on unmarked content is typically
# 4.5-5.5 (the maximum of that many correlated N(0, 1) scores); the threshold is set from the
# union bound above that.
UNMARKED_MAX = Z_THRESHOLD - 2


# --- synthetic content ------------------------------------------------------------------


def pink_noise(seed: int, h: int, w: int, alpha: float = 1.0, std: float = 40.0) -> np.ndarray:
    """Grey 1/f^alpha noise (natural-image-like spectrum) as uint8 BGR."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.fft2(rng.normal(size=(h, w)))
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    radius = np.hypot(fx, fy)
    radius[0, 0] = 1.0
    img = np.real(np.fft.ifft2(spectrum / radius**alpha))
    img = (img - img.mean()) / img.std() * std + 128
    return cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def textured_canvas(seed: int = 0, h: int = H + 60, w: int = W + 240) -> np.ndarray:
    """A colourful synthetic 'scene': waves, shapes, 1/f texture and sensor-like noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack(
        [
            90 + 50 * np.sin(xx / 37.0),
            110 + 45 * np.cos(yy / 29.0),
            120 + 40 * np.sin((xx + yy) / 23.0),
        ],
        axis=-1,
    )
    img += pink_noise(seed, h, w, alpha=1.2, std=18).astype(np.float32) - 128
    canvas = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(30):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            cv2.circle(canvas, centre, int(rng.integers(6, 60)), colour, -1)
        else:
            size = rng.integers(10, 90, 2)
            cv2.rectangle(canvas, centre, (centre[0] + int(size[0]), centre[1] + int(size[1])),
                          colour, -1)  # fmt: skip
    noise = rng.normal(0, 4, canvas.shape)
    return np.clip(canvas + noise, 0, 255).astype(np.uint8)


def panning_clip(n_frames: int, seed: int = 0) -> list[np.ndarray]:
    """Frames panning over a textured canvas (moving content, like real footage)."""
    canvas = textured_canvas(seed)
    offsets = [(t % 60, (2 * t) % 240) for t in range(n_frames)]
    return [canvas[y : y + H, x : x + W].copy() for y, x in offsets]


def unmarked_kinds() -> dict[str, np.ndarray]:
    """Several kinds of content that never saw the watermark."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:H, 0:W]
    shapes = np.full((H, W, 3), 200, np.uint8)
    for _ in range(40):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        pts = rng.integers(0, [W, H], (5, 2)).astype(np.int32)
        cv2.fillPoly(shapes, [pts], colour)
    gradient = np.stack([xx * 255 // W, yy * 255 // H, (xx + yy) * 255 // (W + H)], -1)
    return {
        "flat": np.full((H, W, 3), 128, np.uint8),
        "black": np.zeros((H, W, 3), np.uint8),
        "gradient": gradient.astype(np.uint8),
        "noise": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        "shapes": shapes,
        "pink": pink_noise(3, H, W),
        "scene": textured_canvas(11)[:H, :W].copy(),
        # a tiling of 8x8 squares: block-aligned structure at the mark's own scale
        "checker": ((((yy // 8) + (xx // 8)) % 2) * 255).astype(np.uint8)[..., None].repeat(3, -1),
    }


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


# --- ffmpeg helpers ---------------------------------------------------------------------


def write_mp4(frames: list[np.ndarray], path: Path, crf: int = 23, extra: list[str] = ()) -> Path:
    h, w = frames[0].shape[:2]
    cmd = [
        ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
        "-s", f"{w}x{h}", "-r", str(FPS), "-i", "-",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
        *extra, str(path),
    ]  # fmt: skip
    subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True)
    return path


def reencode(
    src: Path, dst: Path, crf: int, strip_metadata: bool = False, preset: str = "medium"
) -> Path:
    strip = ["-map_metadata", "-1"] if strip_metadata else []
    cmd = [
        ffmpeg_exe(), "-y", "-v", "error", "-i", str(src), *strip, "-c:v", "libx264",
        "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p", str(dst),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    return dst


def read_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert frames, f"could not read {path}"
    return frames


def stream_md5(path: Path) -> str:
    cmd = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v", "-c", "copy",
           "-f", "md5", "-"]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def jpeg_roundtrip(frame: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 5 s 640x360 marked clip (tagged, crf 23), re-encoded at crf 28, re-encoded with
    its metadata stripped, and a 2 s unmarked clip."""
    d = tmp_path_factory.mktemp("clips")
    raw = panning_clip(5 * FPS)
    marked = [embed(f) for f in raw]
    out = {
        "marked": write_mp4(marked, d / "marked.mp4", 23, ffmpeg_metadata_args(".mp4")),
        "unmarked": write_mp4(raw[: 2 * FPS], d / "unmarked.mp4", 23),
    }
    out["crf28"] = reencode(out["marked"], d / "crf28.mp4", 28)  # x264's default preset
    out["stripped"] = reencode(out["marked"], d / "stripped.mp4", 23, True, "veryfast")
    return out


# --- media helpers ----------------------------------------------------------------------


def test_media_tools_and_probe(clips: dict[str, Path], tmp_path: Path) -> None:
    assert os.access(ffmpeg_exe(), os.X_OK)
    info = probe_media(clips["unmarked"])
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"], video["codec_name"]) == (W, H, "h264")
    assert ".mp4" in VIDEO_SUFFIXES and ".png" in IMAGE_SUFFIXES
    bogus = tmp_path / "bogus.mkv"
    bogus.write_bytes(b"\x00" * 100)
    with pytest.raises(UnreadableMediaError, match="bogus.mkv"):
        probe_media(bogus)


def test_without_ffmpeg_on_path_uses_imageio_ffmpeg(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No system ffmpeg/ffprobe: the bundled ffmpeg reads tags, verify still works."""
    monkeypatch.setenv("PATH", str(tmp_path))
    exe = ffmpeg_exe()
    assert "imageio_ffmpeg" in exe and ffprobe_exe() is None
    subprocess.run([exe, "-version"], check=True, capture_output=True)
    _check_payload(read_metadata_tag(clips["marked"]))
    result = verify_file(clips["stripped"])
    assert not result.metadata_tag and result.marked
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    with pytest.raises(UnreadableMediaError, match="notes.mp4"):
        verify_file(notes)


# --- watermark: invisibility, determinism, shapes ---------------------------------------


# PSNR floor per kind: flat content carries the +-1.5 flat-area mark (47.5 dB; the +-2 of the
# first v2 embedding gave 45.4 dB); dense texture (1/f, noise: block std far above
# TEXTURE_REF) carries the full +-7 that it masks (34.8 dB; +-4.5 gave 39.0 dB before
# December 2026).
MIN_PSNR = {"scene": 38.0, "pink": 34.0, "noise": 34.0, "gradient": 47.0, "flat": 47.0,
            "shapes": 38.0}


@pytest.mark.parametrize("kind", list(MIN_PSNR))
def test_embed_is_invisible_and_deterministic(kind: str) -> None:
    frame = unmarked_kinds()[kind]
    marked = embed(frame)
    assert marked.shape == frame.shape and marked.dtype == np.uint8
    assert psnr(frame, marked) >= MIN_PSNR[kind]
    # up to AMP_TEXTURE, plus HEADROOM where a channel sat at 0 or 255
    assert np.abs(marked.astype(int) - frame.astype(int)).max() <= AMP_TEXTURE + HEADROOM
    # luminance only: B, G and R move together wherever no channel clipped
    diff = marked.astype(int) - frame.astype(int)
    inside = ((frame > 10) & (frame < 245)).all(axis=2)
    assert (diff[inside] == diff[inside][:, :1]).all()
    assert np.array_equal(embed(frame), marked)
    assert not np.array_equal(frame, marked)


def test_embed_frame_sizes_and_layouts() -> None:
    rng = np.random.default_rng(1)
    for h, w in [(64, 64), (101, 67), (720, 1280)]:
        frame = rng.integers(40, 216, (h, w, 3), dtype=np.uint8)
        assert embed(frame).shape == (h, w, 3)
    grey = textured_canvas(2)[:, :, 1].copy()
    bgra = cv2.cvtColor(textured_canvas(2), cv2.COLOR_BGR2BGRA)
    assert detect([embed(grey)]).marked
    marked_bgra = embed(bgra)
    assert np.array_equal(marked_bgra[..., 3], bgra[..., 3])
    assert detect([marked_bgra]).marked
    uhd = cv2.resize(textured_canvas(3), (3840, 2160))
    assert detect([embed(uhd)]).marked
    huge = cv2.resize(textured_canvas(4), (4500, 4600))  # larger than 4K both ways
    assert detect([embed(huge)]).marked
    assert detect([huge]).score < UNMARKED_MAX
    with pytest.raises(WatermarkError, match="smaller than 64x64"):
        embed(np.zeros((32, 80, 3), np.uint8))
    with pytest.raises(WatermarkError, match="uint8"):
        embed(np.zeros((80, 80, 3), np.float32))


def test_embed_speed_1280x720() -> None:
    frame = cv2.resize(textured_canvas(5), (1280, 720))
    timings = []
    for _ in range(10):
        start = time.perf_counter()
        embed(frame)
        timings.append(time.perf_counter() - start)
    best = min(timings)  # best of 10: the CPU is shared with other work
    assert best < 0.020, f"embed took {best * 1000:.1f} ms per 720p frame"


# --- watermark: detection survives re-encoding ------------------------------------------


def test_detect_raw_png_and_jpeg(tmp_path: Path) -> None:
    frame = textured_canvas(6)[:H, :W].copy()
    marked = embed(frame)
    raw = detect([marked])
    assert raw.marked and raw.frames_checked == 1 and raw.chance_if_unmarked < 1e-12
    png = tmp_path / "m.png"
    cv2.imwrite(str(png), marked)
    assert detect([cv2.imread(str(png))]).marked
    for quality in (95, 75):
        evidence = detect([jpeg_roundtrip(marked, quality)])
        assert evidence.marked, (quality, evidence)
        assert evidence.score > 1.5 * Z_THRESHOLD
    # a natural-image-like, strongly textured frame is the hard case for a single image
    hard = pink_noise(8, 720, 1280, alpha=1.0, std=40)
    assert detect([jpeg_roundtrip(embed(hard), 75)]).marked


def test_detect_after_h264_crf23_and_crf28(clips: dict[str, Path]) -> None:
    first = read_frames(clips["marked"])
    second = read_frames(clips["crf28"])
    for frames in (first, second):
        evidence = detect(frames)
        assert evidence.marked and evidence.frames_checked == len(frames)
        assert evidence.score > 1.5 * Z_THRESHOLD, evidence
        # The I-frame alone carries it; P-frames of panning content hold a drifted copy
        # (motion compensation moves the mark with the content), so evidence is pooled.
        assert detect(frames[:1]).marked
    assert detect(read_frames(clips["unmarked"])).score < UNMARKED_MAX


# --- watermark: unmarked content is not marked ------------------------------------------


def test_unmarked_frames_are_not_marked(tmp_path: Path) -> None:
    kinds = unmarked_kinds()
    scores = {}
    for name, frame in kinds.items():
        scores[name] = detect([frame]).score
        scores[f"{name}-jpeg75"] = detect([jpeg_roundtrip(frame, 75)]).score
    frames = [kinds[k] for k in ("shapes", "scene", "gradient", "pink")]
    encoded = read_frames(write_mp4([f for f in frames for _ in range(6)], tmp_path / "u.mp4", 28))
    scores["h264-crf28"] = detect(encoded).score
    scores["static-video"] = detect([kinds["scene"]] * 60).score  # identical frames
    assert max(scores.values()) < UNMARKED_MAX, scores
    assert detect([kinds["flat"]]).score == 0.0
    marked_scores = [detect([jpeg_roundtrip(embed(kinds[k]), 75)]).score
                     for k in ("shapes", "scene", "pink")]  # fmt: skip
    assert min(marked_scores[:2]) >= Z_THRESHOLD, (marked_scores, scores)
    # A single 640x360 image of dense 1/f texture is the scheme's weak spot (a known limit,
    # docs/benchmarks.md): above every unmarked score, though not always over the threshold.
    assert marked_scores[2] > UNMARKED_MAX, (marked_scores, scores)


def test_unmarked_scores_stay_under_the_search_bound() -> None:
    """The calibration behind the threshold: the best score of the whole search on random
    unmarked images sits where the maximum of millions of N(0, 1) scores does (~4.5-5.5),
    never near the threshold (benchmarks/watermark_robustness.py measures 2,000+ inputs)."""
    scores = np.array(
        [detect([pink_noise(100 + i, 180, 320, alpha=(0.3, 1.0, 1.7)[i % 3])]).score
         for i in range(24)]
    )  # fmt: skip
    assert 3.5 < scores.mean() < 6.0, scores
    assert scores.max() < UNMARKED_MAX, scores
    assert watermark.chance_if_unmarked(float(scores.max())) > 0.01  # "often reached"
    assert watermark.chance_if_unmarked(Z_THRESHOLD) < 1e-8
    assert not detect([]).marked and detect([]).frames_checked == 0


# --- metadata tags ----------------------------------------------------------------------


def _check_payload(payload: dict | None) -> None:
    assert payload is not None
    assert payload["tool"] == "swapd" and payload["synthetic"] is True
    assert payload["provenance"] == PROVENANCE_TEXT
    assert payload["watermark"] == watermark.SCHEME and payload["created"]


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_image_tag_roundtrip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"face{suffix}"
    cv2.imwrite(str(path), textured_canvas(9)[:120, :160])
    pixels = cv2.imread(str(path))
    os.chmod(path, 0o640)
    assert read_metadata_tag(path) is None
    tag_image(path, extra={"job": "alice_to_bob"})
    tag_image(path, extra={"job": "alice_to_bob"})  # re-tagging replaces, never duplicates
    payload = read_metadata_tag(path)
    _check_payload(payload)
    assert payload["job"] == "alice_to_bob"
    assert path.read_bytes().count(b"swapd-provenance") == 1
    assert np.array_equal(cv2.imread(str(path)), pixels)  # pixels untouched
    assert (path.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left
    result = verify_file(path)
    assert result.kind == "image" and result.metadata_tag and result.marked


def test_jpeg_tag_keeps_app_segments_first(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    cv2.imwrite(str(path), textured_canvas(9)[:80, :80])
    tag_image(path)
    data = path.read_bytes()
    assert data[:4] == b"\xff\xd8\xff\xe0"  # JFIF APP0 still right after SOI
    assert data.index(b"\xff\xfe") > data.index(b"JFIF")


def test_mp4_tag_from_ffmpeg_args(clips: dict[str, Path]) -> None:
    tags = probe_media(clips["marked"])["format"]["tags"]
    assert tags["comment"] == PROVENANCE_TEXT
    _check_payload(json.loads(tags["swapd_provenance"]))
    _check_payload(read_metadata_tag(clips["marked"]))
    assert read_metadata_tag(clips["unmarked"]) is None
    assert read_metadata_tag(clips["stripped"]) is None
    args = ffmpeg_metadata_args(".mp4", movflags=("+faststart",))
    assert args[args.index("-movflags") + 1] == "+use_metadata_tags+faststart"
    assert "-movflags" not in ffmpeg_metadata_args(".mkv")


def test_tag_video_remux(clips: dict[str, Path], tmp_path: Path) -> None:
    for suffix in (".mp4", ".mkv"):
        path = tmp_path / f"plain{suffix}"
        subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(clips["unmarked"]), "-c", "copy",
                        str(path)], check=True)  # fmt: skip
        before = stream_md5(path)
        tag_video(path, extra={"model": "lightweight"})
        payload = read_metadata_tag(path)
        _check_payload(payload)
        assert payload["model"] == "lightweight"
        assert stream_md5(path) == before  # video stream copied, not re-encoded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.mkv", "plain.mp4"]


# --- verify_file ------------------------------------------------------------------------


def test_verify_marked_unmarked_stripped_videos(clips: dict[str, Path]) -> None:
    start = time.process_time()  # CPU time: the test machine's cores are shared
    marked = verify_file(clips["marked"])
    elapsed = time.process_time() - start
    assert elapsed < 3.0, f"verify took {elapsed:.2f} s of CPU on a 5 s 640x360 clip"
    assert marked.kind == "video" and marked.metadata_tag and marked.watermark.marked
    assert marked.marked and marked.watermark.frames_checked == video_frames.MAX_VIDEO_FRAMES
    as_json = json.loads(marked.to_json())
    assert as_json["marked"] is True and as_json["watermark"]["score"] > Z_THRESHOLD

    stripped = verify_file(clips["stripped"])
    assert not stripped.metadata_tag and stripped.metadata is None
    assert stripped.watermark.marked and stripped.marked

    twice = verify_file(clips["crf28"])  # re-encoded again, tags kept by default
    assert twice.watermark.marked and twice.marked

    unmarked = verify_file(clips["unmarked"])
    assert not unmarked.metadata_tag and not unmarked.watermark.marked and not unmarked.marked
    assert unmarked.watermark.score < UNMARKED_MAX


def test_verify_long_video_decodes_a_window_and_its_keyframes(
    clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the decode budget a window of consecutive frames from the middle is decoded, and
    the keyframes apart (here: make every clip 'long'): as many frames as a short clip's."""
    short = verify_file(clips["stripped"])
    monkeypatch.setattr(video_frames, "_SEQUENTIAL_PIXEL_BUDGET", 0)
    stripped = verify_file(clips["stripped"])
    assert stripped.watermark.frames_checked >= video_frames.MAX_VIDEO_FRAMES // 2
    assert stripped.watermark.hypotheses == short.watermark.hypotheses  # three poolings
    assert stripped.watermark.marked and stripped.marked
    unmarked = verify_file(clips["unmarked"])
    assert unmarked.watermark.frames_checked >= 1 and not unmarked.marked


def test_verify_images_by_watermark_alone(tmp_path: Path) -> None:
    frame = textured_canvas(12)[:H, :W].copy()
    cv2.imwrite(str(tmp_path / "marked.jpg"), embed(frame), [cv2.IMWRITE_JPEG_QUALITY, 75])
    cv2.imwrite(str(tmp_path / "marked.png"), embed(frame))
    cv2.imwrite(str(tmp_path / "plain.png"), frame)
    cv2.imwrite(str(tmp_path / "plain.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 75])
    for name in ("marked.jpg", "marked.png"):
        result = verify_file(tmp_path / name)
        assert not result.metadata_tag and result.watermark.marked and result.marked, name
    for name in ("plain.png", "plain.jpg"):
        result = verify_file(tmp_path / name)
        assert not result.marked and result.watermark.score < UNMARKED_MAX, name


def test_verify_bad_files_name_the_file(clips: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    truncated = tmp_path / "truncated.mp4"
    data = clips["unmarked"].read_bytes()  # moov atom at the end: a cut file has none
    truncated.write_bytes(data[: len(data) // 2])
    bad_png = tmp_path / "broken.png"
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    cases = {
        empty: "empty",
        text: "not a readable media file",
        truncated: "not a readable media file",
        bad_png: "not a decodable image",
        tmp_path / "missing.jpg": "does not exist",
        tmp_path / "missing.mp4": "does not exist",
        text.with_name("notes.txt"): "unsupported file type",
    }
    text.with_name("notes.txt").write_text("hello")
    for path, reason in cases.items():
        with pytest.raises(UnreadableMediaError, match=reason) as info:
            verify_file(path)
        assert str(path) in str(info.value)
    with pytest.raises(UnreadableMediaError, match="broken.png"):
        tag_image(bad_png)
    with pytest.raises(UnreadableMediaError, match="can only tag PNG or JPEG"):
        tag_image(text)

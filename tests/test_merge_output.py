"""The merger's writers, checked with ffprobe: frame count, every frame's timestamp (a variable
frame rate kept), duration and audio as the source's; H.264, H.265 and VP9 in MP4; image
sequences in and out; faceswap's frame ranges; provenance marks on all of it.

Real ffmpeg, ffprobe, MTCNN and onnxruntime; the inverting test model of test_merger makes a
swapped face unmistakable.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.config import ConfigError, load_job_file, parse_frame_ranges
from swapd.demo.clip import ClipTruth, truth_path
from swapd.media import ffmpeg_exe, ffprobe_exe, probe_video, read_frames
from swapd.merger.frame_ranges import frame_number, in_ranges
from swapd.merger.merge import MergeOptions, Merger
from swapd.merger.metadata_tag import read_metadata_tag
from swapd.merger.provenance import verify_file
from tests.support import require_tools
from tests.test_merger import export_model, face_box


@pytest.fixture(autouse=True, scope="module")
def _needs_ffprobe() -> None:
    require_tools("ffprobe")


def probe(path: Path, kind: str, entries: str) -> list[dict]:
    out = subprocess.run([ffprobe_exe(), "-v", "error", "-select_streams", kind,
                          "-show_entries", entries, "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out).get("packets", [])


def video_pts(path: Path) -> list[int]:
    return sorted(int(p["pts"]) for p in probe(path, "v:0", "packet=pts"))


def audio_packets(path: Path) -> list[tuple[str, str, str]]:
    return [(p["pts"], p["duration"], p["size"])
            for p in probe(path, "a:0", "packet=pts,duration,size")]


def durations(path: Path) -> dict[str, str]:
    out = subprocess.run([ffprobe_exe(), "-v", "error", "-show_entries",
                          "format=duration:stream=codec_type,codec_name,duration,time_base",
                          "-of", "json", str(path)], capture_output=True, text=True,
                         check=True).stdout
    info = json.loads(out)
    found = {"format": info["format"]["duration"]}
    for stream in info["streams"]:
        found[stream["codec_type"]] = stream["duration"]
        found[f"{stream['codec_type']}_codec"] = stream["codec_name"]
        found[f"{stream['codec_type']}_time_base"] = stream["time_base"]
    return found


@pytest.fixture(scope="module")
def merger(tmp_path_factory: pytest.TempPathFactory) -> Merger:
    model = export_model(tmp_path_factory.mktemp("model") / "invert.onnx")
    return Merger(model, MergeOptions(device="cpu"))


def with_options(merger: Merger, **options: object) -> Merger:
    """The same loaded model and detector, other output options."""
    other = object.__new__(Merger)
    other.__dict__.update(merger.__dict__)
    other.options = MergeOptions(**{**merger.options.__dict__, **options})
    return other


@pytest.fixture(scope="module")
def vfr_clip(synthetic_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic clip re-timed to a variable frame rate: 25 fps for a second, then 12.5
    fps, with a 0.37 s pause (a phone's VFR), in an odd time base; the audio copied."""
    out = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    expr = "if(lt(N,25),N/25,1+(N-25)/12.5+if(gte(N,40),0.37,0))/TB"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(synthetic_clip),
                    "-vf", f"setpts='{expr}'", "-fps_mode", "passthrough",
                    "-video_track_timescale", "15360", "-c:v", "libx264", "-preset",
                    "ultrafast", "-c:a", "copy", str(out)], check=True)
    steps = {b - a for a, b in zip(video_pts(out), video_pts(out)[1:], strict=False)}
    assert len(steps) >= 3  # it is variable
    return out


def test_variable_frame_rate_kept_exactly(merger: Merger, vfr_clip: Path, tmp_path: Path
                                          ) -> None:
    result = merger.merge_file(vfr_clip, tmp_path)
    src, out = vfr_clip, result.output_path
    assert result.frames == len(video_pts(src)) == 50 and result.faces_swapped >= 45
    assert video_pts(out) == video_pts(src)  # every frame's time, to the tick
    theirs, ours = durations(src), durations(out)
    for key in ("format", "video", "audio", "video_time_base"):
        assert ours[key] == theirs[key], key
    assert audio_packets(out) == audio_packets(src)  # the audio as it was, packet by packet
    assert verify_file(out).marked


@pytest.mark.parametrize("codec", ["h265", "vp9"])
def test_codecs(merger: Merger, synthetic_clip: Path, tmp_path: Path, codec: str) -> None:
    result = with_options(merger, codec=codec, crf=30).merge_file(synthetic_clip, tmp_path)
    out = result.output_path
    assert out.suffix == ".mp4"
    found, source = durations(out), durations(synthetic_clip)
    assert found["video_codec"] == {"h265": "hevc", "vp9": "vp9"}[codec]
    assert len(video_pts(out)) == len(video_pts(synthetic_clip)) == result.frames
    assert abs(float(found["format"]) - float(source["format"])) < 0.03
    assert audio_packets(out) == audio_packets(synthetic_clip)
    check = verify_file(out)
    assert check.marked and check.metadata_tag


def test_a_crf_past_the_marks_limit_is_encoded_at_it(merger: Merger, synthetic_clip: Path,
                                                     tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """crf 45 asked for (a job file of an older swapd may say so): said, and encoded at 35,
    as x264's own settings in the file show, the watermark kept."""
    model = export_model(tmp_path / "invert.onnx")
    with caplog.at_level("WARNING", logger="swapd.merger.merge"):
        asked = Merger(model, MergeOptions(device="cpu", crf=45))
    assert "crf 45 is above 35" in caplog.text and "encoded at 35" in caplog.text
    result = with_options(merger, crf=45).merge_file(synthetic_clip, tmp_path)
    assert asked.options.encode_crf == 35
    assert b"crf=35.0" in result.output_path.read_bytes()  # x264's settings, in its SEI
    assert verify_file(result.output_path).watermark.marked


def test_frame_ranges_swap_only_inside(merger: Merger, synthetic_clip: Path, tmp_path: Path
                                       ) -> None:
    ranges = ((5, 12), (40, 44))
    result = with_options(merger, frame_ranges=ranges).merge_file(synthetic_clip, tmp_path)
    truth = ClipTruth.load(truth_path(synthetic_clip))
    before = list(read_frames(probe_video(synthetic_clip)))
    after = list(read_frames(probe_video(result.output_path)))
    assert len(after) == len(before) == 50
    assert result.faces_swapped == 13  # one face in each of the 13 frames inside
    for index, (old, new) in enumerate(zip(before, after, strict=True)):
        box = face_box(truth.landmarks[index], shrink=0.2)
        change = np.abs(new[box].astype(int) - old[box].astype(int)).mean()
        if any(a <= index + 1 <= b for a, b in ranges):
            assert change > 20, index  # the inverting model's face
        else:
            assert change < 6, index  # copied as it was (watermark and encoding only)
    check = verify_file(result.output_path)
    assert check.marked and check.metadata_tag


def test_image_sequence_in_and_out(merger: Merger, synthetic_clip: Path, tmp_path: Path
                                   ) -> None:
    folder = tmp_path / "shot"
    folder.mkdir()
    frames = list(read_frames(probe_video(synthetic_clip)))[:6]
    for n, frame in enumerate(frames, start=1):  # a mix, as exports from editors come
        suffix = ".png" if n % 2 else ".jpg"
        cv2.imwrite(str(folder / f"shot_{n:04d}{suffix}"), frame,
                    [cv2.IMWRITE_JPEG_QUALITY, 98])
    (folder / "notes.txt").write_text("not a frame")
    sequence = with_options(merger, image_format="jpeg", frame_ranges=((2, 4),))
    result = sequence.merge_file(folder, tmp_path / "out")
    out = tmp_path / "out" / "shot_swapd"
    assert result.output_path == out and result.frames == 6
    assert sorted(p.name for p in out.iterdir()) == [f"shot_{n:04d}.jpg" for n in range(1, 7)]
    truth = ClipTruth.load(truth_path(synthetic_clip))
    for n in range(1, 7):
        merged = cv2.imread(str(out / f"shot_{n:04d}.jpg"))
        box = face_box(truth.landmarks[n - 1], shrink=0.2)
        change = np.abs(merged[box].astype(int) - frames[n - 1][box].astype(int)).mean()
        assert (change > 20) == (2 <= n <= 4), n
        tag = read_metadata_tag(out / f"shot_{n:04d}.jpg")
        assert tag is not None and tag["synthetic"] and tag["sequence"] == "shot"
        assert verify_file(out / f"shot_{n:04d}.jpg").marked


def test_frame_numbers_as_faceswap_reads_them() -> None:
    assert frame_number("clip_000012.png") == 12
    assert frame_number("take2_0007.jpg") == 7  # the last number before the suffix
    assert frame_number("still.png") is None
    assert in_ranges(None, ((1, 2),)) and in_ranges(7, ()) and not in_ranges(3, ((1, 2),))


def test_bad_output_options_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="codec"):
        MergeOptions(codec="av1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="crf must be in 0..51 for h264"):
        MergeOptions(crf=60)
    assert MergeOptions(codec="vp9", crf=60).crf == 60
    # past these the encode itself wears the watermark away: encoded at them (config.MAX_CRF)
    assert [MergeOptions(codec=c, crf=n).encode_crf  # type: ignore[arg-type]
            for c, n in (("h264", 40), ("h265", 35), ("vp9", 60), ("vp9", 30))] == [35, 35, 55, 30]
    with pytest.raises(ValueError, match="preset"):
        MergeOptions(preset="quick")
    with pytest.raises(ValueError, match="'10' is not FIRST-LAST"):
        parse_frame_ranges(["10"])
    job = tmp_path / "job.toml"
    for bad, key in (('codec = "av1"', "merge.codec"), ('frame_ranges = ["9-3"]',
                                                        "merge.frame_ranges"),
                     ("crf = 55", "merge"), ("crf = 64", "merge.crf"),
                     ('image_format = "gif"', "merge.image_format")):
        job.write_text(f'[merge]\nfootage = "f"\nmodel = "m.onnx"\n{bad}\n')
        with pytest.raises(ConfigError) as caught:
            load_job_file(job)
        assert caught.value.first_key is not None and caught.value.first_key.startswith(key)


@pytest.mark.slow  # two whole merges (about 20 s)
def test_pipeline_writes_the_frames_the_sequential_path_writes(
        merger: Merger, synthetic_clip: Path, tmp_path: Path) -> None:
    """Detection a batch ahead in a thread (the default) changes nothing in the output."""
    piped = with_options(merger, pipeline=True, frame_ranges=((3, 30),))
    plain = with_options(merger, pipeline=False, frame_ranges=((3, 30),))
    first = piped.merge_file(synthetic_clip, tmp_path / "piped")
    second = plain.merge_file(synthetic_clip, tmp_path / "plain")
    assert (first.frames, first.faces_swapped) == (second.frames, second.faces_swapped)
    a = list(read_frames(probe_video(first.output_path)))
    b = list(read_frames(probe_video(second.output_path)))
    assert len(a) == len(b) == 50
    for index, (x, y) in enumerate(zip(a, b, strict=True)):
        assert np.array_equal(x, y), index


@pytest.mark.slow  # two swapd processes (about 25 s)
def test_cli_merges_a_sequence_with_the_writers_flags(synthetic_clip: Path, tmp_path: Path
                                                      ) -> None:
    import sys

    folder = tmp_path / "frames"
    folder.mkdir()
    for n, frame in enumerate(list(read_frames(probe_video(synthetic_clip)))[:3], start=1):
        cv2.imwrite(str(folder / f"f{n:03d}.png"), frame)
    model = export_model(tmp_path / "invert.onnx")
    base = [sys.executable, "-m", "swapd", "merge", str(folder), "--model", str(model),
            "--output", str(tmp_path / "out"), "--device", "cpu"]
    bad = subprocess.run([*base, "--frame-ranges", "2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "frame range '2' is not FIRST-LAST" in bad.stderr
    assert not (tmp_path / "out").exists()
    good = subprocess.run([*base, "--image-format", "jpeg", "--frame-ranges", "2-3"],
                          capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    out = tmp_path / "out" / "frames_swapd"
    assert sorted(p.name for p in out.iterdir()) == ["f001.jpg", "f002.jpg", "f003.jpg"]
    assert "3 frames, 2 faces swapped" in good.stdout

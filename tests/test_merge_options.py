"""Merge options (issue 16): colour transfers on known statistics, DeepFaceLab's modes, masks,
steadying across frames, finishing, the upscale check, the preview, and the options as a job's
[merge] keys and `swapd merge` flags.

Real frames of the synthetic clip, real onnxruntime models with known effects
(tests/merge_support.py: a colour cast, with learned masks), real MTCNN and ffmpeg.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.config import ConfigError, MergeLook, load_job_file
from swapd.daemon import merge_worker
from swapd.daemon.merges import look_json
from swapd.demo.clip import ClipTruth, truth_path
from swapd.media import probe_video, read_frames
from swapd.merger import colour, finish
from swapd.merger.blend import face_mask
from swapd.merger.masks import Edge, FaceSteadier, shape_mask
from swapd.merger.merge import MergeError, MergeOptions, Merger
from swapd.merger.provenance import verify_file
from swapd.state import StateStore
from swapd.workspace import Workspace
from tests.merge_support import export_cast_model, face_crops
from tests.support import require_tools, wait_for


@pytest.fixture(autouse=True, scope="module")
def _needs_ffprobe() -> None:
    require_tools("ffprobe")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("merge_options")


@pytest.fixture(scope="module")
def frames(synthetic_clip: Path) -> list[np.ndarray]:
    return list(read_frames(probe_video(synthetic_clip)))


@pytest.fixture(scope="module")
def truth(synthetic_clip: Path) -> ClipTruth:
    return ClipTruth.load(truth_path(synthetic_clip))


@pytest.fixture(scope="module")
def cast(work: Path) -> Path:
    return export_cast_model(work / "cast.onnx", masks=2)


@pytest.fixture(scope="module")
def still(work: Path, frames: list[np.ndarray]) -> Path:
    path = work / "frame20.png"
    cv2.imwrite(str(path), frames[20])
    return path


@pytest.fixture(scope="module")
def crops(frames: list[np.ndarray], truth: ClipTruth) -> tuple[np.ndarray, np.ndarray,
                                                                np.ndarray]:
    """A face crop of the clip (float BGR), the same face with a known colour cast, the mask."""
    return face_crops(frames[20], truth.landmarks[20])


def _lab_stats(image: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_BGR2LAB)[inside]
    return lab.mean(0), lab.std(0)


# --- colour transfer -----------------------------------------------------------------------


def test_rct_brings_the_masked_lab_mean_and_std_to_the_targets(crops) -> None:
    original, cast_face, mask = crops
    inside = mask > 0.99
    out = colour.transfer("rct", cast_face, original, mask)
    (m0, s0), (m1, s1) = _lab_stats(original, inside), _lab_stats(out, inside)
    before, _ = _lab_stats(cast_face, inside)
    assert np.abs(before - m0).max() > 10  # the cast is plain to see
    assert np.abs(m1 - m0).max() < 1.5 and np.all(np.abs(s1 - s0) < 0.1 * s0 + 0.5)


@pytest.mark.parametrize("method", ["lct", "mkl"])
def test_linear_transfers_match_the_mean_and_covariance(crops, method: str) -> None:
    original, cast_face, mask = crops
    out = colour.transfer(method, cast_face, original, mask)
    mu0, cov0 = colour.weighted_stats(original, None)
    mu1, cov1 = colour.weighted_stats(out, None)
    mu_b, cov_b = colour.weighted_stats(cast_face, None)
    assert np.abs(mu1 - mu0).max() < 0.01 < np.abs(mu_b - mu0).max()
    assert np.abs(cov1 - cov0).max() < 0.1 * np.abs(cov_b - cov0).max()


@pytest.mark.parametrize("method", ["lct-m", "mkl-m", "idt-m", "sot-m"])
def test_masked_variants_are_deepfacelabs_zero_filled_crops(crops, method: str) -> None:
    """DeepFaceLab's masked variants (MergeMasked.py): both faces times the mask's area, zero
    outside, then the method on the whole crops (sot-m: 30 directions a step)."""
    original, cast_face, mask = crops
    area = (mask > 0).astype(np.float32)[..., None]
    out = colour.transfer(method, cast_face, original, mask)
    base = {"lct-m": colour.lct, "mkl-m": colour.mkl, "idt-m": colour.idt,
            "sot-m": lambda a, b: colour.sot(a, b, batch=30)}[method]
    expected = np.clip(base(cast_face * area, original * area), 0, 1)
    assert np.array_equal(out, expected.astype(np.float32))
    # the face inside the mask comes close to the original's mean (not exactly: the zeros
    # count in the statistics), from a cast far off
    inside = (mask > 0).astype(np.float32)
    mu0, _ = colour.weighted_stats(original, inside)
    miss_before = np.abs(colour.weighted_stats(cast_face, inside)[0] - mu0).max()
    miss_after = np.abs(colour.weighted_stats(out, inside)[0] - mu0).max()
    assert miss_after * 2 < miss_before, (miss_before, miss_after)


@pytest.mark.parametrize("method", ["lct", "mkl"])
def test_linear_transfers_of_zero_filled_crops_match_their_mean_and_covariance(
        crops, method: str) -> None:
    """What lct-m and mkl-m match: the zero-filled crops' mean and covariance, zeros and all
    (the methods before the [0, 1] clip)."""
    original, cast_face, mask = crops
    area = (mask > 0).astype(np.float32)[..., None]
    out = getattr(colour, method)(cast_face * area, original * area)
    mu0, cov0 = colour.weighted_stats(original * area, None)
    mu1, cov1 = colour.weighted_stats(out, None)
    close = 1e-6 if method == "mkl" else 3e-4  # lct: DFL's 1e-5 added to both covariances
    assert np.abs(mu1 - mu0).max() < 1e-6 and np.abs(cov1 - cov0).max() < close


def test_dfl_hist_match_brings_each_channels_quantiles_to_the_templates(crops) -> None:
    """DeepFaceLab's hist-match mode (color_hist_match on the faces made white outside the
    mask): every channel's quantiles become the original's; a threshold below 255 darkens."""
    original, cast_face, mask = crops
    area = (mask > 0).astype(np.float32)[..., None]
    source = np.minimum(cast_face * area + (1 - area), 1.0)
    template = original * area + (1 - area)
    matched = colour.color_hist_match(source, template)
    q = np.linspace(0.02, 0.4, 12)  # (the white half, and the cast's clipped blue, tie at 1)
    for c in range(3):
        assert np.abs(np.quantile(matched[..., c], q) - np.quantile(template[..., c], q)
                      ).max() < 1.5 / 255
        assert np.abs(np.quantile(source[..., c], q) - np.quantile(template[..., c], q)
                      ).max() > 10 / 255
    darker = colour.color_hist_match(source, template, 200)
    assert darker.mean() < matched.mean() - 0.02


# DFL's idt moves each pixel 1/20 of the way per rotation, so less far than a full matching.
@pytest.mark.parametrize(("method", "factor"), [("idt", 2.2), ("idt-m", 2.2), ("sot", 3),
                                                ("sot-m", 3), ("hist-match", 3)])
def test_distribution_transfers_cut_the_sliced_wasserstein_distance(crops, method: str,
                                                                     factor: float) -> None:
    """IDT and SOT move the whole colour distribution (not just two moments): the sliced
    Wasserstein distance to the original's, inside the face, drops by the stated factor."""
    original, cast_face, mask = crops
    inside = (mask > 0).astype(np.float32)
    out = colour.transfer(method, cast_face, original, mask)
    before = colour.sliced_wasserstein(cast_face, original, inside)
    after = colour.sliced_wasserstein(out, original, inside)
    assert after * factor < before, (before, after)


def test_hist_match_and_avg_color_and_manual_balance(crops) -> None:
    original, cast_face, mask = crops
    inside = mask > 0
    matched = colour.transfer("hist-match", cast_face, original, mask)
    for c in range(3):  # per-channel quantiles inside the mask agree
        q = np.linspace(0.05, 0.85, 9)  # (the cast clips the brightest blue: ties)
        assert np.abs(np.quantile(matched[..., c][inside], q)
                      - np.quantile(original[..., c][inside], q)).max() < 3 / 255
    shifted = colour.transfer("avg-color", cast_face, original, mask)
    weights = mask[..., None]
    mean = (shifted * weights).sum((0, 1)) / weights.sum()
    assert np.abs(mean - (original * weights).sum((0, 1)) / weights.sum()).max() < 2 / 255
    assert np.allclose(shifted[inside].std(0), cast_face[inside].std(0), atol=0.01)
    look = MergeLook(balance_colorspace="hsv", balance_3=50.0)  # V halfway to white
    brighter = colour.transfer("manual-balance", cast_face, original, mask, look)
    value = cv2.cvtColor(cast_face, cv2.COLOR_BGR2HSV)[..., 2][inside].mean()
    value_after = cv2.cvtColor(brighter, cv2.COLOR_BGR2HSV)[..., 2][inside].mean()
    assert value_after == pytest.approx(value + (1 - value) * 0.5, abs=0.02)
    assert colour.transfer("none", cast_face, original, mask) is cast_face


def test_a_grayscale_face_gets_brightness_and_contrast_and_stays_gray(crops) -> None:
    original, cast_face, mask = crops
    gray = np.repeat((cast_face @ np.float32([0.114, 0.587, 0.299]))[..., None] * 0.6, 3, -1)
    out = colour.transfer("mkl", gray, original, mask, grayscale=True)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    w = mask > 0
    luma = original @ np.float32([0.114, 0.587, 0.299])
    assert abs(out[..., 0][w].mean() - luma[w].mean()) < 0.02
    assert abs(out[..., 0][w].std() - luma[w].std()) < 0.02


def test_a_job_merge_shows_its_colour_transfer_in_the_output(work: Path, cast: Path,
                                                             still: Path, truth: ClipTruth
                                                             ) -> None:
    """A job's [merge] options reach the merge worker (as the service passes them) and the
    output's face colours show the transfer chosen."""
    ws = Workspace.open(work / "ws")
    job = ws.jobs / "look.toml"
    face_rows, face_cols = _face_box(truth.landmarks[20])
    means = {}
    for method in ("none", "mkl-m"):
        job.write_text(f'[merge]\nfootage = "footage/look"\nmodel = "cast.onnx"\n'
                       f'color_transfer = "{method}"\nmask_smoothing = 0.0\n')
        spec = load_job_file(job)
        assert spec.merge is not None and spec.merge.color_transfer == method
        out = ws.root / "output" / method
        code = merge_worker.main(["--workspace", str(ws.root), "--job", "look", "--input",
                                  str(still), "--model", str(cast), "--output", str(out),
                                  "--look", look_json(spec.merge)])
        assert code == 0
        merged = cv2.imread(str(out / "frame20_swapd.png"))
        means[method] = merged[face_rows, face_cols].reshape(-1, 3).mean(0)
    source = cv2.imread(str(still))[face_rows, face_cols].reshape(-1, 3).mean(0)
    assert np.abs(means["none"] - source).max() > 25  # the cast shows
    assert np.abs(means["mkl-m"] - source).max() < 6  # mkl-m took it away
    StateStore(ws.state_db).close()


def _face_box(landmarks: np.ndarray, shrink: float = 0.3) -> tuple[slice, slice]:
    x0, y0 = landmarks.min(axis=0)
    x1, y1 = landmarks.max(axis=0)
    dx, dy = (x1 - x0) * shrink, (y1 - y0) * shrink
    return slice(int(y0 + dy), int(y1 - dy)), slice(int(x0 + dx), int(x1 - dx))


# --- options as a job's keys and as flags -----------------------------------------------


@pytest.mark.parametrize(("line", "key", "words"), [
    ('color_transfer = "rtc"', "merge.color_transfer", ["'rct'", "'sot-m'", "'rtc'"]),
    ('mode = "poisson"', "merge.mode", ["'seamless'"]),
    ("erosion_top = 150", "merge.erosion_top", ["100"]),
    ('sharpen = "unsharp"', "merge.sharpen", ["'unsharp_mask'"]),
    ("colour_transfer = 'rct'", "merge.colour_transfer", ["unknown key", "color_transfer"]),
])
def test_bad_merge_options_are_the_jobs_error_naming_the_key(tmp_path: Path, line: str,
                                                               key: str, words: list[str]
                                                               ) -> None:
    path = tmp_path / "job.toml"
    path.write_text(f'[merge]\nfootage = "footage/x"\nmodel = "m.onnx"\n{line}\n')
    with pytest.raises(ConfigError) as caught:
        load_job_file(path, shown_as="jobs/job.toml")
    assert caught.value.problems[0][0] == key
    for word in words:
        assert word in str(caught.value)


def test_options_validate_in_python_and_on_the_command_line(tmp_path: Path, cast: Path,
                                                            still: Path) -> None:
    with pytest.raises(ValueError, match="mask: Input should be 'auto'"):
        MergeOptions(mask="xseg")
    assert MergeOptions().look == MergeLook()  # the dataclass and the schema agree
    run = subprocess.run([sys.executable, "-m", "swapd", "merge", str(still), "--model",
                          str(cast), "--output", str(tmp_path), "--blur", "-3"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--blur: Input should be greater than or equal to 0" in \
        run.stderr


# --- modes -------------------------------------------------------------------------------


def _merge(model: Path, still: Path, out: Path, **look: object) -> np.ndarray:
    merger = Merger(model, MergeOptions(**look))  # type: ignore[arg-type]
    return cv2.imread(str(merger.merge_file(still, out).output_path)).astype(np.int32)


def test_modes_do_what_deepfacelab_does(work: Path, cast: Path, still: Path,
                                        truth: ClipTruth) -> None:
    source = cv2.imread(str(still)).astype(np.int32)
    face = _face_box(truth.landmarks[20])
    out = work / "modes"
    overlay = _merge(cast, still, out / "o", color_transfer="none")
    raw_rgb = _merge(cast, still, out / "r", mode="raw-rgb")
    changed = {name: np.abs(img - source).max(2) > 12 for name, img in
               (("overlay", overlay), ("raw-rgb", raw_rgb))}
    # raw-rgb pastes the whole square crop (its corners hold background); overlay the face
    assert changed["raw-rgb"].sum() > 1.5 * changed["overlay"].sum()
    raw_predict = _merge(cast, still, out / "p", mode="raw-predict")
    assert raw_predict.shape == source.shape
    assert raw_predict[:, :40].max() <= 4  # the face fills the height, black (+watermark) beside
    # hist-match brings the face's histogram back to the original's (the cast is gone)
    hist = _merge(cast, still, out / "h", mode="hist-match", color_transfer="none")
    err = {name: np.abs(img[face].reshape(-1, 3).mean(0) - source[face].reshape(-1, 3).mean(0))
           .max() for name, img in (("overlay", overlay), ("hist", hist))}
    assert err["overlay"] > 25 and err["hist"] < 8
    # seamless: the clone takes its colours from the frame around it; where it lands does not
    # move (the face's detail lines up with overlay's, pixel for pixel)
    clone = _merge(cast, still, out / "s", mode="seamless", color_transfer="none")
    offset = clone[face].reshape(-1, 3).mean(0) - source[face].reshape(-1, 3).mean(0)
    assert np.abs(offset).max() < 12
    grad = [cv2.Laplacian(cv2.cvtColor(i.astype(np.uint8), cv2.COLOR_BGR2GRAY)[face],
                          cv2.CV_32F) for i in (clone, overlay)]
    shift, _ = cv2.phaseCorrelate(grad[0], grad[1])
    assert abs(shift[0]) < 0.5 and abs(shift[1]) < 0.5


# --- masks -------------------------------------------------------------------------------


def test_mask_modes_and_edges(work: Path, cast: Path, still: Path) -> None:
    source = cv2.imread(str(still)).astype(np.int32)
    area = {}
    for name, look in {"mean-face": {"mask": "mean-face"}, "full": {"mask": "full"},
                       "dst": {"mask": "dst"},
                       "learned-dst": {"mask": "learned-dst"},
                       "learned-prd": {"mask": "learned-prd"},
                       "eroded": {"mask": "mean-face", "erosion": 40.0},
                       "dilated": {"mask": "mean-face", "erosion": -20.0}}.items():
        img = _merge(cast, still, work / "masks" / name, color_transfer="none", **look)
        area[name] = int((np.abs(img - source).max(2) > 12).sum())
    assert area["full"] > area["dilated"] > area["mean-face"] > area["eroded"] > 0
    assert area["learned-prd"] > area["learned-dst"]  # the cast model's dst ellipse is smaller
    # the face's own hull (MTCNN's 5 points: the derived ellipse) covers the face as the mean
    # face's outline does, give or take a fifth
    assert 0.8 < area["dst"] / area["mean-face"] < 1.25


def test_erosion_per_side_moves_only_that_side() -> None:
    raw = np.array(face_mask(128, 0.875, "face", 0.0, 0.0))
    base = shape_mask(raw, (0.0, 0.0), Edge())
    rows = np.nonzero(base.max(1) > 0.5)[0]
    cols = np.nonzero(base.max(0) > 0.5)[0]
    for side, amount in (("top", 30.0), ("bottom", 30.0), ("left", -30.0), ("right", 30.0)):
        mask = shape_mask(raw, (0.0, 0.0), Edge(**{side: amount}))
        r = np.nonzero(mask.max(1) > 0.5)[0]
        c = np.nonzero(mask.max(0) > 0.5)[0]
        moved = {"top": r[0] - rows[0], "bottom": rows[-1] - r[-1], "left": c[0] - cols[0],
                 "right": cols[-1] - c[-1]}
        expected = 0.3 * np.sqrt(raw.sum()) / 2 * np.sign(amount)
        assert abs(moved[side] - expected) <= 1.5, (side, moved)
        assert all(abs(v) <= 1 for k, v in moved.items() if k != side), (side, moved)
    blurred = shape_mask(raw, (0.0, 0.0), Edge(blur=30.0))
    soft = lambda m: int(((m > 0.05) & (m < 0.95)).sum())  # noqa: E731
    assert soft(blurred) > 2 * soft(base)


def test_steadying_cuts_the_face_boxs_jitter(frames: list[np.ndarray]) -> None:
    """The box (its crop's corners in the frame) jitters less from frame to frame with
    box_smoothing; see benchmarks/merge_steadiness.py for the figures."""
    from benchmarks.merge_steadiness import box_jitter, detections

    found = detections(frames)
    raw, steady = box_jitter(found, 0.0), box_jitter(found, 0.5)
    assert steady.jitter < 0.85 * raw.jitter and steady.lag < 3.0, (raw, steady)
    mask_a, mask_b = np.zeros((8, 8), np.float32), np.ones((8, 8), np.float32)
    steadier = FaceSteadier(box=0.5, mask=0.3)
    (track,) = steadier.place(found[0])
    steadier.steady_mask(track, mask_a)
    assert steadier.steady_mask(track, mask_b).max() == pytest.approx(0.7)


# --- finish ------------------------------------------------------------------------------


def test_finishing_options(work: Path, cast: Path, still: Path, truth: ClipTruth) -> None:
    source = cv2.imread(str(still)).astype(np.int32)
    face = _face_box(truth.landmarks[20])
    plain = _merge(cast, still, work / "f" / "plain")

    def detail(img: np.ndarray, where: tuple[slice, slice]) -> float:
        gray = cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_BGR2GRAY)
        return float(cv2.Laplacian(gray, cv2.CV_32F)[where].var())

    for method in ("box", "gaussian", "unsharp_mask"):
        sharp = _merge(cast, still, work / "f" / method, sharpen=method, sharpen_amount=200.0)
        assert detail(sharp, face) > 1.3 * detail(plain, face), method
    changed = {}
    for scale in (-20, 0, 20):
        img = _merge(cast, still, work / "f" / f"scale{scale}", output_face_scale=scale,
                     color_transfer="none")  # the cast shows where the face was drawn
        changed[scale] = int((np.abs(img - source).max(2) > 12).sum())
    assert changed[-20] > changed[0] > changed[20]  # DeepFaceLab's sign: + draws it smaller
    background = (slice(20, 60), slice(250, 420))  # the hair, above the merged face
    soft = _merge(cast, still, work / "f" / "degrade", image_denoise_power=100,
                  bicubic_degrade_power=50)
    assert detail(soft, background) < 0.5 * detail(plain, background)
    moving = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))[..., None].repeat(3, -1)
    moving[:, ::8] = 1.0
    blurred = finish.motion_blur(moving, np.array([12.0, 0.0]), 100)
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.5 * np.abs(np.diff(moving, axis=1)).mean()
    assert np.abs(np.diff(blurred, axis=0)).max() < 1e-5  # along the motion only
    reduced = finish.colour_degrade(source.astype(np.uint8), 100)
    assert len(np.unique(reduced.reshape(-1, 3), axis=0)) <= 256


def test_an_upscale_beyond_the_limit_is_refused_unless_allowed(work: Path, still: Path) -> None:
    tiny = export_cast_model(work / "cast8.onnx", size=8)
    with pytest.raises(MergeError, match=r"x the model's 8 px output \(max_upscale = 16\)"):
        Merger(tiny).merge_file(still, work / "up" / "refused")
    assert not (work / "up" / "refused").exists() or not any((work / "up" / "refused").iterdir())
    result = Merger(tiny, MergeOptions(max_upscale=0)).merge_file(still, work / "up" / "ok")
    assert result.faces_swapped == 1


# --- choosing by eye -----------------------------------------------------------------------


def test_preview_writes_one_labelled_marked_image(work: Path, cast: Path,
                                                  synthetic_clip: Path) -> None:
    out = work / "preview"
    run = subprocess.run([sys.executable, "-m", "swapd", "merge", str(synthetic_clip),
                          "--model", str(cast), "--output", str(out), "--preview", "12",
                          "--compare", "mode"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    path = out / "clip_preview_12_mode.png"
    assert run.stdout.strip() == str(path) and [p.name for p in out.iterdir()] == [path.name]
    sheet = cv2.imread(str(path))
    assert sheet.shape[1] == 4 * 480 and sheet.shape[0] > 400  # 7 tiles: 2 rows of 4
    verdict = verify_file(path)
    assert verdict.metadata_tag and verdict.watermark.marked


def test_the_service_merges_dropped_footage_with_the_jobs_options(
        service, cast: Path, synthetic_clip: Path, truth: ClipTruth) -> None:
    """`swapd run` as a real process: a merge job with [merge] options, footage dropped in,
    the output's face colours show the chosen colour transfer."""
    svc = service()
    ws = svc.workspace
    wait_for(lambda: (ws / ".swapd" / "state.db").exists(), 60, "the state database",
             svc.process)
    shutil.copy(cast, ws / "cast.onnx")
    (ws / "jobs" / "look.toml").write_text(
        '[merge]\nfootage = "footage/look"\nmodel = "cast.onnx"\ncolor_transfer = "mkl-m"\n'
        'mode = "overlay"\nsharpen = "gaussian"\n')
    (ws / "footage" / "look").mkdir(parents=True, exist_ok=True)
    shutil.copy(synthetic_clip, ws / "footage" / "look" / "clip.mp4")

    def merged() -> Path | None:
        store = StateStore(ws / ".swapd" / "state.db", readonly=True)
        try:
            artifact = store.latest_artifact("look", "merge")
        except sqlite3.OperationalError:  # the service has not made its tables yet
            return None
        finally:
            store.close()
        return Path(artifact.path) if artifact else None

    output = wait_for(merged, 240, "the merged clip", svc.process)
    assert isinstance(output, Path)
    rows, cols = _face_box(truth.landmarks[0])
    before = next(iter(read_frames(probe_video(synthetic_clip))))[rows, cols]
    after = next(iter(read_frames(probe_video(output))))[rows, cols]
    shift = np.abs(after.reshape(-1, 3).mean(0) - before.reshape(-1, 3).mean(0)).max()
    assert shift < 8  # the cast (> 25 levels without a transfer, see above) is taken away
    assert verify_file(output).marked


def test_the_readme_lists_every_merge_option_with_its_default() -> None:
    import re
    import tomllib

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S)
                if b.startswith("[merge]\nfootage") and "color_transfer" in b]
    shown = tomllib.loads(block)["merge"]
    assert set(MergeLook.model_fields) <= set(shown)
    defaults = MergeLook()
    for key in MergeLook.model_fields:
        assert shown[key] == getattr(defaults, key), key


def test_a_grayscale_models_merge_matches_brightness_and_stays_gray(
        work: Path, still: Path, truth: ClipTruth) -> None:
    gray = export_cast_model(work / "gray.onnx", grayscale=True)
    assert Merger(gray).session.info.grayscale
    source = cv2.imread(str(still)).astype(np.float32)
    rows, cols = _face_box(truth.landmarks[20])
    merged = {}
    for method in ("none", "rct"):
        merged[method] = _merge(gray, still, work / "gray" / method,
                                color_transfer=method)[rows, cols].astype(np.float32)
    luma = source[rows, cols] @ np.float32([0.114, 0.587, 0.299])
    for img in merged.values():  # gray (up to the watermark's small changes)
        assert np.abs(img[..., 0] - img[..., 2]).mean() < 4
    assert abs(merged["none"].mean() - luma.mean()) > 40  # the model draws it much darker
    assert abs(merged["rct"].mean() - luma.mean()) < 8  # brightness brought back


def test_the_remaining_knobs_do_what_they_say(work: Path, cast: Path, still: Path,
                                              truth: ClipTruth, frames: list[np.ndarray]
                                              ) -> None:
    face = _face_box(truth.landmarks[20])
    out = work / "knobs"

    def face_of(img: np.ndarray) -> np.ndarray:
        return img[face].reshape(-1, 3).astype(np.float64)

    # hist-match threshold (DFL's 0..255): below 255 the swapped face's quantiles are scaled
    # down, so the face comes out darker
    full = _merge(cast, still, out / "t255", mode="hist-match", color_transfer="none")
    low = _merge(cast, still, out / "t200", mode="hist-match", color_transfer="none",
                 hist_match_threshold=200)
    assert face_of(low).mean() < face_of(full).mean() - 5
    # manual balance: contrast and brightness as faceswap's
    bright = _merge(cast, still, out / "bright", color_transfer="manual-balance",
                    balance_brightness=30.0)
    flat = _merge(cast, still, out / "flat", color_transfer="manual-balance",
                  balance_contrast=-50.0)
    plain = _merge(cast, still, out / "plain", color_transfer="none")
    assert face_of(bright).mean() > face_of(plain).mean() + 20
    assert face_of(flat).std(0).mean() < 0.7 * face_of(plain).std(0).mean()
    # colour degrade: the merged frame holds few colours (the watermark adds a few levels)
    few = _merge(cast, still, out / "few", color_degrade_power=100)
    many = len(np.unique(plain.reshape(-1, 3), axis=0))
    assert len(np.unique(few.reshape(-1, 3), axis=0)) < 0.5 * many
    # motion blur from the face's motion: the same frame moved 24 px to the right
    moved = np.roll(frames[20], 24, axis=1)
    merger = Merger(cast, MergeOptions(motion_blur_power=100, box_smoothing=0.0))
    pair = [frames[20].copy(), moved.copy()]
    merger.swap_frames(pair, composer=merger.composer())
    still_pair = [frames[20].copy(), moved.copy()]
    Merger(cast, MergeOptions(box_smoothing=0.0)).swap_frames(still_pair)
    shifted = slice(face[1].start + 24, face[1].stop + 24)

    def across(img: np.ndarray, cols: slice) -> float:
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)[face[0], cols]
        return float(np.abs(np.diff(gray, axis=1)).mean())

    # blurred along the motion in the second frame; the first had no motion to blur by
    assert across(pair[1], shifted) < 0.8 * across(still_pair[1], shifted)
    assert across(pair[0], face[1]) > 0.9 * across(still_pair[0], face[1])

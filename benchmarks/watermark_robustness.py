"""The watermark's robustness table, its false-positive measurement and its cost.

    python benchmarks/watermark_robustness.py fpr --inputs 2000        # unmarked inputs
    python benchmarks/watermark_robustness.py fpr-v1 --inputs 2000     # ... the v1 detector
    python benchmarks/watermark_robustness.py table --clips 20         # attack x content
    python benchmarks/watermark_robustness.py table --kinds camera      # ... noisy footage
    python benchmarks/watermark_robustness.py cost                      # ms per frame, PSNR

Writes benchmarks/results/watermark_{fpr,table,cost}.json, or ``--out`` (+ 400 % crops: a
flat grey frame marked, watermark_flat_crop_400.png, and the smoothest area of a painted
backdrop before and after marking, both through the merger's H.264 CRF 18,
watermark_smooth_crop_400.png, and the same with sensor noise,
watermark_smooth_crop_400_camera.png). Content: swapd.demo's synthetic clips (painted
identities on painted backgrounds, many seeds), the same with sensor-like noise (``camera``),
synthetic textures, and the public-domain photographs scikit-image ships (no person among
those used). Every re-encode is the real ffmpeg.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from swapd.media import ffmpeg_exe
from swapd.merger import watermark, watermark_v1
from swapd.merger.provenance import verify_file

RESULTS = Path(__file__).parent / "results"
# scikit-image's bundled photographs without a person in them (no download needed).
SKIMAGE_PHOTOS = ("coffee", "chelsea", "rocket", "coins", "moon", "page", "text", "clock",
                  "hubble_deep_field", "immunohistochemistry", "grass", "gravel", "brick",
                  "colorwheel", "logo", "horse", "cell", "retina", "motorcycle_left")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def skimage_photos() -> list[tuple[str, np.ndarray]]:
    try:
        from skimage import data
    except ImportError:
        return []
    out = []
    for name in SKIMAGE_PHOTOS:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 (not bundled in this version: skip it)
            continue
        if image.dtype != np.uint8:
            image = cv2.normalize(image.astype(np.float32), None, 0, 255,
                                  cv2.NORM_MINMAX).astype(np.uint8)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGR)
        else:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        out.append((name, image))
    return out


def pink(seed: int, h: int, w: int, alpha: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spectrum = np.fft.fft2(rng.normal(size=(h, w)))
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    radius = np.hypot(fx, fy)
    radius[0, 0] = 1.0
    img = np.real(np.fft.ifft2(spectrum / radius**alpha))
    img = (img - img.mean()) / (img.std() + 1e-9) * rng.uniform(10, 50) + rng.uniform(60, 190)
    grey = np.clip(img, 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def demo_frame(seed: int, size: tuple[int, int]) -> np.ndarray:
    from swapd.demo.painter import make_background

    return make_background(size, seed)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], 1)


def variants(image: np.ndarray, rng: np.random.Generator) -> Iterator[tuple[str, np.ndarray]]:
    """A photo as shared: itself, crops, scales, flips, JPEG re-encodes."""
    h, w = image.shape[:2]
    yield "orig", image
    for k in range(3):
        ch, cw = int(h * rng.uniform(0.5, 0.9)), int(w * rng.uniform(0.5, 0.9))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        yield f"crop{k}", image[y:y + ch, x:x + cw]
    for scale in (0.5, 0.75, 1.5, 2.5):
        yield f"scale{scale}", cv2.resize(image, (max(64, int(w * scale)), max(64, int(h * scale))),
                                          interpolation=cv2.INTER_AREA if scale < 1 else
                                          cv2.INTER_CUBIC)
    yield "flip", image[:, ::-1].copy()
    for q in (90, 75, 50, 30):
        yield f"jpeg{q}", jpeg(image, q)
    yield "scale0.6_jpeg75", jpeg(cv2.resize(image, (int(w * 0.6), int(h * 0.6))), 75)


def unmarked_inputs(n: int) -> Iterator[tuple[str, list[np.ndarray]]]:
    """At least *n* varied unmarked inputs (a single image, or a short clip's frames)."""
    rng = np.random.default_rng(2026)
    made = 0
    for name, photo in skimage_photos():
        for label, image in variants(photo, rng):
            if min(image.shape[:2]) >= watermark.MIN_SIZE:
                made += 1
                yield f"skimage:{name}:{label}", [image]
    seed = 0
    sizes = [(1280, 720), (640, 360), (1920, 1080), (720, 1280), (480, 480), (854, 480)]
    while made < n:
        size = sizes[seed % len(sizes)]
        kind = seed % 4
        if kind == 0:
            item = [demo_frame(seed, size)]
            label = "demo_background"
        elif kind == 1:
            item = [pink(seed, size[1] // 2, size[0] // 2, rng.uniform(0.2, 1.8))]
            label = "pink"
        elif kind == 2:
            item = [jpeg(demo_frame(seed, size), int(rng.integers(30, 95)))]
            label = "demo_background_jpeg"
        else:  # a short moving clip: a pan over a larger painted backdrop
            big = demo_frame(seed, (size[0] + 200, size[1] + 100))
            item = [big[t * 4:t * 4 + size[1], t * 8:t * 8 + size[0]].copy() for t in range(12)]
            label = "demo_pan_clip"
        made += 1
        seed += 1
        yield f"synthetic:{label}:{seed}", item


def _summary(scores: list[float], worst: tuple[str, float], seconds: float,
             threshold: float = watermark.Z_THRESHOLD) -> dict:
    arr = np.array(scores)
    return {
        "inputs": len(scores), "detections": int(np.sum(arr >= threshold)),
        "threshold": threshold, "max": float(arr.max()), "max_input": worst[0],
        "mean": float(arr.mean()), "std": float(arr.std()),
        "percentiles": {str(p): float(np.percentile(arr, p)) for p in (50, 90, 99, 99.9)},
        "histogram": np.histogram(arr, bins=np.arange(0, 10.5, 0.5))[0].tolist(),
        "histogram_bins": "0 to 10 in steps of 0.5",
        "seconds_per_input": seconds / len(scores), "cpu": cpu_model(),
    }


def run_fpr(n: int, shard: int = 0, shards: int = 1) -> dict:
    """Scores of every *shards*-th unmarked input (from *shard*); saved as they come, so a
    run cut short still leaves what it measured."""
    scores, labels, worst = [], [], ("", 0.0)
    started = time.perf_counter()
    out = RESULTS / f"watermark_fpr.shard{shard}.json"
    for i, (label, frames) in enumerate(unmarked_inputs(n)):
        if i % shards != shard:
            continue
        # A clip's first frame stands for its keyframes (every encode starts with one):
        # `swapd verify` decodes a short video's keyframes apart as a third pooling.
        evidence = watermark.detect(frames, keyframes=frames[:1] if len(frames) > 1 else ())
        scores.append(evidence.score)
        labels.append(label)
        if evidence.score > worst[1]:
            worst = (label, evidence.score)
        if len(scores) % 20 == 0:
            out.write_text(json.dumps({"scores": scores, "labels": labels,
                                       "seconds": time.perf_counter() - started}))
    out.write_text(json.dumps({"scores": scores, "labels": labels,
                               "seconds": time.perf_counter() - started}))
    return _summary(scores, worst, time.perf_counter() - started)


def run_fpr_v1(n: int) -> dict:
    """The previous scheme's detector (``swapd-wm-v1``, which verify still runs and which
    alone can call a file marked) on the same unmarked inputs: its z-scores against its
    threshold."""
    scores, labels, worst = [], [], ("", -np.inf)
    started = time.perf_counter()
    for label, frames in unmarked_inputs(n):
        evidence = watermark_v1.detect(iter(frames))
        scores.append(evidence.score)
        labels.append(label)
        if evidence.score > worst[1]:
            worst = (label, evidence.score)
    summary = _summary(scores, worst, time.perf_counter() - started, watermark_v1.Z_THRESHOLD)
    summary["histogram"] = np.histogram(scores, bins=np.arange(-6, 6.5, 0.5))[0].tolist()
    summary["histogram_bins"] = "-6 to 6 in steps of 0.5"
    return summary


def merge_fpr() -> dict:
    """One summary of every shard's scores."""
    scores, labels, seconds = [], [], 0.0
    for path in sorted(RESULTS.glob("watermark_fpr.shard*.json")):
        if path.name.endswith(".summary.json"):
            continue
        part = json.loads(path.read_text())
        scores += part["scores"]
        labels += part["labels"]
        seconds += part["seconds"]
    worst = max(zip(labels, scores, strict=True), key=lambda item: item[1])
    kinds: dict[str, int] = {}
    for label in labels:  # "skimage:coffee:crop1" -> "skimage", "synthetic:pink:3" -> its kind
        source, what = label.split(":")[:2]
        kind = source if source == "skimage" else f"{source}:{what}"
        kinds[kind] = kinds.get(kind, 0) + 1
    return {**_summary(scores, worst, seconds), "inputs_by_kind": kinds,
            "note": "seconds_per_input is wall time on a shared, loaded 2-core machine"}


ATTACKS = {  # name -> ffmpeg filter (each chained with H.264 CRF 28, metadata stripped)
    "crf28": None, "scale75": "scale=trunc(iw*0.75/2)*2:-2", "scale50": "scale=trunc(iw/4)*2:-2",
    "scale33": "scale=trunc(iw/6)*2:240", "crop10_left": "crop=trunc(iw*0.45)*2:ih:iw*0.1:0",
    "crop10_top": "crop=iw:trunc(ih*0.45)*2:0:ih*0.1",
    "crop10_right": "crop=trunc(iw*0.45)*2:ih:0:0",
    "crop10_bottom": "crop=iw:trunc(ih*0.45)*2:0:0",
    "crop10_all": "crop=trunc(iw*0.4)*2:trunc(ih*0.4)*2", "hflip": "hflip",
    "rotate2": "rotate=2*PI/180", "rotate-2": "rotate=-2*PI/180",
    "letterbox43": "pad=iw:trunc(iw*3/8)*2:0:(oh-ih)/2",
    "pillarbox219": "pad=trunc(ih*21/18)*2:ih:(ow-iw)/2:0",
    "fps15": "fps=15",
    # the 1 s clip's middle half: fewer frames than the 2 s excerpt of a longer clip
    "excerpt": ("-ss", "0.25", "-t", "0.5"),
    "crop_flip_scale50": "crop=trunc(iw*0.45)*2:ih:iw*0.1:0,hflip,scale=trunc(iw/4)*2:-2",
}


def _encode(src: Path, out: Path, attack: str | tuple[str, ...] | None) -> Path:
    before = list(attack) if isinstance(attack, tuple) else []
    vf = attack if isinstance(attack, str) else None
    cmd = [ffmpeg_exe(), "-y", "-v", "error", *before, "-i", str(src),
           *(["-vf", vf] if vf else []),
           "-map_metadata", "-1", "-c:v", "libx264", "-preset", "veryfast", "-crf", "28",
           "-pix_fmt", "yuv420p", "-an", str(out)]
    subprocess.run(cmd, check=True, timeout=600)
    return out


def _write_clip(frames: list[np.ndarray], path: Path) -> Path:
    h, w = frames[0].shape[:2]
    cmd = [ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
           "-s", f"{w}x{h}", "-r", "25", "-i", "-", "-c:v", "libx264", "-crf", "18",
           "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True, timeout=600)
    return path


# Sensor noise of the "camera" clips: grey levels, standard deviation per channel (a phone or
# a consumer camera's footage in good light is around 1.5-3 after its own denoising).
CAMERA_NOISE = 2.5
KINDS = ("demo", "photo", "camera")


def camera_noise(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """*frame* with fresh sensor-like noise: Gaussian, per pixel and channel, blurred a little
    (demosaicing and the camera's own processing correlate neighbours)."""
    noise = rng.normal(0.0, 1.0, frame.shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (3, 3), 0.6)
    noise *= np.float32(CAMERA_NOISE) / max(float(noise.std()), 1e-6)
    return np.clip(np.rint(frame.astype(np.float32) + noise), 0, 255).astype(np.uint8)


def clip_frames(kind: str, seed: int, n: int = 25) -> list[np.ndarray]:
    """A 1 s 1280x720 clip of one content type, moving (a pan). *camera*: the painted
    backdrops with sensor noise, new in every frame (what real footage of flat walls and
    skies carries, and the painted content does not)."""
    if kind == "camera":
        rng = np.random.default_rng([seed, 17])
        return [camera_noise(f, rng) for f in clip_frames("demo", seed, n)]
    if kind == "demo":
        big = demo_frame(seed, (1280 + 100, 720 + 50))
    else:
        photos = skimage_photos()
        name, photo = photos[seed % len(photos)]
        big = cv2.resize(photo, (1280 + 100, 720 + 50), interpolation=cv2.INTER_CUBIC)
    return [big[t * 2:t * 2 + 720, t * 4:t * 4 + 1280].copy() for t in range(n)]


def run_table(clips: int, kinds: tuple[str, ...] = ("demo", "photo")) -> dict:
    table: dict = {}
    partial = RESULTS / f"watermark_table_{'_'.join(kinds)}.partial.json"  # so far
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(clips):  # kinds interleaved: a run cut short covers each
            for kind in kinds:
                frames = clip_frames(kind, seed)
                marked = _write_clip([watermark.embed(f) for f in frames],
                                     Path(tmp) / f"{kind}{seed}.mp4")
                for name, vf in ATTACKS.items():
                    copy = _encode(marked, Path(tmp) / f"a_{name}.mp4", vf)
                    found = verify_file(copy).watermark
                    row = table.setdefault(name, {}).setdefault(kind, {"hits": 0, "n": 0,
                                                                        "min": 1e9})
                    row["hits"] += int(found.marked)
                    row["n"] += 1
                    row["min"] = min(row["min"], round(found.score, 2))
                frame = jpeg(cv2.resize(watermark.embed(frames[0]), (640, 360),
                                        interpolation=cv2.INTER_AREA), 75)
                found = watermark.detect([frame])
                row = table.setdefault("frame_half_jpeg75", {}).setdefault(
                    kind, {"hits": 0, "n": 0, "min": 1e9})
                row["hits"] += int(found.marked)
                row["n"] += 1
                row["min"] = min(row["min"], round(found.score, 2))
                partial.write_text(json.dumps(table, indent=1))
    return {"clips_per_kind": clips, "table": table, "cpu": cpu_model(),
            "embedding": {"amp_flat": watermark.AMP_FLAT, "amp_texture": watermark.AMP_TEXTURE},
            "threshold": watermark.Z_THRESHOLD}


def run_cost() -> dict:
    from skimage.metrics import structural_similarity

    frame = demo_frame(3, (1280, 720))
    photo = cv2.resize(skimage_photos()[0][1], (1280, 720)) if skimage_photos() else frame
    out: dict = {"cpu": cpu_model()}
    for label, image in (("demo_background", frame), ("photo", photo)):
        timings = []
        for _ in range(10):
            start = time.perf_counter()
            marked = watermark.embed(image)
            timings.append(time.perf_counter() - start)
        mse = float(np.mean((marked.astype(np.float64) - image) ** 2))
        ssim = structural_similarity(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY),
                                     cv2.cvtColor(marked, cv2.COLOR_BGR2GRAY))
        out[label] = {"embed_ms_1280x720": round(1000 * min(timings), 2),
                      "psnr_db": round(10 * np.log10(255**2 / mse), 2), "ssim": round(ssim, 4)}
    detector = watermark.Detector()
    for _ in range(60):
        detector.add(frame)
    start = time.perf_counter()
    detector.result()
    out["search_ms"] = round(1000 * (time.perf_counter() - start), 1)
    start = time.perf_counter()
    for _ in range(20):
        watermark.Detector().add(frame)
    out["detect_add_ms_per_1280x720_frame"] = round(1000 * (time.perf_counter() - start) / 20, 2)
    flat = np.full((720, 1280, 3), 128, np.uint8)
    crop = watermark.embed(flat)[300:400, 600:700]
    cv2.imwrite(str(RESULTS / "watermark_flat_crop_400.png"),
                cv2.resize(crop, (400, 400), interpolation=cv2.INTER_NEAREST))
    out["flat_crop_range"] = [int(crop.min()), int(crop.max())]
    out["flat_crop_mean_abs_change"] = round(float(np.abs(crop.astype(float) - 128).mean()), 2)
    # The whole flat frame, without and with sensor noise (which the texture measure counts):
    # the mark's mean strength (its amplitude map) and the mean change marking makes.
    for label, image in (("flat_frame", flat),
                         ("flat_frame_camera", camera_noise(flat, np.random.default_rng(4)))):
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        out[f"{label}_mean_strength"] = round(float(watermark._amplitude_grid(grey).mean()), 2)
        change = np.abs(watermark.embed(image).astype(np.float32) - image)
        out[f"{label}_mean_abs_change"] = round(float(change.mean()), 2)
    out["smooth_crop_after_crf18"] = smooth_crop([frame] * 3)
    rng = np.random.default_rng(3)
    noisy = [camera_noise(frame, rng) for _ in range(3)]
    out["camera_noise"] = CAMERA_NOISE
    out["smooth_crop_after_crf18_camera"] = smooth_crop(
        noisy, "watermark_smooth_crop_400_camera.png", pick=frame)
    return out


def smooth_crop(frames: list[np.ndarray], png: str = "watermark_smooth_crop_400.png",
                size: int = 120, pick: np.ndarray | None = None) -> dict:
    """The smoothest area of the clip *frames* (of *pick*, when given: the frame without its
    noise), unmarked and marked, each through H.264 CRF 18 (as the merger writes), the first
    frames side by side at 400 % in *png*; returns where it is and the mean change there."""
    grey = cv2.cvtColor(frames[0] if pick is None else pick,
                        cv2.COLOR_BGR2GRAY).astype(np.float32)
    h, w = grey.shape
    _, y, x = min((float(grey[y:y + size, x:x + size].std()), y, x)
                  for y in range(0, h - size + 1, 40) for x in range(0, w - size + 1, 40))
    with tempfile.TemporaryDirectory() as tmp:
        crops = []
        for name, images in (("source", frames),
                             ("marked", [watermark.embed(f) for f in frames])):
            clip = _write_clip(images, Path(tmp) / f"{name}.mp4")
            ok, decoded = cv2.VideoCapture(str(clip)).read()
            if not ok:
                raise RuntimeError(f"cannot decode {clip}")
            crops.append(decoded[y:y + size, x:x + size])
    big = [cv2.resize(c, (4 * size, 4 * size), interpolation=cv2.INTER_NEAREST) for c in crops]
    cv2.imwrite(str(RESULTS / png),
                np.hstack([big[0], np.full((4 * size, 8, 3), 255, np.uint8), big[1]]))
    change = np.abs(crops[1].astype(float) - crops[0].astype(float))
    return {"at_xy": [x, y], "size": size, "mean_abs_change": round(float(change.mean()), 2),
            "max_abs_change": int(change.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["fpr", "fpr-merge", "fpr-v1", "table", "cost"])
    parser.add_argument("--shard", default="0/1", help="I/N: this run's share of the inputs")
    parser.add_argument("--inputs", type=int, default=2000)
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=["demo", "photo"],
                        help="table: the content types (camera: painted, with sensor noise)")
    parser.add_argument("--out", help="the results file (a path; default: "
                        "benchmarks/results/watermark_<what>.json)")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    shard, shards = (int(x) for x in args.shard.split("/"))
    result = {"fpr": lambda: run_fpr(args.inputs, shard, shards), "fpr-merge": merge_fpr,
              "fpr-v1": lambda: run_fpr_v1(args.inputs),
              "table": lambda: run_table(args.clips, tuple(args.kinds)),
              "cost": run_cost}[args.what]()
    name = {"fpr": f"fpr.shard{shard}.summary", "fpr-merge": "fpr",
            "fpr-v1": "fpr_v1"}.get(args.what, args.what)
    out = Path(args.out) if args.out else RESULTS / f"watermark_{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

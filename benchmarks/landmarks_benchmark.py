"""68-point landmark error and speed of each landmark plugin, on synthetic 720p frames.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/landmarks_benchmark.py \\
        [--frames 60] [--out benchmarks/results/landmarks.json]

Each frame (1280x720) shows one of swapd's synthetic people (a new identity per frame; yaw
±35°, pitch ±15°, roll ±15°; face 150-400 px high; anywhere in the frame), whose 68 landmarks
are known exactly. MTCNN finds the face once; then each plugin places 68 points on that same
detection: ``face_mesh`` (the default: two crops), ``face_mesh`` with one crop, ``dlib`` (its
shape predictor on MTCNN's box; optional, skipped when dlib is not installed) and
``fitted-5`` (swapd's mean face fitted to MTCNN's five points: what extraction wrote before the
plugins). Error: each point's distance from the truth over the distance between the eye
centres (NME), per face, then mean / median / 95th percentile over faces, and per part. Speed:
the median time of the plugin's step per frame (one face), single-threaded onnxruntime, and
MTCNN's full detection on the same frames for scale. Timings on a shared CPU are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from swapd.demo.identity import make_identity
from swapd.demo.painter import render_face
from swapd.extract.detectors.base import Detection
from swapd.extract.detectors.mtcnn import MtcnnDetector
from swapd.extract.landmarkers.face_mesh import FaceMeshLandmarker
from swapd.faces.faceswap_align import fit_68_to_5

PARTS = {"jaw": slice(0, 17), "brows": slice(17, 27), "nose": slice(27, 36),
         "eyes": slice(36, 48), "mouth": slice(48, 68)}
Place = Callable[[np.ndarray, Detection], "np.ndarray | None"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


def frames(count: int, seed: int = 11) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        height = float(rng.uniform(150, 400))
        centre = (float(rng.uniform(height, 1280 - height)),
                  float(rng.uniform(0.6 * height, 720 - 0.6 * height)))
        pose = (float(rng.uniform(-35, 35)), float(rng.uniform(-15, 15)),
                float(rng.uniform(-15, 15)))
        face = render_face(make_identity(1000 + i), pose=pose, frame_size=(1280, 720),
                           centre=centre, face_height_px=height, background=1000 + i)
        out.append((face.image, face.landmarks))
    return out


def nme(points: np.ndarray, reference: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Each point's distance from ``reference`` over the true distance between the eyes."""
    inter_ocular = np.linalg.norm(truth[36:42].mean(axis=0) - truth[42:48].mean(axis=0))
    return np.linalg.norm(points - reference, axis=1) / inter_ocular


def plugins() -> dict[str, Place]:
    mesh2, mesh1 = FaceMeshLandmarker(passes=2), FaceMeshLandmarker(passes=1)

    def with_mesh(mesh: FaceMeshLandmarker) -> Place:
        def place(image: np.ndarray, face: Detection) -> np.ndarray | None:
            found = mesh.locate(image, face)
            return None if found is None else found.landmarks
        return place

    found: dict[str, Place] = {"face_mesh": with_mesh(mesh2), "face_mesh 1 crop": with_mesh(mesh1)}
    try:
        from swapd.extract.landmarkers.registry import DlibLandmarker

        dlib = DlibLandmarker()
        found["dlib"] = lambda image, face: dlib.locate(image, face).landmarks  # type: ignore
    except Exception as exc:  # noqa: BLE001 - optional: reported, not fatal
        print(f"dlib plugin skipped: {exc}")
    found["fitted-5"] = lambda _image, face: fit_68_to_5(face.landmarks5).astype(np.float64)
    return found


def summary(errors: list[np.ndarray]) -> dict[str, float]:
    per_face = np.array([e.mean() for e in errors])
    stacked = np.stack(errors)
    return {"mean": round(float(per_face.mean()), 4),
            "median": round(float(np.median(per_face)), 4),
            "p95": round(float(np.percentile(per_face, 95)), 4),
            **{part: round(float(stacked[:, s].mean()), 4) for part, s in PARTS.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/landmarks.json"))
    args = parser.parse_args()
    detector = MtcnnDetector()
    data, detect_ms = [], []
    for image, truth in frames(args.frames):
        start = time.perf_counter()
        found = detector.detect(image)
        detect_ms.append((time.perf_counter() - start) * 1000)
        if found:
            data.append((image, truth, found[0]))
    results: dict[str, object] = {
        "machine": cpu_model(), "frames": args.frames, "frame_size": "1280x720",
        "faces_detected": len(data), "mtcnn_detect_ms_per_frame": round(
            statistics.median(detect_ms), 1), "plugins": {}}
    placed_by: dict[str, list[np.ndarray | None]] = {}
    for name, place in plugins().items():
        place(data[0][0], data[0][2])  # warm-up: first-run allocations are not the plugin's cost
        errors, times, points = [], [], []
        for image, truth, face in data:
            start = time.perf_counter()
            found = place(image, face)
            times.append((time.perf_counter() - start) * 1000)
            points.append(found)
            if found is not None:
                errors.append(nme(found, truth, truth))
        placed_by[name] = points
        results["plugins"][name] = {  # type: ignore[index]
            "faces_placed": len(errors), "ms_per_frame": round(statistics.median(times), 2),
            "nme_vs_truth": summary(errors)}
    if "dlib" in placed_by:  # agreement with dlib on the same faces
        for name, points in placed_by.items():
            if name == "dlib":
                continue
            agree = [nme(p, d, truth) for p, d, (_, truth, _)
                     in zip(points, placed_by["dlib"], data, strict=True)
                     if p is not None and d is not None]
            results["plugins"][name]["nme_vs_dlib"] = summary(agree)  # type: ignore[index]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

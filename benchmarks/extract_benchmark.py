"""Extraction speed on a 1280x720 synthetic clip, per stage (decode, detect, landmarks, align,
write).

    .venv/bin/python benchmarks/extract_benchmark.py \\
        [--seconds 10] [--size 512] [--landmarks face_mesh] [--out benchmarks/results/extract.json]

The clip (identity A moving, a sine-tone track) is drawn by swapd, so the landmark error
against the ground truth is reported too. Issue 3's target: >= 10 fps on this 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import swapd  # noqa: F401  (first: it sets OpenMP's wait policy before torch loads)

# isort: split

import numpy as np

from swapd.demo.clip import ClipTruth, truth_path, write_clip
from swapd.demo.identity import DEMO_A
from swapd.extract.alignments import read_alignments
from swapd.extract.extract import extract
from swapd.faces.landmarks import five_points


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=512, help="aligned face side")
    parser.add_argument("--redetect-every", type=int, default=5,
                        help="full detection every N frames (1 = every frame)")
    parser.add_argument("--landmarks", default="face_mesh",
                        help="landmark plugin (face_mesh, dlib, detector)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/extract.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip_720p.mp4"
        start = time.perf_counter()
        write_clip(clip, DEMO_A, seconds=args.seconds, size=(1280, 720), fps=25, seed=8)
        render_s = time.perf_counter() - start
        truth = ClipTruth.load(truth_path(clip))
        report = extract(clip, Path(tmp) / "faces", size=args.size,
                         redetect_every=args.redetect_every, landmarker=args.landmarks)
        frames = read_alignments(report.alignments[0])
        errors, errors68 = [], []
        for i, name in enumerate(sorted(frames)):
            if frames[name]:
                truth68 = truth.landmarks[i]
                expected = five_points(truth68)
                found = np.asarray(frames[name][0]["landmarks"])
                inter_ocular = np.linalg.norm(expected[1] - expected[0])
                if found.shape == (68, 2):
                    errors68.append(np.linalg.norm(found - truth68, axis=1).mean()
                                    / inter_ocular)
                    found = five_points(found)
                errors.append(np.linalg.norm(found - expected, axis=1).mean() / inter_ocular)
    per_frame_ms = {k: round(v / report.frames * 1000, 2) for k, v in report.seconds.items()}
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "clip": "1280x720, 25 fps, synthetic identity A", "frames": report.frames,
        "faces": report.faces, "frames_without_face": report.frames_without_face,
        "aligned_size": args.size, "redetect_every": args.redetect_every,
        "render_seconds": round(render_s, 1), "wall_seconds": round(report.wall_seconds, 2),
        "fps": round(report.fps, 1), "ms_per_frame_by_stage": per_frame_ms,
        "landmark_error_mean": round(float(np.mean(errors)), 4),
        "landmark_error_worst": round(float(np.max(errors)), 4),
        "landmarks": args.landmarks,
        "landmark_error_68_mean": round(float(np.mean(errors68)), 4) if errors68 else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

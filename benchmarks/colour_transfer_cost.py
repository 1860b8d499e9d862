"""What each colour transfer costs per face, and how close it brings the face's colours.

    .venv/bin/python benchmarks/colour_transfer_cost.py [--size 128] [--repeat 5]

A face crop of the synthetic clip (frame 20, coverage 0.875) and the same crop under a known
colour cast (bluer, darker, flatter: tests/merge_support.py's); each method brings the cast
face back. Figures: milliseconds per face (median of --repeat), and the sliced Wasserstein
distance of the face's colours (inside the mask) to the original's, before -> after.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from swapd.config import MergeLook
from swapd.faces.alignment import model_crop_matrix, warp_face
from swapd.faces.landmarks import five_points
from swapd.merger import colour
from swapd.merger.blend import face_mask


def main() -> None:
    from swapd.demo.clip import ClipTruth, truth_path, write_clip
    from swapd.demo.identity import DEMO_A
    from swapd.media import probe_video, read_frames

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_clip(clip, DEMO_A, seconds=1.0, size=(640, 360), fps=25, seed=5)
        frame = list(read_frames(probe_video(clip)))[20]
        landmarks = ClipTruth.load(truth_path(clip)).landmarks[20]
    matrix = model_crop_matrix(five_points(landmarks), args.size, 0.875)
    original = warp_face(frame, matrix, args.size).astype(np.float32) / 255.0
    cast = np.clip(original * np.float32([1.15, 0.8, 0.6]) + np.float32([0.12, 0.02, -0.02]),
                   0, 1).astype(np.float32)
    mask = np.array(face_mask(args.size, 0.875))
    inside = (mask > 0).astype(np.float32)
    before = colour.sliced_wasserstein(cast, original, inside)
    look = MergeLook(balance_3=10.0)
    print(f"{args.size} px faces, {platform.machine()}")
    print("| color_transfer | ms per face | sliced Wasserstein to the original |")
    print("|---|---|---|")
    for method in colour.METHODS:
        colour.transfer(method, cast, original, mask, look)  # warm (imports, caches)
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            out = colour.transfer(method, cast, original, mask, look)
            times.append((time.perf_counter() - started) * 1000)
        after = colour.sliced_wasserstein(out, original, inside)
        print(f"| {method} | {statistics.median(times):.1f} | {before:.3f} -> {after:.3f} |")


if __name__ == "__main__":
    main()

"""How steady a merged face's box is from frame to frame, with and without the merger's box
smoothing (``[merge] box_smoothing``), on the synthetic clip.

    .venv/bin/python benchmarks/merge_steadiness.py [--seconds 4] [--out FILE.json]

The faces are found as a merge finds them (MTCNN, tracked between full detections every 5
frames); the box is the model crop's four corners in the frame (64 px, coverage 0.875).

- jitter: the mean size of the corners' second difference, in pixels per frame squared
  (x[t+1] - 2 x[t] + x[t-1]): what a viewer sees as shaking; smooth motion has little.
- lag: the mean distance of the smoothed corners from the detector's own, in pixels.
- error: the mean distance of the corners from those of the clip's true landmarks.
The true landmarks' own jitter is the floor (the head's real motion).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from swapd.extract.detectors.base import Detection
from swapd.extract.detectors.mtcnn import MtcnnDetector
from swapd.extract.face_tracker import FaceTracker
from swapd.faces.alignment import invert_affine, model_crop_matrix, transform_points
from swapd.faces.landmarks import five_points
from swapd.merger.masks import FaceSteadier

SIZE, COVERAGE = 64, 0.875
_CORNERS = np.array([[0, 0], [SIZE, 0], [0, SIZE], [SIZE, SIZE]], np.float64)


@dataclass(frozen=True)
class Steadiness:
    strength: float
    jitter: float
    lag: float
    error: float | None = None


def detections(frames: list[np.ndarray]) -> list[list[Detection]]:
    """The faces of each frame, found as a video merge finds them."""
    tracker = FaceTracker(MtcnnDetector(), redetect_every=5)
    return [tracker.detect(frame) for frame in frames]


def corners(points5: np.ndarray) -> np.ndarray:
    matrix = model_crop_matrix(points5, SIZE, COVERAGE)
    return transform_points(_CORNERS, invert_affine(matrix))


def _jitter(boxes: np.ndarray) -> float:
    return float(np.linalg.norm(boxes[2:] - 2 * boxes[1:-1] + boxes[:-2], axis=-1).mean())


def box_jitter(found: list[list[Detection]], strength: float,
               truth: np.ndarray | None = None) -> Steadiness:
    """The first face's box steadiness over ``found`` with ``box_smoothing = strength``."""
    steadier = FaceSteadier(box=strength, mask=0.0)
    smoothed, raw = [], []
    for faces in found:
        tracks = steadier.place(faces[:1])
        if not tracks:
            raise ValueError("a frame without a face: use a clip with one throughout")
        smoothed.append(corners(tracks[0].points))
        raw.append(corners(faces[0].landmarks5))
    boxes, raw_boxes = np.array(smoothed), np.array(raw)
    lag = float(np.linalg.norm(boxes - raw_boxes, axis=-1).mean())
    error = None
    if truth is not None:
        true_boxes = np.array([corners(five_points(lm)) for lm in truth[:len(boxes)]])
        error = float(np.linalg.norm(boxes - true_boxes, axis=-1).mean())
    return Steadiness(strength, _jitter(boxes), lag, error)


def main() -> None:
    from swapd.demo.clip import ClipTruth, truth_path, write_clip
    from swapd.demo.identity import DEMO_A
    from swapd.media import probe_video, read_frames

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_clip(clip, DEMO_A, seconds=args.seconds, size=(640, 360), fps=25, seed=5)
        frames = list(read_frames(probe_video(clip)))
        truth = ClipTruth.load(truth_path(clip)).landmarks
    found = detections(frames)
    true_jitter = _jitter(np.array([corners(five_points(lm)) for lm in truth]))
    rows = [box_jitter(found, s, truth) for s in (0.0, 0.3, 0.5, 0.7, 0.9)]
    print(f"{len(frames)} frames, 640x360, {platform.processor() or platform.machine()}")
    print(f"true landmarks' box jitter: {true_jitter:.3f} px/frame^2")
    print("| box_smoothing | jitter (px/frame^2) | vs off | lag (px) | error vs truth (px) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row.strength} | {row.jitter:.3f} | {row.jitter / rows[0].jitter:.2f} | "
              f"{row.lag:.2f} | {row.error:.2f} |")
    if args.out:
        args.out.write_text(json.dumps({"frames": len(frames), "true_jitter": true_jitter,
                                        "rows": [asdict(r) for r in rows]}, indent=1))


if __name__ == "__main__":
    main()

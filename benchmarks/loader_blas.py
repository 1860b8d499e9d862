"""The batch loader's work with the bundled OpenBLAS libraries' threads and without them (issue 19).

    .venv/bin/python benchmarks/loader_blas.py [--batches 60] [--out results.json]

(run as a script: it imports its sibling ``opencv_pool``, as the benchmarks import each other)

One batch of both sides as the loader's thread builds it (the demo's faces of 64 px with
their masks and landmarks, 16 a side, OpenCV in the calling thread as in training), with
``warp_to_landmarks`` on and off, ``--batches`` times, alternating OpenBLAS's default threads
(one per core, waiting actively) and one thread (what
``swapd.threads.openblas_in_calling_thread`` sets while training on the CPU), three times
each. Reported per setting, the best of the three: CPU milliseconds per batch of the
calling thread and of the whole process (OpenBLAS's threads included), and wall milliseconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS before the controller looks)
from opencv_pool import best_of_three  # the same measure, alternation and best of three
from threadpoolctl import ThreadpoolController

import swapd  # noqa: F401  (before torch: it sets OpenMP's wait policy)
from swapd import threads
from swapd.demo.face_sets import write_face_set
from swapd.demo.identity import DEMO_A, DEMO_B
from swapd.trainer.augment import Augmenter, AugmentSettings
from swapd.trainer.data import FaceSet
from swapd.trainer.warp_landmarks import ClosestMatches, candidate_landmarks

SIZE, BATCH = 64, 16


def one_batch(augment: Augmenter, sets: tuple[FaceSet, FaceSet], matches: ClosestMatches | None,
              rng: np.random.Generator) -> None:
    """Both sides' faces drawn and augmented, as ``BatchLoader._make`` does on the CPU."""
    for side in (0, 1):
        own, other = sets[side].arrays, sets[1 - side].arrays
        idx = sets[side].draw(rng, BATCH, own)
        landmarks = None
        if matches is not None:
            table = matches.table(side, own.landmarks, other.landmarks)[idx]
            landmarks = (own.landmarks[idx], candidate_landmarks(table, other.landmarks))
        faces, masks = sets[side].take(idx, own)
        augment(faces, rng, masks, landmarks=landmarks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "loader_blas.json")
    args = parser.parse_args()
    threads.keep_freed_memory()  # as in training
    threads.opencv_in_calling_thread()
    controller = ThreadpoolController()
    blas = controller.select(user_api="blas")
    default_threads = max(lib["num_threads"] for lib in blas.info())
    with tempfile.TemporaryDirectory() as tmp:
        for name, identity in (("a", DEMO_A), ("b", DEMO_B)):
            write_face_set(Path(tmp) / name, identity, SIZE, seed=1)
        sets = (FaceSet(Path(tmp) / "a", SIZE, 0.7), FaceSet(Path(tmp) / "b", SIZE, 0.7))
    results: dict[str, object] = {"openblas_default_threads": default_threads,
                                  "batches": args.batches, "faces_per_side": BATCH,
                                  "size": SIZE, "libraries": [lib["filepath"].rsplit("/", 1)[-1]
                                                              for lib in blas.info()]}
    for label, to_landmarks in (("warp_to_landmarks", True), ("grid_warp", False)):
        augment = Augmenter(SIZE, AugmentSettings(clahe=0.0, warp_to_landmarks=to_landmarks))
        matches = ClosestMatches() if to_landmarks else None
        draws = {"rng": np.random.default_rng(0)}

        def limit(count: int, draws: dict = draws) -> None:
            blas.limit(limits=count)
            draws["rng"] = np.random.default_rng(0)  # each setting times the same batches

        # warm: OpenBLAS's threads woken
        results[label] = best_of_three(
            lambda a=augment, m=matches, d=draws: one_batch(a, sets, m, d["rng"]),
            {"openblas_threads": lambda: limit(default_threads),
             "calling_thread": lambda: limit(1)}, args.batches, warm=5)
        print(label, json.dumps(results[label]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

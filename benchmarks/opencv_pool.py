"""The batch loader's augmentation with OpenCV's own thread pool and without it (issue 19).

    .venv/bin/python benchmarks/opencv_pool.py [--calls 400] [--out results.json]

One side's augmentation (16 demo faces of 64 px with their masks, as the demo trains it;
then with CLAHE on half the faces, the option's default), ``--calls`` times, alternating
OpenCV's default pool (a thread per core) and no pool (``cv2.setNumThreads(1)``, what
``swapd.threads.opencv_in_calling_thread`` sets when training on the CPU), three times each.
Reported per setting, the best of the three: CPU milliseconds per call of the calling thread
and of the whole process (the pool's threads included), and wall milliseconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

import swapd  # noqa: F401  (before torch: it sets OpenMP's wait policy)
from swapd import threads
from swapd.demo.face_sets import write_face_set
from swapd.demo.identity import DEMO_A
from swapd.trainer.augment import Augmenter, AugmentSettings
from swapd.trainer.data import FaceSet


def timed(call: object, calls: int) -> dict[str, float]:
    """Per call: the calling thread's CPU, the process's CPU and the wall, in ms."""
    thread, process, wall = time.thread_time(), time.process_time(), time.perf_counter()
    for _ in range(calls):
        call()  # type: ignore[operator]
    return {"thread_cpu_ms": 1000 * (time.thread_time() - thread) / calls,
            "process_cpu_ms": 1000 * (time.process_time() - process) / calls,
            "wall_ms": 1000 * (time.perf_counter() - wall) / calls}


def best_of_three(call: Callable[[], object], settings: dict[str, Callable[[], object]],
                  calls: int, warm: int) -> dict[str, dict[str, float]]:
    """``call`` timed ``calls`` times under each setting (set by its function, then ``warm``
    untimed calls), the settings alternated three times; per setting, the best of the three
    of each figure of :func:`timed`."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in settings}
    for _ in range(3):
        for name, apply in settings.items():
            apply()
            for _ in range(warm):
                call()
            runs[name].append(timed(call, calls))
    return {name: {key: round(min(run[key] for run in rows), 3) for key in rows[0]}
            for name, rows in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "opencv_pool.json")
    args = parser.parse_args()
    threads.keep_freed_memory()  # as in training
    pool = cv2.getNumThreads()
    with tempfile.TemporaryDirectory() as tmp:
        write_face_set(Path(tmp) / "a", DEMO_A, 64, seed=1)
        faces_set = FaceSet(Path(tmp) / "a", 64, 0.7)
        rng = np.random.default_rng(0)
        faces, masks = faces_set.take(faces_set.draw(rng, 16, faces_set.arrays),
                                      faces_set.arrays)
    results: dict[str, object] = {"opencv_default_threads": pool, "calls": args.calls}
    for label, clahe in (("without_clahe", 0.0), ("clahe_half", 0.5)):
        augment = Augmenter(64, AugmentSettings(clahe=clahe))
        # warm: the pool started, numpy's BLAS threads too
        results[label] = best_of_three(
            lambda a=augment: a(faces, rng, masks),
            {"pool": lambda: cv2.setNumThreads(pool), "alone": lambda: cv2.setNumThreads(1)},
            args.calls, warm=10)
        print(label, json.dumps(results[label]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

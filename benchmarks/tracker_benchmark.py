"""Snapshot tracker: what tracker data costs at a snapshot, and how fast the dashboard's
queries are over 5,000 faces x 20 snapshots.

    .venv/bin/python benchmarks/tracker_benchmark.py \\
        [--faces 5000] [--snapshots 20] [--keep DIR] [--out benchmarks/results/tracker.json]

1. A trainer with the demo's model (lightweight, width 0.125, 64 px) on ``--faces`` synthetic
   faces per side: one snapshot with tracker data for every face (reconstruction, loss, the
   A>B swap, WebP files, ``faces.jsonl``), timed, with the bytes it wrote.
2. The state database: that snapshot's rows written ``--snapshots`` times (as if each
   snapshot had them), then the queries the tracker view makes: one snapshot's worst 100 faces
   of a side, a page further on, one face across all snapshots, the per-snapshot summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import swapd  # noqa: F401  (first: it sets OpenMP's wait policy before torch loads)

# isort: split

from swapd.demo.face_sets import write_face_set
from swapd.demo.identity import DEMO_A, DEMO_B
from swapd.state import StateStore
from swapd.trainer.loop import Trainer
from swapd.trainer.model_io import ModelIO
from swapd.trainer.options import split_options

DEMO_OPTIONS = {"input_size": 64, "width": 0.125, "dense_dim": 128, "coverage": 0.7,
                "learning_rate": 1e-3, "clahe": 0.0}


def faces_in(folder: Path, identity: object, count: int, seed: int) -> Path:
    if len(list(folder.glob("*.png"))) < count:
        write_face_set(folder, identity, count, seed=seed, size=128)  # type: ignore[arg-type]
    return folder


def timed(call: object, repeat: int = 5) -> float:
    """Median seconds of ``call()``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--faces", type=int, default=5000, help="faces per side")
    parser.add_argument("--snapshots", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="render the faces here once and reuse them")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tracker.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        start = time.perf_counter()
        set_a = faces_in(root / f"a{args.faces}", DEMO_A, args.faces, 1)
        set_b = faces_in(root / f"b{args.faces}", DEMO_B, args.faces, 2)
        render_s = time.perf_counter() - start
        trainer_options, model_options = split_options("lightweight", DEMO_OPTIONS)
        start = time.perf_counter()
        trainer = Trainer("lightweight", model_options.model_dump(), trainer_options, set_a,
                          set_b, Path(tmp) / "model", batch_size=16)
        io = ModelIO(trainer)
        load_s = time.perf_counter() - start
        try:
            for _ in range(3):
                trainer.step()
            io.save()
            start = time.perf_counter()
            taken = io.snapshot(tracker=True)
            track_s = time.perf_counter() - start
        finally:
            trainer.close()
        tracker_dir = taken.snapshot.folder / "tracker"
        tracker_bytes = sum(p.stat().st_size for p in tracker_dir.rglob("*") if p.is_file())

        store = StateStore(Path(tmp) / "state.db")
        start = time.perf_counter()
        for k in range(args.snapshots):
            store.add_tracked_faces("bench", (k + 1) * 1000,
                                    [replace(t, loss=t.loss * (1 + 0.01 * k))
                                     for t in taken.tracked])
        insert_s = time.perf_counter() - start
        last = args.snapshots * 1000
        face = taken.tracked[0].face
        queries = {
            "worst_100_of_a_snapshot_side": timed(
                lambda: store.tracked_faces("bench", last, "a", "loss", 100)),
            "page_40_of_a_snapshot_side": timed(
                lambda: store.tracked_faces("bench", last, "a", "loss", 100, 4000)),
            "one_face_across_snapshots": timed(
                lambda: store.face_timeline("bench", "a", face)),
            "summary_per_snapshot": timed(lambda: store.tracker_snapshots("bench")),
        }
        rows = len(taken.tracked) * args.snapshots
        db_mib = os.path.getsize(store.path) / 2**20
        store.close()

    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "faces_per_side": args.faces, "render_seconds": round(render_s, 1),
        "trainer_load_seconds": round(load_s, 1),
        "snapshot_with_tracker_seconds": round(track_s, 2),
        "tracked_faces": len(taken.tracked),
        "tracker_mib": round(tracker_bytes / 2**20, 1),
        "tracker_bytes_per_face": round(tracker_bytes / len(taken.tracked)),
        "db_rows": rows, "db_insert_seconds": round(insert_s, 2),
        "db_mib": round(db_mib, 1),
        "query_ms": {k: round(v * 1000, 2) for k, v in queries.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

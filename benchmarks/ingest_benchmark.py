"""Face ingest: index a set of N aligned faces cold, then re-scan it warm (nothing changed).

    .venv/bin/python benchmarks/ingest_benchmark.py [--faces 5000] [--size 256] \\
        [--format swapd|faceswap|plain] [--keep DIR] [--out benchmarks/results/ingest.json]

Cold: every file is read, checked (structure, decode, metadata, landmarks), hashed, its pose
solved, and its row written to a fresh state database: what the service does when a set is
dropped in. Warm: the same scan again with nothing changed (one stat per file, one query).
Issue 3's targets: cold >= 500 faces/s, warm < 2 s for 5,000 faces.

``--format``: swapd's own faces (landmarks in the header); faceswap's (head-centred, frame
landmarks only: each face's landmarks are found by MTCNN and mapped); plain PNGs (no metadata:
MTCNN finds five landmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2

from swapd.daemon.ingest import FaceIngest, ingest_threads
from swapd.demo.face_sets import write_face_set
from swapd.demo.identity import DEMO_A
from swapd.faces.faceswap_png import read_aligned_png, write_aligned_png
from swapd.state import StateStore
from swapd.workspace import Workspace


def make_set(folder: Path, count: int, size: int, form: str) -> float:
    """Render ``count`` synthetic faces into ``folder`` (aged, so they count as settled)."""
    start = time.perf_counter()
    paths = write_face_set(folder, DEMO_A, count, seed=9, size=size,
                           centering="face" if form == "swapd" else "head")
    for path in paths if form != "swapd" else []:
        image, meta = read_aligned_png(path)
        assert meta is not None
        if form == "faceswap":
            meta.swapd = None  # as faceswap writes them: landmarks in the frame's pixels only
            write_aligned_png(path, image, meta, durable=False)
        else:
            cv2.imwrite(str(path), image)
    past = time.time() - 60
    for path in folder.iterdir():
        os.utime(path, (past, past))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--faces", type=int, default=5000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--format", choices=["swapd", "faceswap", "plain"], default="swapd")
    parser.add_argument("--keep", type=Path, help="render the set here once and reuse it")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/ingest[_FORMAT].json")
    args = parser.parse_args()
    args.out = args.out or Path("benchmarks/results/ingest"
                                + ("" if args.format == "swapd" else f"_{args.format}") + ".json")

    with tempfile.TemporaryDirectory() as tmp:
        source = args.keep / args.format if args.keep else Path(tmp) / "rendered"
        render_s = None
        if not source.is_dir() or len(list(source.glob("*.png"))) < args.faces:
            shutil.rmtree(source, ignore_errors=True)
            render_s = make_set(source, args.faces, args.size, args.format)
        ws = Workspace.open(Path(tmp) / "ws")
        shutil.copytree(source, ws.face_set("bench"), copy_function=shutil.copy2)
        size_mib = sum(p.stat().st_size for p in ws.face_set("bench").iterdir()) / 2**20
        store = StateStore(ws.state_db)
        ingest = FaceIngest(ws, store, min_size=64, settle_seconds=1.0)

        start = time.perf_counter()
        cold = ingest.scan()
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        warm = ingest.scan()
        warm_s = time.perf_counter() - start
        assert cold.accepted == args.faces and warm.unchanged == args.faces, (cold, warm)
        # (getattr: a baseline run of an older swapd, on PYTHONPATH, has no landmarks_from)
        landmarks_from = Counter(str(getattr(r, "landmarks_from", "n/a"))
                                 for r in store.faces("bench"))
        store.close()

    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"{ingest_threads()} ingest threads",
        "faces": args.faces, "face_px": args.size, "format": args.format,
        "set_mib": round(size_mib, 1),
        "render_seconds": None if render_s is None else round(render_s, 1),
        "cold_seconds": round(cold_s, 2), "cold_faces_per_second": round(args.faces / cold_s),
        "warm_seconds": round(warm_s, 3),
        "warm_faces_per_second": round(args.faces / warm_s),
        "landmarks_from": dict(landmarks_from),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

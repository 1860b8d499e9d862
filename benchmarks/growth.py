"""The cost of growth: step time and memory against resolution, RAM and start-up against the
number of faces.

    .venv/bin/python benchmarks/growth.py resolution [--models lightweight:width=0.125 original]
        [--sizes 64 128 192 256] [--steps 3] [--before OTHER_CHECKOUT --rounds 2]
    .venv/bin/python benchmarks/growth.py faces [--counts 1000 5000 20000] [--sizes 64 128]
        [--cap-mib 64] [--faces-dir /tmp/growth_faces]
    (each writes benchmarks/results/growth_<part>.json; --out to change)

``resolution``: for each model and input size, a fresh process builds swapd's ``Trainer`` on
64 synthetic faces per side (256 px files) and times its full step (batch 16 per side): wall
seconds and CPU seconds a step (the median after one warm-up step), the process's peak RSS,
and the parameters' and Adam state's bytes. CPU seconds are given because the machine may be
shared: they grow with the work, whatever else runs.

``faces``: for each count, a folder of that many 128 px faceswap-format PNGs (the demo's
painter renders 1,000 distinct faces; larger sets repeat them under new names, which costs
the loader the same) is loaded by a fresh process into a ``FaceSet`` as ``swapd train`` does
(each file read, its header parsed, decoded, cut, masks drawn): start-up wall and CPU
seconds, and the RAM the set holds per face (resident memory after the load minus before,
over the faces), without a cap and with ``--cap-mib`` (the ``face_cache_mib`` option; with
``--before OTHER_CHECKOUT``, capped by that checkout too), and the time to draw a side's batch
of 16 random faces from it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BATCH = 16
TAKES = 200  # batches drawn from a loaded set, timed
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident memory now (not the peak)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * PAGE


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_step_run(model: str, size: int, steps: int, faces: Path) -> dict[str, Any]:
    """In this process: a Trainer at ``size``; its step timed."""
    import swapd  # noqa: F401  (OpenMP's wait policy, before torch)
    from swapd.trainer.loop import Trainer
    from swapd.trainer.options import parse_assignments, split_options

    name, _, sets = model.partition(":")
    options, model_options = split_options(name, parse_assignments(
        [s for s in sets.split(",") if s] + [f"input_size={size}"]))
    with tempfile.TemporaryDirectory() as tmp, Trainer(
            name, model_options.model_dump(), options, faces / "a", faces / "b",
            Path(tmp) / "m", BATCH) as trainer:
        walls, cpus = [], []
        for _ in range(steps + 1):
            wall, cpu = time.perf_counter(), cpu_seconds()
            trainer.step()
            walls.append(time.perf_counter() - wall)
            cpus.append(cpu_seconds() - cpu)
        params = sum(p.numel() * p.element_size() for p in trainer.model.parameters())
        state = sum(t.numel() * t.element_size() for s in trainer.optimizer.state.values()
                    for t in s.values() if hasattr(t, "numel"))
    return {"model": model, "size": size, "wall_s_per_step": round(statistics.median(walls[1:]), 3),
            "cpu_s_per_step": round(statistics.median(cpus[1:]), 3),
            "first_step_wall_s": round(walls[0], 2), "peak_rss_mib": round(peak_rss_mib()),
            "parameters_mib": round(params / 2**20, 1), "adam_state_mib": round(state / 2**20, 1),
            "eg_per_s": round(2 * BATCH / statistics.median(walls[1:]), 2)}


def one_load_run(folder: Path, size: int, capacity: int | None) -> dict[str, Any]:
    """In this process: load ``folder`` as a face set; time and RAM per face."""
    import swapd  # noqa: F401
    from swapd.trainer.data import FaceSet

    gc.collect()
    before = rss_bytes()
    wall, cpu = time.perf_counter(), cpu_seconds()
    kwargs = {} if capacity is None else {"capacity": capacity}
    face_set = FaceSet(folder, size, **kwargs)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    gc.collect()
    held = rss_bytes() - before
    count = len(face_set)
    result = {"faces": count, "size": size, "capacity": capacity,
              "startup_wall_s": round(wall, 1), "startup_cpu_s": round(cpu, 1),
              "startup_ms_per_face_cpu": round(1000 * cpu / count, 2),
              "ram_per_face_kib": round(held / count / 1024, 1),
              "ram_mib": round(held / 2**20), "peak_rss_mib": round(peak_rss_mib())}
    bounded = getattr(face_set, "bounded", None)
    if bounded is not None:
        result["decoded_held"] = bounded.decoded
        spilled = bounded.spilled_bytes() if hasattr(bounded, "spilled_bytes") else 0
        # every compressed face, in RAM or spilled to disk: the same measure before and now
        result["compressed_kib_per_face"] = round(
            (bounded.packed_bytes() + spilled) / count / 1024, 1)
        if hasattr(bounded, "spilled_bytes"):
            result["compressed_in_ram_mib"] = round(bounded.packed_bytes() / 2**20, 1)
            result["spilled_mib"] = round(spilled / 2**20, 1)
    # drawing a side's batch (16 random faces), as the loader does: past the cap a face
    # outside the LRU is decoded again, from RAM or (spilled) the page cache
    import numpy as np

    rng = np.random.default_rng(0)
    face_set.take(rng.integers(0, count, BATCH))
    wall = time.perf_counter()
    for _ in range(TAKES):
        face_set.take(rng.integers(0, count, BATCH))
    result["take_ms_per_batch"] = round(1000 * (time.perf_counter() - wall) / TAKES, 2)
    return result


def in_child(*args: str, pythonpath: Path = ROOT) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         env=env, timeout=7200)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_faces(root: Path, count: int, unique: int = 1000) -> Path:
    """``count`` 128 px face files (``unique`` distinct renders, the rest copies)."""
    from swapd.demo.face_sets import write_face_set
    from swapd.demo.identity import DEMO_A

    base = root / "unique"
    if len(list(base.glob("*.png"))) < unique:
        write_face_set(base, DEMO_A, unique, seed=21, size=128)
    folder = root / str(count)
    if len(list(folder.glob("*.png"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files = sorted(base.glob("*.png"))
    for i in range(count):
        source = files[i % len(files)]
        os.link(source, folder / f"{source.stem}_{i:06d}.png")  # same bytes, new name
    return folder


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_step":
        print(json.dumps(one_step_run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                                      Path(sys.argv[5]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_load":
        capacity = None if sys.argv[4] == "none" else int(sys.argv[4])
        print(json.dumps(one_load_run(Path(sys.argv[2]), int(sys.argv[3]), capacity)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["resolution", "faces"])
    parser.add_argument("--models", nargs="+", default=["lightweight:width=0.125", "original"])
    parser.add_argument("--sizes", nargs="+", type=int)
    parser.add_argument("--max-size", nargs="+", default=[],
                        help="MODEL=SIZE: skip larger sizes for this model (slow CPUs)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--counts", nargs="+", type=int, default=[1000, 5000, 20000])
    parser.add_argument("--cap-mib", type=int, default=64)
    parser.add_argument("--before", type=Path,
                        help="also run (resolution) or load (faces) with this checkout's swapd")
    parser.add_argument("--rounds", type=int, default=1,
                        help="resolution: times each row runs (alternating with --before)")
    parser.add_argument("--faces-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "growth_faces")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from swapd.faces.masks import MASK_CHANNELS
    from swapd.trainer.face_cache import capacity_for

    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"),
                              "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                              "rows": []}
    out = args.out or ROOT / "benchmarks" / "results" / f"growth_{args.part}.json"
    if args.part == "resolution":
        from swapd.demo.face_sets import write_face_set
        from swapd.demo.identity import DEMO_A, DEMO_B

        limits = dict(item.split("=") for item in args.max_size)
        with tempfile.TemporaryDirectory() as tmp:
            faces = Path(tmp)
            write_face_set(faces / "a", DEMO_A, 64, seed=1)
            write_face_set(faces / "b", DEMO_B, 64, seed=2)
            # With --before, each row runs with this checkout and that one, alternating (which
            # goes first alternates too), --rounds times: a before/after in one run.
            versions = [("now", ROOT)] + ([("before", args.before)] if args.before else [])
            for model in args.models:
                for size in args.sizes or [64, 128, 192, 256]:
                    if size > int(limits.get(model, 10**6)):
                        continue
                    for turn in range(args.rounds):
                        for label, path in versions[turn % 2:] + versions[:turn % 2]:
                            row = in_child("_step", model, str(size), str(args.steps),
                                           str(faces), pythonpath=path)
                            row.update(run=label, round=turn)
                            print(row, flush=True)
                            result["rows"].append(row)
                            out.write_text(json.dumps(result, indent=1))
    else:
        for count in args.counts:
            folder = make_faces(args.faces_dir, count)
            for size in args.sizes or [64, 128]:
                capacity = capacity_for(args.cap_mib, size, 3, MASK_CHANNELS)
                runs = [("uncapped", None, ROOT), (f"cap {args.cap_mib} MiB", capacity, ROOT)]
                if args.before is not None:  # the capped set as that checkout holds it
                    runs.append((f"cap {args.cap_mib} MiB, before", capacity, args.before))
                for label, cap, path in runs:
                    if cap is not None and cap >= count:
                        continue
                    row = in_child("_load", str(folder), str(size),
                                   "none" if cap is None else str(cap), pythonpath=path)
                    row["run"] = label
                    print(row, flush=True)
                    result["rows"].append(row)
                    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""What checking a file costs, two versions of swapd side by side: ``verify_file`` on a 1 s
1280x720 marked clip (wall and CPU seconds of one call, after a first call that loads what
it needs) and ``watermark.detect`` on one marked frame at half size as a JPEG q75 (after a
first detect), each version in fresh processes, interleaved, medians.

    git worktree add /tmp/before <rev>
    .venv/bin/python benchmarks/watermark_verify_cost.py --before /tmp/before \\
        --out benchmarks/results/watermark_flatten_cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Runs in a child with the version's root first on sys.path (argv: root, clip, benchmarks)
CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[3])
import cv2
from swapd.merger import watermark
from swapd.merger.provenance import verify_file
import watermark_robustness as wr
frame = wr.clip_frames("photo", 12, 1)[0]  # skimage's brick: the dense texture case
still = wr.jpeg(cv2.resize(watermark.embed(frame), (640, 360), interpolation=cv2.INTER_AREA), 75)
verify_file(sys.argv[2]); watermark.detect([still])  # warm: imports, caches, ffmpeg's first run
wall, cpu = time.perf_counter(), time.process_time()
found = verify_file(sys.argv[2]).watermark
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
start = time.perf_counter(); one = watermark.detect([still]); frame_s = time.perf_counter() - start
print(json.dumps({"verify_s": wall, "verify_cpu_s": cpu, "frame_detect_s": frame_s,
                  "clip_score": found.score, "frame_score": one.score}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="root of the earlier checkout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "results" / "watermark_flatten_cost.json"))
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT), str(HERE)]
    import watermark_robustness as wr

    from swapd.merger import watermark

    versions = {"before": Path(args.before).resolve(), "after": ROOT}
    runs: dict[str, list[dict]] = {label: [] for label in versions}
    with tempfile.TemporaryDirectory() as tmp:
        clip = wr._write_clip([watermark.embed(f) for f in wr.clip_frames("demo", 1)],
                              Path(tmp) / "clip.mp4")
        for _ in range(args.rounds):
            for label, root in versions.items():
                out = subprocess.run([sys.executable, "-c", CHILD, str(root), str(clip),
                                      str(HERE)], capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"the {label} child failed:\n{out.stderr}")
                runs[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
    medians = {label: {key: round(statistics.median(r[key] for r in rs), 3) for key in rs[0]}
               for label, rs in runs.items()}
    result = {"cpu": wr.cpu_model(), "before": str(versions["before"]), "median": medians,
              "runs": runs}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(medians, indent=1))


if __name__ == "__main__":
    main()

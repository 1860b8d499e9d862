"""swapd against faceswap, side by side in one run: training examples per second.

    .venv/bin/python benchmarks/setup_faceswap.py /work/src/faceswap --dest /tmp/fsbench
    .venv/bin/python benchmarks/vs_faceswap.py --setup /tmp/fsbench/setup.json \\
        [--models original lightweight] [--rounds 2] [--iterations 8] [--warmup 3] \\
        [--out benchmarks/results/vs_faceswap.json]

The same faces (``setup_faceswap.py``: synthetic people extracted by ``swapd faces extract``
as faceswap's 512 px head-centred PNGs, checked by faceswap's own reader), the same model,
batch 16 per side, no previews, each tool started as its command (``swapd train``,
``faceswap.py train``) in a fresh process. The comparisons:

- ``default``: each tool as a user runs it: no environment variable, default options (faceswap:
  SSIM + MSE, coverage 100 %, torch's own threads with OpenMP spinning; swapd: SSIM + MAE,
  coverage 87.5 %, its own thread set-up).
- ``matched``: the settings the issue names made the same: swapd set to faceswap's loss
  (SSIM + MSE) and coverage (1.0), and both on the same threads (every core, passive OpenMP
  waiting: ``OMP_WAIT_POLICY=PASSIVE`` given to faceswap, which is swapd's own set-up). Each
  tool keeps its default precision: faceswap float32, swapd ``auto`` (bf16 on a CPU with
  native bf16, float32 elsewhere).
- ``matched_fp32``: ``matched`` with swapd in float32 too (``mixed_precision = "off"``):
  the same arithmetic on both sides, what is left is each tool's own pipeline.
- ``default_fp32``: ``default`` with swapd in float32: swapd as shipped on a CPU without
  native bf16 (where ``auto`` picks float32), measurable on a CPU that has it.

Both tools are timed the same way (``benchmarks/step_timer.py``): the clock at the end of each
training step, so an interval holds everything a step costs the user, loading included.
The first ``--warmup`` intervals of a run are dropped (start-up, faceswap's save at iteration
1); a run's rate is 32 examples over the median of the rest. Runs alternate between the tools
(swapd first in even rounds, faceswap first in odd ones) and every comparison and model is
visited once per round, so slow spells of a shared machine fall on both. Reported: per tool,
the median of its runs' rates with the lowest and highest, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
# Variables that would change either tool's thread set-up: a user's default environment
# has none of them.
THREAD_VARIABLES = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "MKL_NUM_THREADS")
MATCHED_SWAPD = ["--set", "loss=ssim", "--set", "extra_losses={mse = 1.0}",
                 "--set", "coverage=1.0"]
FLOAT32 = ["--set", "mixed_precision=off"]  # faceswap trains in float32 by default
COMPARISON_SWAPD = {"default": [], "matched": MATCHED_SWAPD,
                    "matched_fp32": [*MATCHED_SWAPD, *FLOAT32], "default_fp32": FLOAT32}
# Comparisons that give faceswap swapd's thread set-up (the others run it as shipped).
MATCHED_THREADS = {"matched", "matched_fp32"}


def base_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}


def swapd_command(model: str, faces: Path, model_dir: Path, iterations: int,
                  comparison: str) -> list[str]:
    extra = COMPARISON_SWAPD[comparison]
    return ["-m", "swapd", "train", "--model", model, "-A", str(faces / "a"),
            "-B", str(faces / "b"), "--model-dir", str(model_dir), "--batch-size", str(BATCH),
            "--iterations", str(iterations), "--no-tracker", *extra]


def faceswap_command(setup: dict[str, Any], model: str, faces: Path, model_dir: Path,
                     iterations: int) -> list[str]:
    return [str(Path(setup["faceswap"]) / "faceswap.py"), "train", "-A", str(faces / "a"),
            "-B", str(faces / "b"), "-m", str(model_dir), "-t", model, "-b", str(BATCH),
            "-i", str(iterations)]


def timed_run(tool: str, setup: dict[str, Any], model: str, comparison: str,
              iterations: int, warmup: int, scratch: Path) -> dict[str, Any]:
    """One fresh training run of ``tool``; its step intervals and rate."""
    faces = Path(setup["faces"])
    model_dir = scratch / f"{tool}_{model}"
    shutil.rmtree(model_dir, ignore_errors=True)
    steps = scratch / "steps.json"
    steps.unlink(missing_ok=True)
    env = base_environment()
    if tool == "swapd":
        python, cwd = sys.executable, ROOT
        env["PYTHONPATH"] = str(ROOT)
        wrap = "swapd.trainer.loop:Trainer.step"
        command = swapd_command(model, faces, model_dir, iterations, comparison)
    else:
        python, cwd = setup["python"], Path(setup["faceswap"])
        env["KERAS_HOME"] = setup["keras_home"]  # faceswap's installer's keras.json
        wrap = "lib.training.train:Trainer.train_one_step"  # what scripts/train.py calls
        command = faceswap_command(setup, model, faces, model_dir, iterations)
    if comparison in MATCHED_THREADS:
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # swapd's own set-up, given to both
    started = time.perf_counter()
    result = subprocess.run([python, str(HERE / "step_timer.py"), "--out", str(steps),
                             "--wrap", wrap, "--", *command], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    shutil.rmtree(model_dir, ignore_errors=True)
    record = json.loads(steps.read_text()) if steps.exists() else {"ends": []}
    ends = record["ends"]
    intervals = [b - a for a, b in zip(ends, ends[1:], strict=False)][warmup:]
    if result.returncode != 0 or not intervals:
        tail = (result.stdout + result.stderr)[-3000:]
        raise SystemExit(f"{tool} {model} {comparison}: rc {result.returncode}, "
                         f"{len(ends)} steps timed\n{tail}")
    step = statistics.median(intervals)
    return {"tool": tool, "model": model, "comparison": comparison,
            "intervals_s": [round(x, 3) for x in intervals], "median_step_s": round(step, 3),
            "eg_per_s": round(2 * BATCH / step, 2),
            "first_step_after_s": round(ends[0] - record["start"], 1), "wall_s": round(wall, 1)}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(r["comparison"], r["model"]) for r in runs})
    for comparison, model in keys:
        row: dict[str, Any] = {"comparison": comparison, "model": model}
        for tool in ("swapd", "faceswap"):
            rates = [r["eg_per_s"] for r in runs if r["comparison"] == comparison
                     and r["model"] == model and r["tool"] == tool]
            if not rates:
                break
            row[tool] = {"median_eg_per_s": round(statistics.median(rates), 2),
                         "min": min(rates), "max": max(rates), "runs": rates}
        else:
            row["ratio"] = round(row["swapd"]["median_eg_per_s"]
                                 / row["faceswap"]["median_eg_per_s"], 2)
            # Each round's two runs ran back to back: their ratio is the least disturbed
            # by a shared machine's slow spells.
            pairs = {}
            for r in runs:
                if r["comparison"] == comparison and r["model"] == model:
                    pairs.setdefault(r["round"], {})[r["tool"]] = r["eg_per_s"]
            row["round_ratios"] = [round(p["swapd"] / p["faceswap"], 2)
                                   for _, p in sorted(pairs.items()) if len(p) == 2]
            rows.append(row)
    return rows


def cpu_description() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["model"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                info["flags_of_note"] = sorted(f for f in flags if f.startswith(
                    ("avx", "amx", "fma", "f16c")))
                break
    except OSError:
        pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", type=Path, default=Path(tempfile.gettempdir()) / "fsbench"
                        / "setup.json")
    parser.add_argument("--models", nargs="+", default=["original", "lightweight"])
    parser.add_argument("--comparisons", nargs="+", default=["default", "matched"],
                        choices=list(COMPARISON_SWAPD))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=8, help="steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="first intervals dropped")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results"
                        / "vs_faceswap.json")
    args = parser.parse_args()
    setup = json.loads(args.setup.read_text())
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for comparison in args.comparisons:
                for model in args.models:
                    tools = ("swapd", "faceswap") if round_ % 2 == 0 else ("faceswap", "swapd")
                    for tool in tools:
                        run = timed_run(tool, setup, model, comparison, args.iterations,
                                        args.warmup, Path(tmp))
                        run["round"] = round_
                        runs.append(run)
                        print(f"round {round_} {comparison:12} {model:12} {tool:9} "
                              f"{run['eg_per_s']:6.2f} EG/s (step {run['median_step_s']} s, "
                              f"first step after {run['first_step_after_s']} s)", flush=True)
                        result = {"date": time.strftime("%Y-%m-%d %H:%M"),
                                  "cpu": cpu_description(), "setup": setup,
                                  "batch_per_side": BATCH, "iterations": args.iterations,
                                  "warmup_dropped": args.warmup, "rows": summarise(runs),
                                  "runs": runs}
                        args.out.write_text(json.dumps(result, indent=1))
    for row in summarise(runs):
        print(f"{row['comparison']:12} {row['model']:12} swapd "
              f"{row['swapd']['median_eg_per_s']} ({row['swapd']['min']}-"
              f"{row['swapd']['max']}) faceswap {row['faceswap']['median_eg_per_s']} "
              f"({row['faceswap']['min']}-{row['faceswap']['max']}) ratio {row['ratio']} "
              f"(rounds {row['round_ratios']})")


if __name__ == "__main__":
    main()

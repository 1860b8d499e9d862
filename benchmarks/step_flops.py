"""How close each tool's training step comes to the CPU's float32 peak.

    .venv/bin/python benchmarks/step_flops.py \\
        [--results benchmarks/results/vs_faceswap_fp32.json] \\
        [--out benchmarks/results/step_flops.json]

Counts the floating-point operations of one training step of faceswap's models as swapd
builds them (batch 16 a side, 64 px, the defaults: forward over both sides, backward;
``torch.utils.flop_counter``, which counts convolutions and matrix products, the whole of
these models' arithmetic but for elementwise work) and measures what this machine's cores
reach on a large float32 matrix product with torch's threads (the practical peak: oneDNN's
and MKL's best case). Then, for every float32 run of a ``vs_faceswap.py`` results file, the
rate each tool's median step reached: its FLOPs over its step time, and that as a share of
the peak. faceswap builds the same layers (Keras's torch backend), so one count serves both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import swapd  # noqa: F401  (first: it sets OpenMP's wait policy before torch loads)

# isort: split

import torch
from torch.utils.flop_counter import FlopCounterMode

from swapd.trainer.models import build_model

ROOT = Path(__file__).resolve().parent.parent
BATCH = 16
FLOAT32_COMPARISONS = {"default_fp32", "matched_fp32"}


def step_flops(model_name: str, size: int = 64) -> int:
    """FLOPs of one step (forward over both sides, backward) of *model_name*'s defaults."""
    torch.manual_seed(0)
    model = build_model(model_name, {"input_size": size}).to(memory_format=torch.channels_last)
    faces = [torch.rand(BATCH, 3, size, size).contiguous(memory_format=torch.channels_last)
             for _ in range(2)]
    with FlopCounterMode(display=False) as counter:
        out_a, out_b = model.both_sides(*faces)
        loss = (out_a - faces[0]).abs().mean() + (out_b - faces[1]).abs().mean()
        loss.backward()
    return int(counter.get_total_flops())


def matmul_peak(n: int = 2048, repeats: int = 20) -> float:
    """The best float32 GFLOP/s of an n x n matrix product on torch's threads."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def rates(results: dict[str, Any], flops: dict[str, int], peak: float) -> list[dict[str, Any]]:
    """Each float32 comparison's median step per tool, as GFLOP/s and share of the peak."""
    rows = []
    runs = [r for r in results["runs"]
            if r["comparison"] in FLOAT32_COMPARISONS and r["model"] in flops]
    for key in sorted({(r["comparison"], r["model"], r["tool"]) for r in runs}):
        comparison, model, tool = key
        steps = [r["median_step_s"] for r in runs
                 if (r["comparison"], r["model"], r["tool"]) == key]
        step = statistics.median(steps)
        gflops = flops[model] / step / 1e9
        rows.append({"comparison": comparison, "model": model, "tool": tool,
                     "median_step_s": step, "gflop_per_s": round(gflops, 1),
                     "share_of_peak": round(gflops / peak, 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path,
                        default=ROOT / "benchmarks" / "results" / "vs_faceswap_fp32.json")
    parser.add_argument("--models", nargs="+", default=["original", "lightweight"])
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "step_flops.json")
    args = parser.parse_args()
    flops = {m: step_flops(m) for m in args.models}
    peaks = [matmul_peak() for _ in range(3)]
    peak = max(peaks)
    for model, count in flops.items():
        print(f"{model:12} {count / 1e9:8.1f} GFLOP a step (batch {BATCH} a side, 64 px)")
    print(f"float32 matrix product, {torch.get_num_threads()} threads: "
          f"{', '.join(f'{p:.1f}' for p in peaks)} GFLOP/s (peak taken: {peak:.1f})")
    results = json.loads(args.results.read_text()) if args.results.exists() else None
    rows = rates(results, flops, peak) if results else []
    for row in rows:
        print(f"{row['comparison']:12} {row['model']:12} {row['tool']:9} step "
              f"{row['median_step_s']:.3f} s  {row['gflop_per_s']:6.1f} GFLOP/s  "
              f"{100 * row['share_of_peak']:5.1f} % of the peak")
    args.out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M"), "threads": torch.get_num_threads(),
        "step_gflop": {m: round(c / 1e9, 2) for m, c in flops.items()},
        "matmul_peak_gflop_per_s": [round(p, 1) for p in peaks],
        "results": str(args.results.relative_to(ROOT)) if results else None,
        "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

"""swapd's trainer on a CUDA GPU: float32 against bf16 (and fp16) mixed precision, in one run.

    python benchmarks/cuda_training.py [--models original lightweight] [--steps 60] \\
        [--batch-size 16] [--out benchmarks/results/cuda_training.json]

Needs a CUDA device (CI has none; run it where one is lent). For each model and precision it
trains ``Trainer.step()`` as the worker does (data pipeline, augmentation, masks, penalized
loss, NaN guard), times the steps after warm-up, and checks what a user relies on:

- the loss falls;
- the checkpoint written on the GPU loads on the CPU, and the CPU's A>B output is close to
  the GPU's (reported in uint8 levels: the weights are float32 either way; the GPU computed
  in TF32 or bf16);
- the ONNX export (made from the CPU copy) passes swapd's parity check.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import swapd  # noqa: F401  (first: it sets OpenMP's wait policy before torch loads)

# isort: split

import numpy as np
import torch

from swapd.demo.face_sets import write_face_set
from swapd.demo.identity import DEMO_A, DEMO_B
from swapd.exporter.checkpoint_export import export_trainer
from swapd.trainer.loop import Trainer
from swapd.trainer.model_io import ModelIO
from swapd.trainer.options import split_options
from swapd.trainer.setup import loader_workers


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(model: str, precision: str, faces: tuple[Path, Path], work: Path, steps: int,
        batch_size: int, device: str, workers: int = 0) -> dict[str, Any]:
    options = {"device": device, "seed": 1,
               "mixed_precision": "off" if precision == "fp32" else precision,
               "loader_workers": workers}
    trainer_options, model_options = split_options(model, options)
    model_dir = work / f"{model}_{precision}_{workers}"
    trainer = Trainer(model, model_options.model_dump(), trainer_options, faces[0], faces[1],
                      model_dir, batch_size)
    io = ModelIO(trainer)
    assert trainer.device.type == device, trainer.device
    losses, seconds = [], []
    for _ in range(steps):
        _sync()
        stats = trainer.step()
        _sync()
        losses.append((stats.loss_a + stats.loss_b) / 2)
        seconds.append(stats.seconds)
    io.save()
    probe = trainer.set_a.faces[:8]
    on_gpu = trainer.predict(probe, "b")
    trainer.close()
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    cpu_options, _ = split_options(model, {**options, "device": "cpu"})
    cpu = Trainer(model, model_options.model_dump(), cpu_options, faces[0], faces[1],
                  model_dir, batch_size)
    assert cpu.iteration == steps, cpu.iteration
    on_cpu = cpu.predict(probe, "b")
    export = export_trainer(cpu, model_dir / "a_to_b.onnx")
    cpu.close()
    per_step = statistics.median(seconds[min(5, steps - 1):])
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    return {
        "model": model, "precision": precision,
        "loader_workers": loader_workers(trainer.options, trainer.device),
        "batch_size": batch_size, "steps": steps,
        "seconds_per_step": round(per_step, 4),
        "examples_per_second": round(2 * batch_size / per_step, 1),
        "loss_first5": round(float(first), 4), "loss_last5": round(float(last), 4),
        "loss_fell": bool(last < first),
        # uint8 levels: TF32 convolutions (torch's default on CUDA) and bf16 move a few
        "gpu_vs_cpu_max_levels": int(np.abs(on_gpu.astype(int) - on_cpu.astype(int)).max()),
        "gpu_vs_cpu_mean_levels": round(float(np.abs(on_gpu.astype(int)
                                                      - on_cpu.astype(int)).mean()), 3),
        "onnx_parity_max_abs": float(export.max_abs_diff),
        "peak_gpu_gib": round(peak_gib, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["original", "lightweight"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"],
                        choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--faces", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0],
                        help="batch-loader threads to compare (0 = the trainer's auto)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cuda_training.json"))
    parser.add_argument("--device", default="cuda",
                        help="cpu only to try the script itself where no GPU is")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("cuda_training: no CUDA device here")
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        write_face_set(work / "a", DEMO_A, args.faces, seed=1, size=256)
        write_face_set(work / "b", DEMO_B, args.faces, seed=2, size=256)
        print(f"faces rendered in {time.perf_counter() - started:.1f} s", flush=True)
        for model in args.models:
            for precision in args.precisions:
                for workers in args.workers:
                    result = run(model, precision, (work / "a", work / "b"), work, args.steps,
                                 args.batch_size, args.device, workers)
                    print(json.dumps(result), flush=True)
                    results["runs"].append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

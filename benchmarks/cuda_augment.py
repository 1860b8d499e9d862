"""Where batches are augmented, on a CUDA GPU: swapd's step against a bare loop, per path.

    python benchmarks/cuda_augment.py [--steps 40] [--out benchmarks/results/cuda_augment.json]

Needs a CUDA device (``--device cpu --steps 3 --warmup 1`` only tries the script itself). For each
configuration (lightweight and original at 64 px, batch 16 per side, in float32 and bf16;
SAEHD at DeepFaceLab's defaults, liae-ud, 128 and 256 px, batch 8 as DeepFaceLab suggests for a
GPU of 4 GB or more, float32 and bf16) it times, in turn:

- the bare loop: forward both sides, the same loss (plus a learned mask's), backward, fused
  Adam, channels_last, the same autocast, on batches already on the GPU;
- ``Trainer.step()`` with ``augment_device = "loader"`` and 1 and 4 loader threads (the OpenCV
  path), and with ``augment_device = "device"`` (uint8 faces up, the augmentation in torch).

Reported: seconds per step (median after the warm-up), examples per second, and each swapd
path over the bare loop (goal: >= 0.95, no model loader-bound).
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

import torch

from swapd.demo.face_sets import write_face_set
from swapd.demo.identity import DEMO_A, DEMO_B
from swapd.trainer.loop import Trainer
from swapd.trainer.options import split_options

# (name, model, model options, batch size per side)
CONFIGS = [
    ("lightweight", "lightweight", {}, 16),
    ("original", "original", {}, 16),
    ("saehd_128", "saehd", {"input_size": 128}, 8),
    ("saehd_256", "saehd", {"input_size": 256}, 8),
]
PATHS = [("loader_1", "loader", 1), ("loader_4", "loader", 4), ("device", "device", 0)]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def trainer_for(model: str, extra: dict[str, Any], precision: str, where: str, workers: int,
                faces: Path, work: Path, batch: int, device: str) -> Trainer:
    options, model_options = split_options(model, {
        **extra, "device": device, "seed": 1, "augment_device": where,
        "loader_workers": workers, "mixed_precision": "off" if precision == "fp32" else precision})
    return Trainer(model, model_options.model_dump(), options, faces / "a", faces / "b",
                   work, batch)


def swapd_times(trainer: Trainer, steps: int, device: str) -> list[float]:
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        trainer.step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def bare_times(trainer: Trainer, steps: int, device: str) -> list[float]:
    """The bare loop on ``trainer``'s model, loss and precision, on 4 batches its loader
    made, already on the device: what the step costs with no data pipeline at all."""
    batches = []
    for _ in range(4):
        b = trainer.loader.get()
        batches.append([trainer._tensor(x) for x in (b.input_a, b.target_a, b.mask_a,
                                                     b.input_b, b.target_b, b.mask_b)])
    model, loss_fn = trainer.model, trainer._loss_fn
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, fused=device == "cuda")

    def side(inputs: torch.Tensor, target: torch.Tensor, masks: torch.Tensor,
             name: str) -> torch.Tensor:
        with trainer.precision.autocast():
            face, learned = model.split(model(inputs, name))
        loss = loss_fn(face.float(), target, masks)
        if learned is not None:
            loss = loss + (learned.float() - masks[:, 0:1]).square().mean()
        return loss

    times = []
    for i in range(steps):
        in_a, tg_a, m_a, in_b, tg_b, m_b = batches[i % 4]
        _sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        (side(in_a, tg_a, m_a, "a") + side(in_b, tg_b, m_b, "b")).backward()
        optimizer.step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float], warmup: int, examples: int) -> dict[str, float]:
    median = statistics.median(times[warmup:])
    return {"seconds_per_step": round(median, 5), "egs": round(examples / median, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", nargs="+", default=[c[0] for c in CONFIGS],
                        choices=[c[0] for c in CONFIGS])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--faces", type=int, default=64)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cuda_augment.json"))
    args = parser.parse_args()
    if not 0 <= args.warmup < args.steps:
        parser.error(f"--warmup ({args.warmup}) must be below --steps ({args.steps}): the "
                     "warm-up steps are not timed")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("cuda_augment: no CUDA device here")
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__, "steps": args.steps, "warmup": args.warmup, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_face_set(work / "a", DEMO_A, args.faces, seed=1, size=256)
        write_face_set(work / "b", DEMO_B, args.faces, seed=2, size=256)
        for name, model, extra, batch in (c for c in CONFIGS if c[0] in args.configs):
            for precision in args.precisions:
                row: dict[str, Any] = {"config": name, "precision": precision, "batch": batch}
                examples = 2 * batch
                for label, where, workers in PATHS:
                    trainer = trainer_for(model, extra, precision, where, workers, work,
                                          work / f"{name}_{precision}_{label}", batch,
                                          args.device)
                    try:
                        if label == "device":  # the batch really is made on the device
                            probe = trainer.loader.get()
                            assert probe.input_a.device.type == args.device, probe.input_a
                        if label == "loader_1":
                            row["bare"] = summary(bare_times(trainer, args.steps, args.device),
                                                  args.warmup, examples)
                        row[label] = summary(swapd_times(trainer, args.steps, args.device),
                                             args.warmup, examples)
                    finally:
                        trainer.close()
                    row[f"{label}_vs_bare"] = round(row["bare"]["seconds_per_step"]
                                                    / row[label]["seconds_per_step"], 3)
                print(json.dumps(row), flush=True)
                results["runs"].append(row)
                if args.device == "cuda":
                    torch.cuda.empty_cache()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

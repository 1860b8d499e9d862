"""The demo's figures: training speed (EG/s), time to the first visible swap, merge speed.

    .venv/bin/python benchmarks/demo_benchmark.py [--iterations 3000] [--out results.json]

It builds the demo workspace in a temp folder and runs the demo job's training exactly as the
worker does (same Trainer, same options), then exports ONNX and merges the demo clip.

"Visible swap": the swap score (see `swap_score`) is 1.0 while both sides' losses are below
RECONSTRUCTED_LOSS. The score is recorded every --check-every iterations in the timeline.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from swapd.config import JobFile
from swapd.demo import DEMO_JOB, create_demo_workspace
from swapd.trainer.loop import Trainer
from swapd.trainer.options import split_options
from swapd.workspace import Workspace

# Below this loss (each side) the previews show the faces' own features, not an average blob.
RECONSTRUCTED_LOSS = 0.25


def swap_score(trainer: Trainer) -> float:
    """The share of preview swaps (A>B and B>A, every preview face) that look like their target.

    "Looks like" is judged on the face's centre (the middle half of the crop: skin, eyes, nose,
    mouth; not the background): its mean colour is nearer to the mean colour of the target
    side's own reconstructions than to the source side's. The demo identities differ strongly
    in skin tone and hair, so at 1.0 every swap in the preview shows the other identity.
    """
    _, a_to_a, a_to_b, _, b_to_b, b_to_a = trainer.preview_columns()

    def centre_colour(faces: np.ndarray) -> np.ndarray:
        size = faces.shape[1]
        lo, hi = size // 4, size - size // 4
        return faces[:, lo:hi, lo:hi].astype(np.float32).mean(axis=(1, 2))

    look_a, look_b = centre_colour(a_to_a).mean(axis=0), centre_colour(b_to_b).mean(axis=0)

    def nearer(colours: np.ndarray, target: np.ndarray, other: np.ndarray) -> np.ndarray:
        return (np.linalg.norm(colours - target, axis=1)
                < np.linalg.norm(colours - other, axis=1))

    hits = np.concatenate([nearer(centre_colour(a_to_b), look_b, look_a),
                           nearer(centre_colour(b_to_a), look_a, look_b)])
    return float(hits.mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=1300)
    parser.add_argument("--check-every", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/demo_results.json"))
    parser.add_argument("--batch-size", type=int, help="override the demo job's batch size")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a [train.options] value (numbers only), e.g. width=0.25")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(Path(tmp) / "ws")
        started = time.perf_counter()
        create_demo_workspace(ws, iterations=args.iterations)
        prepare_s = time.perf_counter() - started
        from swapd.config import load_job_file

        job: JobFile = load_job_file(ws.jobs / f"{DEMO_JOB}.toml")
        assert job.train is not None
        options = dict(job.train.options)
        for item in args.set:
            key, value = item.split("=", 1)
            options[key] = float(value) if "." in value or "e" in value else int(value)
        batch_size = args.batch_size or job.train.batch_size
        trainer_options, model_options = split_options(job.train.model, options)
        trainer = Trainer(job.train.model, model_options.model_dump(), trainer_options,
                          ws.resolve(job.train.a), ws.resolve(job.train.b),
                          ws.model_dir(DEMO_JOB), batch_size)
        first_visible: tuple[int, float] | None = None
        timeline: list[dict[str, float]] = []
        train_seconds = 0.0
        examples = 0
        t0 = time.perf_counter()
        while trainer.iteration < args.iterations:
            stats = trainer.step()
            train_seconds += stats.seconds
            examples += stats.examples
            if stats.iteration % args.check_every == 0:
                score = swap_score(trainer)
                elapsed = time.perf_counter() - t0
                timeline.append({"iteration": stats.iteration, "seconds": round(elapsed, 1),
                                 "loss_a": round(stats.loss_a, 4),
                                 "loss_b": round(stats.loss_b, 4), "swap_score": score})
                print(json.dumps(timeline[-1]), flush=True)
                # Early on both decoders draw their set's average face whatever the input: right
                # colours, no swap. A swap counts once the faces themselves are reconstructed.
                reconstructing = max(stats.loss_a, stats.loss_b) < RECONSTRUCTED_LOSS
                if first_visible is None and score == 1.0 and reconstructing:
                    first_visible = (stats.iteration, elapsed)
                    trainer.write_preview(args.out.with_name("demo_first_visible_swap.png"))
        wall = time.perf_counter() - t0
        trainer.write_preview(args.out.with_name("demo_final_preview.png"))
        export_path = ws.exports_dir(DEMO_JOB) / "a_to_b.onnx"
        report = trainer.export_onnx(export_path)
        trainer.close()

        from swapd.merger.merge import MergeOptions, merge_file

        clip = ws.footage / DEMO_JOB / "demo_clip.mp4"
        result = merge_file(clip, ws.output / DEMO_JOB, export_path, options=MergeOptions())

    results = {
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch threads, {platform.system()}",
        "torch": torch.__version__,
        "prepare_seconds": round(prepare_s, 1),
        "iterations": args.iterations,
        "batch_size_per_side": batch_size,
        "options": options,
        "train_egs_step_only": round(examples / train_seconds, 1),
        "train_egs_wall": round(examples / wall, 1),
        "train_wall_seconds": round(wall, 1),
        "first_visible_swap_iteration": first_visible[0] if first_visible else None,
        "first_visible_swap_seconds": round(first_visible[1], 1) if first_visible else None,
        "export_parity_max_abs_diff": report.max_abs_diff,
        "merge_frames": result.frames,
        "merge_faces_swapped": result.faces_swapped,
        "merge_fps": round(result.fps, 1),
        "timeline": timeline,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""The demo's figures: training speed (EG/s), time to the first visible swap, merge speed.

    .venv/bin/python benchmarks/demo_benchmark.py [--iterations 3000] [--out results.json]

It builds the demo workspace in a temp folder and runs the demo job's training as the worker
does (same Trainer, same options; but no saves along the way, so no collapse guard), then
exports ONNX and merges the demo clip. --start-from starts the model from another's weights
(see benchmarks/pretrain_pool.py).

Two measures of the swaps are recorded every --check-every iterations in the timeline
(--previews DIR also keeps the preview of each check):

- the ground-truth swap score (`GroundTruth`): synthetic faces allow what photos cannot. For
  each of a few held-out views (pose, expression, lighting, background) both identities are
  rendered, so the true A>B of a view is B rendered in that very view. Faces are compared by
  the mean absolute difference inside the true swap's face mask after matching each face's
  colour statistics (mean and spread per channel), as the merger's colour match does: what is
  left is the face's structure (shape, eyes, brows, nose, mouth), which is what a merged
  frame shows of the new identity. A swap counts when the model's A>B is nearer to the true
  swap than to the source face ("identity": it shows the other person) and nearer than to the
  target identity in most other views ("pose": it follows the source's pose and expression
  rather than drawing an average face). Likewise B>A. The first visible swap is the first check
  where every swap of both directions counts.
- the preview swap score (`swap_score`), the colour measure of earlier runs, kept to compare.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import swapd  # noqa: F401  (first: it sets OpenMP's wait policy before torch loads)

# isort: split

import cv2
import numpy as np
import torch

from swapd.config import JobFile
from swapd.demo.face_sets import random_view
from swapd.demo.identity import DEMO_A, DEMO_B, Identity
from swapd.demo.painter import render_face
from swapd.demo.workspace import DEMO_JOB, create_demo_workspace
from swapd.exporter.checkpoint_export import export_trainer
from swapd.faces.alignment import aligned_matrix, transform_points, warp_face
from swapd.faces.masks import FACE, landmark_masks
from swapd.trainer.data import crop_for_model, crop_landmarks
from swapd.trainer.loop import Trainer
from swapd.trainer.model_io import ModelIO
from swapd.trainer.options import parse_assignments, split_options
from swapd.workspace import Workspace


def _centre(faces: np.ndarray) -> np.ndarray:
    """The middle half of each face crop (skin, eyes, nose, mouth; no background), float32."""
    size = faces.shape[1]
    lo, hi = size // 4, size - size // 4
    return faces[:, lo:hi, lo:hi].astype(np.float32)


class GroundTruth:
    """Held-out views rendered for both identities: the true swaps to measure the model's by."""

    def __init__(self, views: int, input_size: int, coverage: float, centering: str = "face",
                 seed: int = 77, aligned_size: int = 256) -> None:
        rng = np.random.default_rng(seed)
        frame = int(aligned_size * 1.5)
        crops: dict[str, list[np.ndarray]] = {DEMO_A.name: [], DEMO_B.name: []}
        masks: dict[str, list[np.ndarray]] = {DEMO_A.name: [], DEMO_B.name: []}
        for _ in range(views):
            view = random_view(rng)
            background = int(rng.integers(1 << 30))
            for identity in (DEMO_A, DEMO_B):
                crop, mask = self._render(identity, view, background, frame, aligned_size,
                                          input_size, coverage, centering)
                crops[identity.name].append(crop)
                masks[identity.name].append(mask)
        self.crops = {name: np.stack(faces) for name, faces in crops.items()}
        self.masks = {name: np.stack(faces) for name, faces in masks.items()}

    @staticmethod
    def _render(identity: Identity, view: dict, background: int, frame: int, aligned_size: int,
                input_size: int, coverage: float, centering: str
                ) -> tuple[np.ndarray, np.ndarray]:
        rendered = render_face(identity, frame_size=(frame, frame), face_height_px=aligned_size
                               * 0.75, background=background, **view)
        matrix = aligned_matrix(rendered.landmarks, aligned_size, centering)
        aligned = warp_face(rendered.image, matrix, aligned_size)
        points = crop_landmarks(transform_points(rendered.landmarks, matrix), aligned_size,
                                input_size, coverage)
        mask = landmark_masks(points, input_size)[..., FACE].astype(np.float32) / 255
        return crop_for_model(aligned, input_size, coverage), mask

    @staticmethod
    def _distance(face: np.ndarray, other: np.ndarray, mask: np.ndarray) -> float:
        """Mean absolute difference inside ``mask`` of the two faces, each normalised to zero
        mean and unit spread per channel inside the mask (the colour match of a merge)."""
        weight = mask[..., None]

        def normalised(x: np.ndarray) -> np.ndarray:
            x = x.astype(np.float32)
            mean = (x * weight).sum(axis=(0, 1)) / weight.sum()
            spread = np.sqrt((((x - mean) ** 2) * weight).sum(axis=(0, 1)) / weight.sum())
            return (x - mean) / (spread + 1e-3)

        return float((np.abs(normalised(face) - normalised(other)) * weight).sum()
                     / (weight.sum() * face.shape[-1]))

    def score(self, trainer: Trainer) -> dict[str, float]:
        """Share of swaps that count (see the module doc), per direction and overall."""
        out = {}
        crops = self.crops
        if trainer.model.image_channels == 1:  # a grayscale model: compared in gray
            crops = {name: np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)[..., None]
                                     for f in faces]) for name, faces in crops.items()}
        for source, target, side in (("alice", "bob", "b"), ("bob", "alice", "a")):
            swapped = trainer.predict(crops[source], side)
            truth, masks = crops[target], self.masks[target]
            # distance[i, j]: swap of view i against the target identity in view j
            distance = np.array([[self._distance(s, t, masks[j]) for j, t in enumerate(truth)]
                                 for s in swapped])
            to_source = np.array([self._distance(s, src, masks[i]) for i, (s, src)
                                  in enumerate(zip(swapped, crops[source], strict=True))])
            same_view = np.diag(distance)
            others = distance[~np.eye(len(truth), dtype=bool)].reshape(len(truth), -1)
            identity = same_view < to_source
            pose = same_view < np.median(others, axis=1)
            key = "a_to_b" if side == "b" else "b_to_a"
            out[key] = float((identity & pose).mean())
            out[f"{key}_identity"] = float(identity.mean())
            out[f"{key}_pose"] = float(pose.mean())
            out[f"{key}_distance"] = round(float(same_view.mean()), 3)
        out["both"] = (out["a_to_b"] + out["b_to_a"]) / 2
        return out


def swap_score(trainer: Trainer) -> float:
    """The share of preview swaps (A>B and B>A, every preview face) that look like their target.

    "Looks like" is judged on the face's centre (the middle half of the crop: skin, eyes, nose,
    mouth; not the background): its mean colour is nearer to the mean colour of the target
    side's own reconstructions than to the source side's. The demo identities differ strongly
    in skin tone and hair, so at 1.0 every swap in the preview shows the other identity.
    """
    _, a_to_a, a_to_b, _, b_to_b, b_to_a = trainer.preview_columns()

    def centre_colour(faces: np.ndarray) -> np.ndarray:
        return _centre(faces).mean(axis=(1, 2))

    look_a, look_b = centre_colour(a_to_a).mean(axis=0), centre_colour(b_to_b).mean(axis=0)

    def nearer(colours: np.ndarray, target: np.ndarray, other: np.ndarray) -> np.ndarray:
        return (np.linalg.norm(colours - target, axis=1)
                < np.linalg.norm(colours - other, axis=1))

    hits = np.concatenate([nearer(centre_colour(a_to_b), look_b, look_a),
                           nearer(centre_colour(b_to_a), look_a, look_b)])
    return float(hits.mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=900)
    parser.add_argument("--check-every", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/demo_results.json"))
    parser.add_argument("--batch-size", type=int, help="override the demo job's batch size")
    parser.add_argument("--model", help="override the demo job's model")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a [train.options] value (TOML syntax), e.g. width=0.25")
    parser.add_argument("--unset", action="append", default=[], metavar="KEY",
                        help="drop a [train.options] key (e.g. width, for a model without it)")
    parser.add_argument("--previews", type=Path, help="keep the preview of every check here")
    parser.add_argument("--keep-model", type=Path, help="copy the final checkpoint here")
    parser.add_argument("--keep-merged", type=Path, help="copy the merged clip here")
    parser.add_argument("--start-from", type=Path,
                        help="start the model from this checkpoint's weights (same model)")
    parser.add_argument("--views", type=int, default=8,
                        help="held-out views rendered for the ground-truth swap score")
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
        options.update(parse_assignments(args.set))
        for key in args.unset:
            options.pop(key, None)
        batch_size = args.batch_size or job.train.batch_size
        model_name = args.model or job.train.model
        trainer_options, model_options = split_options(model_name, options)
        trainer = Trainer(model_name, model_options.model_dump(), trainer_options,
                          ws.resolve(job.train.a), ws.resolve(job.train.b),
                          ws.model_dir(DEMO_JOB), batch_size,
                          iterations_target=args.iterations,  # as the worker: the job's target
                          start_from=args.start_from)
        io = ModelIO(trainer)
        # the trainer's coverage: a model may fix its own crop (SAEHD's face type)
        truth = GroundTruth(args.views, trainer.input_size, trainer.options.coverage,
                            trainer.options.centering)
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
                elapsed = time.perf_counter() - t0
                check_start = time.perf_counter()
                ground_truth = truth.score(trainer)
                score = swap_score(trainer)
                spread = round(trainer.output_spread(), 3)  # what the collapse guard measures
                t0 += time.perf_counter() - check_start  # measuring is not training time
                timeline.append({"iteration": stats.iteration, "seconds": round(elapsed, 1),
                                 "loss_a": round(stats.loss_a, 4),
                                 "loss_b": round(stats.loss_b, 4), "swap_score": score,
                                 "output_spread": spread,
                                 "true_face_discriminator": stats.discriminator_loss,
                                 "ground_truth": ground_truth})
                print(json.dumps(timeline[-1]), flush=True)
                if args.previews:
                    trainer.write_preview(args.previews / f"preview_{stats.iteration:05d}.png")
                if first_visible is None and ground_truth["both"] == 1.0:
                    first_visible = (stats.iteration, elapsed)
                    trainer.write_preview(args.out.with_name("demo_first_visible_swap.png"))
        wall = time.perf_counter() - t0
        if args.keep_model:
            io.save()
            args.keep_model.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(trainer.checkpoint_path, args.keep_model)
        trainer.write_preview(args.out.with_name("demo_final_preview.png"))
        export_path = ws.exports_dir(DEMO_JOB) / "a_to_b.onnx"
        report = export_trainer(trainer, export_path)
        trainer.close()

        from swapd.merger.merge import MergeOptions, merge_file

        clip = ws.footage / DEMO_JOB / "demo_clip.mp4"
        result = merge_file(clip, ws.output / DEMO_JOB, export_path, options=MergeOptions())
        if args.keep_merged:
            args.keep_merged.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(result.output_path, args.keep_merged)

    results = {
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch threads, {platform.system()}",
        "torch": torch.__version__,
        "prepare_seconds": round(prepare_s, 1),
        "iterations": args.iterations,
        "batch_size_per_side": batch_size,
        "options": options,
        "started_from": trainer.started_from,
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

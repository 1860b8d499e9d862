"""Merge speed: frames per second end to end and per stage, against the ideal the stages' CPU
time allows.

    PYTHONPATH=. .venv/bin/python benchmarks/merge_speed.py [--seconds 20]
        [--sizes 1280x720 1920x1080] [--models demo saehd] [--saehd-seconds 4]
        [--repeats 1] [--out results.json]

Clips: the demo's synthetic person (swapd.demo), rendered for 4 s and looped with ffmpeg to
``--seconds`` (stream copy: the same frames again; rendering 20 s of 1080p would take minutes
and changes nothing for speed). Models, random weights (speed does not depend on them): the
demo job's (lightweight, 64 px, width 0.125, dense 128, learned mask, coverage 0.7) and, with
``saehd``, DeepFaceLab's SAEHD at its defaults (liae-ud, 128 px, ae 256, e 64, d 64,
d_mask 22), exported as the service exports.

For each clip and model, in one run:

- end to end: ``Merger.merge_file`` with ``pipeline`` off (baseline) and on, and the model
  alone (below), alternated ``--repeats`` times: wall seconds, fps, CPU seconds (this process
  and its ffmpeg children); the pipeline's faces per second over the model's own, repeat by
  repeat;
- per stage: a profile pass that runs the merger's own building blocks one after the other
  (``Merger._plan`` / ``_infer`` / ``_finish`` split finer: detect with the landmarks, align, infer,
  mask, compose (colour transfer, mode, finish, paste-back), watermark)
  timing each by wall and process CPU, with decode and encode measured as ffmpeg's CPU
  (RUSAGE_CHILDREN) in passes of their own;
- ideal fps = frames / (summed CPU seconds of all stages / cores): what perfect overlap on
  this machine's cores would give;
- the model alone: onnxruntime on the profile's own crops, in the merger's batches.

No GPU here: the CUDA provider with I/O binding is not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from swapd.demo.clip import write_clip
from swapd.demo.identity import DEMO_A
from swapd.exporter.onnx_export import export_swap_model
from swapd.extract.face_tracker import FaceTracker
from swapd.faces.alignment import warp_face
from swapd.media import ffmpeg_exe, frame_times, probe_video, read_frames
from swapd.merger import watermark
from swapd.merger.merge import MergeOptions, Merger, _batched
from swapd.merger.video import VideoWriter
from swapd.trainer.models import build_model

MODELS = {
    "demo": ("lightweight", {"input_size": 64, "width": 0.125, "dense_dim": 128,
                             "learn_mask": True}, 0.7),
    "saehd": ("saehd", {"archi": "liae-ud", "input_size": 128}, 0.875),
}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def make_clip(folder: Path, size: tuple[int, int], seconds: float) -> Path:
    base = folder / f"base_{size[0]}x{size[1]}.mp4"
    if not base.exists():
        write_clip(base, DEMO_A, seconds=4.0, size=size, fps=25, seed=7)
    out = folder / f"clip_{size[0]}x{size[1]}_{seconds:g}s.mp4"
    if not out.exists():
        loops = int(np.ceil(seconds / 4.0)) - 1
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", str(loops), "-i",
                        str(base), "-t", str(seconds), "-c", "copy", str(out)], check=True)
    return out


def export(name: str, folder: Path) -> Path:
    kind, options, coverage = MODELS[name]
    path = folder / f"{name}.onnx"
    if not path.exists():
        import torch

        torch.manual_seed(0)
        model = build_model(kind, options).eval()
        size = int(options["input_size"])
        export_swap_model(model, path, size, coverage=coverage, model_name=kind,
                          metadata={"centering": "face"})
    return path


def end_to_end(merger: Merger, clip: Path, out: Path) -> dict[str, float]:
    cpu0, kids0, t0 = time.process_time(), children_cpu(), time.perf_counter()
    result = merger.merge_file(clip, out)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0 + children_cpu() - kids0
    result.output_path.unlink()
    return {"frames": result.frames, "seconds": round(wall, 2),
            "fps": round(result.frames / wall, 2), "cpu_seconds": round(cpu, 2)}


def profile(merger: Merger, clip: Path, out: Path) -> tuple[dict[str, dict[str, float]], list]:
    """Each stage's wall and CPU seconds over the clip, one stage at a time."""
    info = probe_video(clip)
    wall: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)

    def timed(stage: str, fn, *args):  # noqa: ANN001, ANN202 (a tiny local helper)
        c, t = time.process_time(), time.perf_counter()
        value = fn(*args)
        wall[stage] += time.perf_counter() - t
        cpu[stage] += time.process_time() - c
        return value

    # decode alone: ffmpeg's CPU (and this process's copying of the frames)
    kids, t = children_cpu(), time.perf_counter()
    frames_seen = sum(1 for _ in read_frames(info, prefetch=0))
    wall["decode"] = time.perf_counter() - t
    cpu["decode"] = children_cpu() - kids
    session, opts = merger.session, merger.options
    size = session.info.input_size
    tracker = FaceTracker(merger.detector, opts.redetect_every)
    composer = merger.composer()
    crops_seen = []
    merged = []
    for batch in _batched(read_frames(info, prefetch=0), opts.batch_frames):
        jobs, crops = [], []
        for index, frame in enumerate(batch):
            found = timed("detect", merger._faces, frame, tracker)  # with the 68 points
            for placed in timed("align", composer.place, found):
                jobs.append((index, placed))
                crops.append(timed("align", warp_face, frame, placed.matrix, size))
        if crops:
            originals = np.stack(crops)
            crops_seen.append(originals)
            swapped, prd, dst = timed("infer", session.swap_all, originals)
            for k, (index, placed) in enumerate(jobs):
                mask = timed("mask", composer.mask, placed, None if prd is None else prd[k],
                             None if dst is None else dst[k])
                timed("compose", composer.compose, batch[index], originals[k], swapped[k],
                      mask, placed)
        for index, frame in enumerate(batch):
            batch[index] = timed("watermark", watermark.embed, frame)
        merged.extend(batch)
    # encode alone: the merged frames into the writer the merger uses
    kids, t = children_cpu(), time.perf_counter()
    with VideoWriter(out / "encode.mp4", info.width, info.height, info.fps, info,
                     crf=opts.crf, preset=opts.preset, codec=opts.codec,
                     times=frame_times(clip)) as writer:
        for frame in merged:
            writer.write(frame)
    wall["encode"] = time.perf_counter() - t
    cpu["encode"] = children_cpu() - kids
    (out / "encode.mp4").unlink()
    stages = {name: {"wall_ms_per_frame": round(1000 * wall[name] / frames_seen, 2),
                     "cpu_ms_per_frame": round(1000 * cpu[name] / frames_seen, 2)}
              for name in ("decode", "detect", "align", "infer", "mask", "compose",
                           "watermark", "encode")}
    return stages, crops_seen


def model_alone(merger: Merger, crops: list) -> float:
    """Faces per second of onnxruntime on the profile's crops, in the merger's batches."""
    count = sum(len(c) for c in crops)
    t = time.perf_counter()
    for batch in crops:
        merger.session.swap_with_masks(batch)
    return count / (time.perf_counter() - t)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--saehd-seconds", type=float, default=4.0,
                        help="SAEHD's clip length (its model dominates: minutes on a CPU)")
    parser.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"])
    parser.add_argument("--models", nargs="+", default=["demo", "saehd"], choices=MODELS)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--work", type=Path, help="keep clips and models here")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="swapd-merge-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    results: dict[str, object] = {
        "machine": platform.processor() or platform.machine(), "cores": cores,
        "python": sys.version.split()[0], "load_average_at_start": os.getloadavg(),
        "runs": []}
    for name in args.models:
        model = export(name, work)
        seconds = args.seconds if name == "demo" else args.saehd_seconds
        for text in args.sizes:
            w, h = (int(v) for v in text.split("x"))
            clip = make_clip(work, (w, h), seconds)
            merger = Merger(model, MergeOptions(device="cpu"))
            stages, crops = profile(merger, clip, work)
            total_cpu = sum(s["cpu_ms_per_frame"] for s in stages.values())
            ideal = 1000 * cores / total_cpu
            faces = sum(len(c) for c in crops)
            runs: dict[str, list] = {"sequential": [], "pipeline": [], "model_alone": []}
            for _ in range(args.repeats):  # alternated, so a busy moment hits all three
                for mode in ("sequential", "pipeline"):
                    merger.options = MergeOptions(device="cpu", pipeline=mode == "pipeline")
                    runs[mode].append(end_to_end(merger, clip, work))
                runs["model_alone"].append(round(model_alone(merger, crops), 2))
            frames = runs["pipeline"][0]["frames"]
            best = {mode: max(r["fps"] for r in runs[mode]) for mode in ("sequential",
                                                                       "pipeline")}
            row = {"model": name, "size": text, "seconds": seconds, "runs": runs,
                   "stages": stages, "cpu_ms_per_frame": round(total_cpu, 2),
                   "ideal_fps": round(ideal, 2),
                   "pipeline_of_ideal": round(best["pipeline"] / ideal, 3),
                   "pipeline_vs_sequential": round(best["pipeline"] / best["sequential"], 3),
                   "model_alone_faces_per_s": max(runs["model_alone"]),
                   # faces per second end to end over the model's own, repeat by repeat
                   "pipeline_of_model_alone": [
                       round(r["fps"] * faces / frames / m, 3)
                       for r, m in zip(runs["pipeline"], runs["model_alone"], strict=True)]}
            row["load_average"] = [round(v, 1) for v in os.getloadavg()]
            results["runs"].append(row)  # type: ignore[union-attr]
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

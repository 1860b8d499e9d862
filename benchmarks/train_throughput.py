"""swapd's full training step against a bare PyTorch loop of the same model, in one run.

    .venv/bin/python benchmarks/train_throughput.py \\
        [--models lightweight original] [--batch-size 16] [--steps 20] [--out results.json]

For each model (at its options, or --set key=value overrides):

- bare: forward both sides, the same loss, backward, Adam, on pre-made tensors of real faces;
  no data pipeline, no bookkeeping (``bare_loop.py``); float32, or bf16 autocast as swapd's
  step with ``--set mixed_precision=bf16`` (or ``auto``, on a CPU with native bf16). Run
  once per variant: contiguous (NCHW) vs channels_last, Adam's for-each vs fused
  implementation.
- swapd: ``Trainer.step()`` as the training worker calls it: background batch loading and
  augmentation, masks, the penalized loss with eye/mouth multipliers, NaN guard, stats.

With ``--precisions off bf16`` (values of ``mixed_precision``) the bare loop is left out:
one trainer per precision, the same model and seed, their steps alternated (off, bf16, off,
...) so both see the same machine; reported per precision, and the median of each round's
ratio (the first precision's step time over each other's).

Reported: seconds per step (median after warm-up), examples per second (both sides), the ratio
swapd / best bare variant, and peak resident memory of the process after each part. With
``--also-grayscale`` each model's swapd step is timed a second time as a one-channel model
(``grayscale = true``, faces converted on load), beside the colour figures.

With ``--augment-devices loader device`` (issue 19) each model is timed in ``--rounds``
rounds, each round the best bare variant then swapd once per ``augment_device`` in turn (a
fresh trainer each), so a loaded machine slows all of them alike; reported: each round's
figures and ratios, their medians and spread. ``--loader-set KEY=VALUE`` (with ``--blocks``)
adds one contender: the first trainer stepping on a second loader with those augmentation
options, so one option's cost is timed on the same model, in the same blocks.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import swapd  # noqa: F401  (first: it sets OpenMP's wait policy before torch loads)

# isort: split

import torch

from swapd import threads as swapd_threads
from swapd.demo.face_sets import write_face_set
from swapd.demo.identity import DEMO_A, DEMO_B
from swapd.trainer.augment import AugmentSettings
from swapd.trainer.batches import BatchLoader
from swapd.trainer.data import FaceSet
from swapd.trainer.loop import Trainer
from swapd.trainer.models import build_model
from swapd.trainer.options import TrainerOptions, parse_assignments, split_options
from swapd.trainer.setup import configure_threads

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.train_throughput
    from bare_loop import bare_loop
    from rounds import alternate, summary, swapd_loop
except ImportError:
    from benchmarks.bare_loop import bare_loop
    from benchmarks.rounds import alternate, summary, swapd_loop


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def alternating_precisions(name: str, model_options: dict[str, Any], options: TrainerOptions,
                           sets: Path, batch_size: int, precisions: list[str], steps: int,
                           warmup: int) -> dict[str, Any]:
    """Each precision's trainer steps in turn, ``steps`` rounds after ``warmup``: the step
    times, the precision each trainer resolved to, and the per-round ratios to the first."""
    trainers = [Trainer(name, model_options, options.model_copy(update={"mixed_precision": p}),
                        sets / "a", sets / "b", sets / f"model_{name}_{p}", batch_size)
                for p in precisions]
    times: dict[str, list[float]] = {p: [] for p in precisions}
    try:
        for _ in range(warmup + steps):
            for p, trainer in zip(precisions, trainers, strict=True):
                times[p].append(swapd_loop(trainer, 1)[0])
        resolved = {p: t.precision.mode for p, t in zip(precisions, trainers, strict=True)}
    finally:
        for trainer in trainers:
            trainer.close()
    base = precisions[0]
    examples = 2 * batch_size
    return {"resolved": resolved,
            "steps": {p: summary(t, warmup, examples) for p, t in times.items()},
            "times": {p: [round(x, 4) for x in t] for p, t in times.items()},
            "speedup_median_of_rounds": {
                p: round(statistics.median(b / x for b, x in zip(
                    times[base][warmup:], times[p][warmup:], strict=True)), 3)
                for p in precisions[1:]}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["lightweight", "original"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--faces", type=int, default=64, help="synthetic faces per side")
    parser.add_argument("--variants", nargs="+",
                        default=["nchw", "nchw+fused_adam", "channels_last",
                                 "channels_last+fused_adam"],
                        help="bare-loop variants to time (also ...+compile: torch.compile; "
                        "...+one_pass: both sides through the model's both_sides, as swapd)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="option override (TOML syntax), e.g. width=0.125")
    parser.add_argument("--also-grayscale", action="store_true",
                        help="also time each model's swapd step in grayscale")
    parser.add_argument("--augment-devices", nargs="+", choices=["loader", "device"],
                        help="alternate swapd with these augment_device values, in rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=0,
                        help="with --augment-devices: per round, interleave the bare loop "
                        "and the trainers in this many blocks of --steps steps each")
    parser.add_argument("--same-model", action="store_true",
                        help="with --blocks: the bare loop runs on the first trainer's model "
                        "and optimizer")
    parser.add_argument("--loader-set", action="append", default=[], metavar="KEY=VALUE",
                        help="with --blocks: the first trainer also steps with a second "
                        "loader of these augmentation overrides (the same model: an "
                        "option's cost alone), e.g. warp_to_landmarks=false")
    parser.add_argument("--precisions", nargs="+", metavar="MODE",
                        help="time swapd's step in these mixed_precision modes, alternating "
                        "(the first is the baseline), instead of against the bare loop")
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/train_throughput.json"))
    args = parser.parse_args()
    if args.loader_set and not (args.blocks and (args.augment_devices or [""])[0] == "loader"):
        parser.error("--loader-set needs --blocks and --augment-devices loader [...]: it "
                     "steps the first trainer, which must be the loader's")
    threads = configure_threads()
    # The process set-up a trainer makes (swapd.trainer.setup.place), given to the bare loop
    # too, from its first round: both sides of the comparison run in one process.
    allocator = swapd_threads.keep_freed_memory()
    results: dict[str, Any] = {
        "allocator_keeps_freed_memory": allocator,
        "machine": f"{platform.processor() or platform.machine()}, {threads} torch threads",
        "torch": torch.__version__, "batch_size_per_side": args.batch_size, "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        sets = Path(tmp)
        write_face_set(sets / "a", DEMO_A, args.faces, seed=1)
        write_face_set(sets / "b", DEMO_B, args.faces, seed=2)
        for name in args.models:
            # float32 unless asked (--set mixed_precision=bf16: the bare loop autocasts too)
            assignments = {"mixed_precision": "off", **parse_assignments(args.set)}
            options, model_options = split_options(name, assignments)
            if args.precisions:
                entry = alternating_precisions(name, model_options.model_dump(), options,
                                               sets, args.batch_size, args.precisions,
                                               args.steps, args.warmup)
                results["models"][name] = entry
                print(name, json.dumps({k: entry[k] for k in ("resolved", "steps",
                      "speedup_median_of_rounds")}), flush=True)
                continue
            size = model_options.input_size  # type: ignore[attr-defined]
            with torch.device("meta"):  # only for its crop and channels: no weights made
                shape = build_model(name, model_options)
            centering, coverage = shape.crop() or (options.centering, options.coverage)
            # Real augmented batches, made before timing, for the bare loop.
            face_sets = [FaceSet(sets / side, size, coverage, centering=centering,
                                 grayscale=shape.image_channels == 1) for side in "ab"]
            loader = BatchLoader(*face_sets, args.batch_size, AugmentSettings(), seed=0)
            batches = []
            for _ in range(4):
                b = loader.get()
                batches.append(tuple(torch.from_numpy(x) for x in (
                    b.input_a, b.target_a, b.mask_a, b.input_b, b.target_b, b.mask_b)))
            loader.close()
            examples = 2 * args.batch_size
            entry: dict[str, Any] = {"options": {**options.model_dump(),
                                                 **model_options.model_dump()}}
            bare = {}
            for key in args.variants:
                parts = key.split("+")
                channels_last, fused = "channels_last" in parts, "fused_adam" in parts
                times = bare_loop(name, model_options.model_dump(), options, batches,
                                  args.steps, channels_last, fused, "compile" in parts,
                                  one_pass="one_pass" in parts)
                bare[key] = summary(times, args.warmup, examples)
                bare[key]["first_step_seconds"] = round(times[0], 2)
                print(name, "bare", key, bare[key], flush=True)
            entry["bare"] = bare
            entry["peak_rss_mib_after_bare"] = round(peak_rss_mib(), 1)
            if args.augment_devices:
                best_key = min(bare, key=lambda k: bare[k]["seconds_per_step"])
                entry["alternating"] = alternate(
                    args, name, model_options.model_dump(), options, batches, best_key,
                    sets, Path(tmp) / f"rounds_{name}")
                results["models"][name] = entry
                continue
            with Trainer(name, model_options.model_dump(), options, sets / "a", sets / "b",
                         Path(tmp) / f"model_{name}", args.batch_size) as trainer:
                start = time.perf_counter()
                trainer.step()
                entry["first_step_seconds"] = round(time.perf_counter() - start, 2)
                swapd = summary(swapd_loop(trainer, args.steps), args.warmup - 1, examples)
            entry["swapd"] = swapd
            print(name, "swapd", swapd, flush=True)
            best_key = min(bare, key=lambda k: bare[k]["seconds_per_step"])
            entry["best_bare"] = best_key
            entry["swapd_vs_best_bare"] = round(
                bare[best_key]["seconds_per_step"] / swapd["seconds_per_step"], 3)
            entry["peak_rss_mib"] = round(peak_rss_mib(), 1)
            if args.also_grayscale:
                gray = {**model_options.model_dump(), "grayscale": True}
                with Trainer(name, gray, options, sets / "a", sets / "b",
                             Path(tmp) / f"model_{name}_gray", args.batch_size) as trainer:
                    trainer.step()
                    entry["swapd_grayscale"] = summary(swapd_loop(trainer, args.steps),
                                                       args.warmup - 1, examples)
                    entry["face_cache_bytes"] = {
                        "colour": int(face_sets[0].faces.nbytes),
                        "grayscale": int(trainer.set_a.faces.nbytes)}
                entry["grayscale_speedup"] = round(
                    swapd["seconds_per_step"]
                    / entry["swapd_grayscale"]["seconds_per_step"], 3)
                print(name, "swapd grayscale", entry["swapd_grayscale"], flush=True)
            results["models"][name] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Rounds of swapd's training step against the bare loop, side by side in one process
(``train_throughput.py --augment-devices ...``; see its docstring): each round a bare loop
and fresh trainers, one after another or interleaved in blocks, with their wall and CPU
seconds a step and the ratios between them."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import swapd  # noqa: F401  (first: it sets OpenMP's wait policy before torch loads)

# isort: split

import torch

from swapd.trainer.batches import BatchLoader
from swapd.trainer.loop import Trainer
from swapd.trainer.options import TrainerOptions, parse_assignments
from swapd.trainer.setup import batch_loader, loader_workers

try:  # run from a script in benchmarks/ (on sys.path) or imported as benchmarks.rounds
    from bare_loop import BareLoop, bare_loop, timed
except ImportError:
    from benchmarks.bare_loop import BareLoop, bare_loop, timed


def swapd_loop(trainer: Trainer, steps: int, cpu: list[float] | None = None) -> list[float]:
    """Wall seconds per ``Trainer.step()`` (its own timer leaves out nothing it does);
    ``cpu`` gets each step's CPU seconds (the process's: the loader's threads included)."""
    return timed(trainer.step, steps, cpu)


def summary(times: list[float], warmup: int, examples: int) -> dict[str, float]:
    steady = times[warmup:]
    median = statistics.median(steady)
    return {"seconds_per_step": round(median, 4), "egs": round(examples / median, 1),
            "steps_timed": len(steady)}


def alternate(args: argparse.Namespace, name: str, model_options: dict[str, Any],
              options: TrainerOptions, batches: list[tuple[torch.Tensor, ...]], bare_key: str,
              sets: Path, work: Path) -> dict[str, Any]:
    """``args.rounds`` rounds of: the bare loop (``bare_key``), then swapd once per
    ``augment_device`` of ``args.augment_devices``, each from a fresh trainer; with
    ``args.blocks``, each round's contenders interleaved (:func:`interleaved_round`)."""
    parts = bare_key.split("+")
    examples = 2 * args.batch_size
    rounds = []
    for index in range(args.rounds):
        if args.blocks:
            rounds.append(interleaved_round(args, name, model_options, options, batches,
                                            bare_key, sets, work, index))
            print(name, "round", index, json.dumps(rounds[-1]), flush=True)
            continue
        cpu: list[float] = []
        times = bare_loop(name, model_options, options, batches, args.steps,
                          "channels_last" in parts, "fused_adam" in parts, cpu=cpu,
                          one_pass="one_pass" in parts)
        row: dict[str, Any] = {"bare": summary(times, args.warmup, examples)}
        row["bare"]["cpu_seconds_per_step"] = round(statistics.median(cpu[args.warmup:]), 4)
        for where in args.augment_devices:
            with _trainer(name, model_options, options, where, sets,
                          work / f"{where}_{index}", args.batch_size) as trainer:
                trainer.step()
                cpu = []
                row[where] = summary(swapd_loop(trainer, args.steps, cpu), args.warmup - 1,
                                     examples)
                row[where]["cpu_seconds_per_step"] = round(
                    statistics.median(cpu[args.warmup - 1:]), 4)
        _ratios(row, contenders(args))
        print(name, "round", index, json.dumps(row), flush=True)
        rounds.append(row)
    out: dict[str, Any] = {"bare_variant": bare_key, "rounds": rounds}
    if args.blocks:
        out["blocks_per_round"], out["steps_per_block"] = args.blocks, args.steps
    for key in ["bare", *contenders(args)]:
        egs = [r[key]["egs"] for r in rounds]
        out[f"{key}_egs_median"] = statistics.median(egs)
        out[f"{key}_egs_range"] = [min(egs), max(egs)]
        out[f"{key}_cpu_seconds_median"] = statistics.median(
            r[key]["cpu_seconds_per_step"] for r in rounds)
    for where in contenders(args):
        for key in (f"{where}_vs_bare", f"{where}_vs_bare_cpu"):
            ratios = [r[key] for r in rounds]
            out[f"{key}_median"] = statistics.median(ratios)
            out[f"{key}_range"] = [min(ratios), max(ratios)]
        if args.blocks:  # every timed step of every round, pooled: the long-run throughput
            for unit, field in (("", "seconds_per_step"), ("_cpu", "cpu_seconds_per_step")):
                out[f"{where}_vs_bare{unit}_pooled"] = round(
                    sum(r["bare"][field] for r in rounds)
                    / sum(r[where][field] for r in rounds), 4)
    if len(args.augment_devices) == 2:
        paired = [r["device_vs_loader"] for r in rounds]
        out["device_vs_loader_median"] = statistics.median(paired)
        out["device_vs_loader_range"] = [min(paired), max(paired)]
    if args.loader_set:  # the first loader against the second, on the same model
        out["loader_set"] = args.loader_set
        paired = [r[f"loader_vs_{ALT}"] for r in rounds]
        out[f"loader_vs_{ALT}_median"] = statistics.median(paired)
        out[f"loader_vs_{ALT}_range"] = [min(paired), max(paired)]
        out[f"loader_vs_{ALT}_pooled"] = round(
            sum(r[ALT]["seconds_per_step"] for r in rounds)
            / sum(r["loader"]["seconds_per_step"] for r in rounds), 4)
    print(name, json.dumps({k: v for k, v in out.items() if k != "rounds"}), flush=True)
    return out


def interleaved_round(args: argparse.Namespace, name: str, model_options: dict[str, Any],
                      options: TrainerOptions, batches: list[tuple[torch.Tensor, ...]],
                      bare_key: str, sets: Path, work: Path, index: int) -> dict[str, Any]:
    """One round with a fresh bare loop and a fresh trainer per ``augment_device``, all alive
    at once: ``args.warmup`` steps each, then ``args.blocks`` blocks of ``args.steps`` steps
    of each in turn, the order reversed every block. The first step of a block is not timed:
    it carries the switch (caches refilled; the loader of the trainer just left refilling its
    queue, which would be charged to the next contender). Per contender: the mean of its
    timed steps, wall and CPU (the process's: a loader's thread included).

    Short blocks side by side see the same machine: on this shared virtual machine a step's
    time drifts by 10 % and more from minute to minute. And instances of one model differ in
    speed by up to 8 % (where their buffers lie in memory: three bare loops of the same seed
    and batches, interleaved so, ran at 301, 282 and 277 ms a step), so with ``args.
    same_model`` the bare loop runs on the first trainer's own model and Adam (the trainer's
    Adam is the bare loop's: fused on the CPU), and the two differ in nothing but the step
    around the model."""
    parts = bare_key.split("+")
    steppers: dict[str, Callable[[], object]] = {}
    trainers = []
    alternative: BatchLoader | None = None
    try:
        for where in args.augment_devices:
            trainers.append(_trainer(name, model_options, options, where, sets,
                                     work / f"{where}_{index}", args.batch_size))
        bare = BareLoop(name, model_options, options, batches, "channels_last" in parts,
                        "fused_adam" in parts,
                        trainer=trainers[0] if args.same_model else None,
                        one_pass="one_pass" in parts)
        steppers["bare"] = bare.step
        steppers |= {where: trainer.step
                     for where, trainer in zip(args.augment_devices, trainers, strict=True)}
        if args.loader_set:
            alternative = _second_loader(trainers[0], options, args.loader_set, args.batch_size)
            steppers[ALT] = lambda: _step_with(trainers[0], alternative)
        wall: dict[str, list[float]] = {key: [] for key in steppers}
        cpu: dict[str, list[float]] = {key: [] for key in steppers}
        for step in steppers.values():
            timed(step, args.warmup)
        for block in range(args.blocks):
            order = list(steppers) if block % 2 == 0 else list(reversed(steppers))
            for key in order:
                steppers[key]()  # not timed: the switch
                wall[key] += timed(steppers[key], args.steps - 1, cpu[key])
    finally:
        for trainer in trainers:
            trainer.close()
        if alternative is not None:
            alternative.close()
    row: dict[str, Any] = {}
    for key in steppers:
        seconds = statistics.fmean(wall[key])
        row[key] = {"seconds_per_step": round(seconds, 5),
                    "egs": round(2 * args.batch_size / seconds, 2),
                    "cpu_seconds_per_step": round(statistics.fmean(cpu[key]), 5),
                    "steps_timed": len(wall[key])}
    _ratios(row, contenders(args))
    return row


ALT = "loader_alt"  # the first trainer with --loader-set's loader


def contenders(args: argparse.Namespace) -> list[str]:
    """The swapd contenders of a round: each augment device's trainer, and ALT."""
    return [*args.augment_devices, *([ALT] if args.loader_set else [])]


def _second_loader(trainer: Trainer, options: TrainerOptions, overrides: list[str],
                   batch_size: int) -> BatchLoader:
    """A loader for ``trainer``'s face sets as its own is made, with ``overrides``."""
    changed = options.model_copy(update=parse_assignments(overrides))
    return batch_loader((trainer.set_a, trainer.set_b), batch_size, changed, trainer.iteration,
                        loader_workers(changed, trainer.device), None,
                        background=trainer.device.type == "cpu")


def _step_with(trainer: Trainer, loader: BatchLoader) -> object:
    """One ``trainer.step()`` on batches from ``loader`` instead of its own."""
    own, trainer.loader = trainer.loader, loader
    try:
        return trainer.step()
    finally:
        trainer.loader = own


def _trainer(name: str, model_options: dict[str, Any], options: TrainerOptions, where: str,
             sets: Path, folder: Path, batch_size: int) -> Trainer:
    chosen = options.model_copy(update={"augment_device": where})
    trainer = Trainer(name, model_options, chosen, sets / "a", sets / "b", folder, batch_size)
    assert (trainer.loader.device_augmenter is not None) == (where == "device")
    return trainer


def _ratios(row: dict[str, Any], wheres: list[str]) -> None:
    """A round's ratios, added to it: bare over each swapd run, wall and CPU seconds (what
    the pipeline costs in work, which a machine loaded by others disturbs far less)."""
    for where in wheres:
        row[f"{where}_vs_bare"] = round(row["bare"]["seconds_per_step"]
                                        / row[where]["seconds_per_step"], 4)
        row[f"{where}_vs_bare_cpu"] = round(row["bare"]["cpu_seconds_per_step"]
                                            / row[where]["cpu_seconds_per_step"], 4)
    if {"loader", "device"} <= set(wheres):  # the two paths side by side, same round
        row["device_vs_loader"] = round(row["loader"]["seconds_per_step"]
                                        / row["device"]["seconds_per_step"], 4)
    if ALT in wheres:  # the first loader's speed over the second's, same model and round
        row[f"loader_vs_{ALT}"] = round(row[ALT]["seconds_per_step"]
                                        / row["loader"]["seconds_per_step"], 4)

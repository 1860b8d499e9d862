"""swapd model: summary, restore, export, sessions, snapshots and compare."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swapd.cli.common import EXIT_USAGE, Subparsers, positive_int, read_state

if TYPE_CHECKING:
    from swapd.exporter.dfm_export import CropMatch


def _model_dir(args: argparse.Namespace, idle: bool) -> Path | None:
    """The model folder a ``swapd model`` command names (a folder, or --job NAME); None after
    printing why not. ``idle``: refuse a job whose worker is running."""
    if (args.model_dir is None) == (args.job is None):
        print(f"swapd model {args.model_command}: give a model folder or --job NAME",
              file=sys.stderr)
        return None
    if args.job is None:
        return Path(args.model_dir)
    ws, store = read_state(args.workspace, "swapd: no swapd state in {root}")
    if store is None:
        return None
    row = store.job(args.job)
    store.close()
    if row is None:
        print(f"swapd: no job named {args.job!r} in {ws.root}", file=sys.stderr)
        return None
    if idle and row.state in ("training", "paused"):
        print(f"swapd: job {args.job} is {row.state}: stop it first "
              f"(swapd stop {args.job})", file=sys.stderr)
        return None
    return ws.model_dir(args.job)


def cmd_model_restore(args: argparse.Namespace) -> int:
    from swapd.trainer.backup import BackupError, restore_backup
    from swapd.trainer.checkpoint import CheckpointError
    from swapd.trainer.snapshots import SnapshotError, restore_snapshot

    model_dir = _model_dir(args, idle=True)
    if model_dir is None:
        return EXIT_USAGE
    try:
        if args.snapshot is not None:
            iteration, replaced = restore_snapshot(model_dir, args.snapshot)
            what = f"the snapshot at iteration {iteration}"
        else:
            restored = restore_backup(model_dir)
            iteration, replaced = restored.iteration, restored.replaced
            what = f"the backup at iteration {iteration}"
            if restored.average_loss is not None:
                what += f", average loss {restored.average_loss:.4f}"
    except (BackupError, SnapshotError, CheckpointError) as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    kept = "" if replaced is None else f"; the replaced one is kept as {replaced}"
    print(f"restored {what}{kept}")
    return 0


def cmd_model_export(args: argparse.Namespace) -> int:
    from swapd.exporter.checkpoint_export import export_checkpoint
    from swapd.exporter.dfm_export import DfmReport
    from swapd.exporter.onnx_export import ExportError
    from swapd.trainer.checkpoint import CheckpointError
    from swapd.trainer.data import FaceSetError
    from swapd.trainer.snapshots import SnapshotError, find_snapshot

    model_dir = _model_dir(args, idle=False)
    if model_dir is None:
        return EXIT_USAGE
    try:
        if args.snapshot is not None:
            checkpoint = find_snapshot(model_dir, args.snapshot).checkpoint
            name = f"a_to_b_{args.snapshot}.{args.format}"
        else:
            checkpoint, name = model_dir / "model.pt", f"a_to_b.{args.format}"
        output = args.output or model_dir / "exports" / name
        report = export_checkpoint(checkpoint, output, args.faces, fmt=args.format)
    except (SnapshotError, CheckpointError, ExportError, FaceSetError) as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"exported {report.path} (parity max abs diff {report.max_abs_diff:.2e})")
    if isinstance(report, DfmReport):
        print(dfm_advice(report.crop))
    return 0


def dfm_advice(crop: CropMatch) -> str:
    """How to cut faces for a .dfm in DeepFaceLive, DeepFaceLab and facefusion."""
    lines = [f"DeepFaceLive: Face aligner, align mode 'from points', face coverage "
             f"{crop.deepfacelive_coverage}, x offset {crop.deepfacelive_x_offset}, y offset "
             f"{crop.deepfacelive_y_offset}, head mode off (off by {crop.deepfacelive_error:.1%}"
             " of the crop)"]
    fits = "fits" if crop.dfl_face_type_fits else "does NOT fit (retrain with another crop)"
    lines.append(f"nearest DeepFaceLab face type: {crop.dfl_face_type} ({fits}: "
                 f"{crop.dfl_face_type_error:.1%})")
    fits = "fits" if crop.facefusion_fits else "does NOT fit"
    lines.append(f"facefusion deep swapper (its fixed dfl_whole_face crop) {fits}: "
                 f"{crop.facefusion_error:.1%}")
    return "\n".join(lines)


SESSION_COLUMNS = ("start", "end", "start_iteration", "end_iteration", "iterations",
                   "batch_size")


def cmd_model_sessions(args: argparse.Namespace) -> int:
    """Every training session the checkpoint remembers: when, from and to which iteration,
    at which batch size (an unfinished session, cut by a crash, has no end)."""
    import csv

    from swapd.trainer.checkpoint import CheckpointError, load_checkpoint

    model_dir = _model_dir(args, idle=False)
    if model_dir is None:
        return EXIT_USAGE
    try:
        sessions = load_checkpoint(model_dir / "model.pt").get("history", {}).get("sessions", [])
    except CheckpointError as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rows = []
    for session in sessions:
        first, count = session.get("start_iteration", 0), session.get("iterations", 0)
        rows.append([session.get("start"), session.get("end") or "", first, first + count,
                     count, session.get("batch_size", "")])
    if args.output:
        with open(args.output, "w", newline="", encoding="utf-8") as out:
            csv.writer(out).writerows([SESSION_COLUMNS, *rows])
    else:
        csv.writer(sys.stdout).writerows([SESSION_COLUMNS, *rows])
    return 0


def cmd_model_snapshots(args: argparse.Namespace) -> int:
    from swapd.trainer.backup import backup_info
    from swapd.trainer.snapshots import list_snapshots

    model_dir = _model_dir(args, idle=False)
    if model_dir is None:
        return EXIT_USAGE
    if not model_dir.is_dir():
        print(f"swapd: {model_dir}: no such model folder", file=sys.stderr)
        return EXIT_USAGE
    snapshots = list_snapshots(model_dir)
    backup = backup_info(model_dir)
    if args.json:
        print(json.dumps({"model_dir": str(model_dir), "backup": backup,
                          "snapshots": [{**s.info, "path": str(s.checkpoint)}
                                        for s in snapshots]}))
        return 0
    for snap in snapshots:
        loss = snap.info.get("average_loss")
        shown = "loss ?" if loss is None else f"average loss {loss:.4f}"
        print(f"{snap.iteration:>10}  {snap.info.get('time', '?')}  {shown}  {snap.checkpoint}")
    if backup:
        print(f"backup: iteration {backup['iteration']}, average loss "
              f"{backup['average_loss']:.4f}")
    if not snapshots:
        print(f"no snapshots in {model_dir}")
    return 0


def _print_comparison(comparison: Any) -> None:
    print(f"snapshots {comparison.first} -> {comparison.second}")
    for side in comparison.sides:
        if not side.faces:
            print(f"  side {side.side.upper()}: no face tracked in both")
            continue
        print(f"  side {side.side.upper()}: {side.faces} faces, mean loss "
              f"{side.mean_before:.4f} -> {side.mean_after:.4f}; {side.improved} better, "
              f"{side.worsened} worse")
        for title, changes in (("most improved", side.most_improved),
                               ("most worsened", side.most_worsened)):
            for change in changes:
                print(f"    {title}: {change.face}  {change.before:.4f} -> {change.after:.4f}")


def cmd_model_compare(args: argparse.Namespace) -> int:
    from swapd.trainer.compare import compare_snapshots, comparison_grid
    from swapd.trainer.preview import write_png
    from swapd.trainer.snapshots import SnapshotError, find_snapshot

    model_dir = _model_dir(args, idle=False)
    if model_dir is None:
        return EXIT_USAGE
    try:
        first = find_snapshot(model_dir, args.first)
        second = find_snapshot(model_dir, args.second)
        comparison = compare_snapshots(first, second, args.top)
        if args.image:
            shown = [c for side in comparison.sides
                     for c in side.most_improved + side.most_worsened]
            write_png(args.image, comparison_grid(first, second, shown))
    except SnapshotError as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(comparison.to_json()))
    else:
        _print_comparison(comparison)
    return 0


def cmd_model_summary(args: argparse.Namespace) -> int:
    from swapd.trainer.models import build_model, summarize
    from swapd.trainer.options import OptionsError, parse_assignments, validate_model_options

    try:
        options = validate_model_options(args.name, parse_assignments(args.set))
    except OptionsError as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    model = build_model(args.name, options)
    rows = summarize(model)
    total = sum(p.numel() for p in model.parameters())
    if args.json:
        print(json.dumps({"model": args.name, "parameters": total,
                          "options": options.model_dump(), "layers": rows}))
        return 0
    print(f"{args.name} ({', '.join(f'{k}={v}' for k, v in options.model_dump().items())})")
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        print(f"  {row['name']:<{width}}  {row['parameters']:>12,}  {row['layer']}")
    print(f"  {'total':<{width}}  {total:>12,} parameters")
    return 0


def cmd_model_import(args: argparse.Namespace) -> int:
    """A faceswap or DeepFaceLab model folder as a swapd checkpoint in a new model folder."""
    from swapd.trainer.importers import ModelImportError, import_model

    choices = {"archi": args.archi} if args.archi else {}
    try:
        checkpoint, imported = import_model(Path(args.source), Path(args.model_dir),
                                            args.source_tool, **choices)
    except ModelImportError as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sets = " ".join(f"--set {k}={v}" for k, v in {**imported.options,
                                                   **imported.trainer}.items())
    print(f"imported {imported.source.get('tool')} {imported.model} at iteration "
          f"{imported.iteration} into {checkpoint}")
    print(f"train on with: swapd train --model {imported.model} {sets} "
          f"--model-dir {args.model_dir} -A FACES_A -B FACES_B")
    return 0


def add_model(sub: Subparsers) -> None:
    """swapd model summary | restore | export | sessions | snapshots | compare | import"""
    model = sub.add_parser("model", help="model architectures").add_subparsers(
        dest="model_command", required=True)
    p = model.add_parser("summary", help="layers and parameter count of a model")
    p.add_argument("name", help="model name (lightweight, original, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a model option, e.g. --set input_size=128 --set width=0.5")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_model_summary)

    p = model.add_parser("restore", help="make the backup (lowest average loss) the "
                                         "checkpoint again")
    p.add_argument("model_dir", nargs="?", type=Path, help="a model folder (swapd train's)")
    p.add_argument("--job", help="a service job's model instead")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--snapshot", type=int, metavar="ITERATION",
                   help="restore this snapshot instead of the backup")
    p.set_defaults(func=cmd_model_restore)
    p = model.add_parser("export", help="export a checkpoint or snapshot to ONNX (A>B)")
    p.add_argument("model_dir", nargs="?", type=Path, help="a model folder (swapd train's)")
    p.add_argument("--job", help="a service job's model instead")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--snapshot", type=int, metavar="ITERATION", help="this snapshot's model")
    p.add_argument("--faces", type=Path, help="A faces for the parity check (default: a seeded "
                                              "random batch)")
    p.add_argument("--output", type=Path, help="default: <model dir>/exports/a_to_b.onnx, or "
                                               "a_to_b_<iteration>.onnx for a snapshot")
    p.add_argument("--format", default="onnx", choices=["onnx", "dfm"],
                   help="onnx (swapd's merger) or dfm (DeepFaceLab's form, for DeepFaceLive "
                        "and facefusion's deep swapper)")
    p.set_defaults(func=cmd_model_export)
    p = model.add_parser("sessions", help="a model's training sessions as CSV")
    p.add_argument("model_dir", nargs="?", type=Path, help="a model folder (swapd train's)")
    p.add_argument("--job", help="a service job's model instead")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--output", type=Path, help="write here instead of standard output")
    p.set_defaults(func=cmd_model_sessions)
    p = model.add_parser("snapshots", help="a model's snapshots: iteration, time, loss")
    p.add_argument("model_dir", nargs="?", type=Path, help="a model folder (swapd train's)")
    p.add_argument("--job", help="a service job's model instead")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_model_snapshots)
    p = model.add_parser("compare", help="two snapshots' tracker data: each face's loss "
                                         "then and now")
    p.add_argument("model_dir", nargs="?", type=Path, help="a model folder (swapd train's)")
    p.add_argument("first", type=int, metavar="FIRST", help="iteration of the earlier snapshot")
    p.add_argument("second", type=int, metavar="SECOND", help="iteration of the later one")
    p.add_argument("--job", help="a service job's model instead")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--top", type=positive_int, default=5,
                   help="faces listed as most improved / worsened per side (default 5)")
    p.add_argument("--image", type=Path, help="also write those faces' images side by side "
                                              "(PNG: reconstruction then swap, before/after)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_model_compare)
    p = model.add_parser("import", help="a faceswap (original, lightweight) or DeepFaceLab "
                                        "(SAEHD df, liae) model as a swapd checkpoint")
    p.add_argument("source", type=Path, help="the model folder (or its .keras file)")
    p.add_argument("--model-dir", required=True, type=Path,
                   help="a new (or empty) folder for the swapd checkpoint")
    p.add_argument("--from", dest="source_tool", choices=("faceswap", "dfl"),
                   help="which tool saved it (default: told by its files)")
    p.add_argument("--archi", help="DeepFaceLab: the archi, when its options file is "
                                   "missing (e.g. df-ud, liae)")
    p.set_defaults(func=cmd_model_import)

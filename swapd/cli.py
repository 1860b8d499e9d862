"""The `swapd` command.

    swapd run     [--workspace DIR] [--config swapd.toml]   the service, in the foreground
    swapd demo    [--workspace DIR]                         a synthetic demo workspace, then run
    swapd status  [--workspace DIR] [--json]                jobs, problems, recent events
    swapd verify  FILE [--json]                             is this file marked as made by swapd?
    swapd merge   INPUT --model FILE.onnx [--output DIR]    one merge, now, with a progress bar
    swapd pause | resume | save | stop JOB                  control a training job
    swapd faces inspect FILE [--json]                       metadata of a faceswap / DFL face
    swapd faces import DIR --set NAME [--workspace DIR]     copy a face set into a workspace
    swapd faces list [SET] [--workspace DIR] [--json]       the face index: status, pose, why
    swapd faces extract INPUT --set NAME [--size 512]       faces of new footage, aligned
    swapd train --model NAME -A DIR -B DIR --model-dir DIR  train without the service
    swapd model summary NAME [--set key=value] [--json]     layers and parameter count
    swapd model restore (DIR | --job NAME) [--snapshot N]   go back to the best backup / a snapshot
    swapd model snapshots (DIR | --job NAME) [--json]       a model's snapshots and backup
    swapd model export (DIR | --job NAME) [--snapshot N]    a checkpoint or snapshot to ONNX
    swapd model sessions (DIR | --job NAME) [--output F]    training sessions as CSV
    swapd model compare (DIR | --job NAME) N M [--image F]  how each face moved between snapshots
    swapd losses JOB [--output FILE]                        a job's loss history as CSV
    swapd config                                            print the default swapd.toml
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from swapd import __version__
from swapd.config import ConfigError, ServiceConfig, default_config_text, load_service_config
from swapd.workspace import Workspace

EXIT_USAGE = 2


def _setup_logging(ws: Workspace | None, level: str) -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    if ws is not None:
        ws.logs.mkdir(parents=True, exist_ok=True)
        file = logging.handlers.RotatingFileHandler(ws.logs / "swapd.log", maxBytes=5_000_000,
                                                    backupCount=3, encoding="utf-8")
        file.setFormatter(fmt)
        root.addHandler(file)
    for noisy in ("watchdog", "waitress", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # "Task queue depth is N" whenever a browser opens the page: not worth a warning.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def _service_config(args: argparse.Namespace) -> ServiceConfig:
    config = load_service_config(args.config)
    updates: dict[str, dict[str, object]] = {}
    if getattr(args, "host", None):
        updates.setdefault("dashboard", {})["host"] = args.host
    if getattr(args, "port", None) is not None:
        updates.setdefault("dashboard", {})["port"] = args.port
    if getattr(args, "no_dashboard", False):
        updates.setdefault("dashboard", {})["enabled"] = False
    if getattr(args, "token", None):
        updates.setdefault("dashboard", {})["token"] = args.token
    data = config.model_dump()
    for section, values in updates.items():
        data[section].update(values)
    return ServiceConfig.model_validate(data)


def _workspace(args: argparse.Namespace, config: ServiceConfig | None = None) -> Workspace:
    root = args.workspace or (config.service.workspace if config else "") or None
    return Workspace.open(root)


def cmd_run(args: argparse.Namespace) -> int:
    from swapd.daemon.service import Service

    config = _service_config(args)
    ws = _workspace(args, config)
    _setup_logging(ws, config.service.log_level)
    print(f"swapd {__version__}: workspace {ws.root}", flush=True)
    return Service(ws, config).run()


def cmd_demo(args: argparse.Namespace) -> int:
    from swapd.demo import create_demo_workspace

    args.workspace = args.workspace or Path("demo-workspace")
    ws = Workspace.open(args.workspace)
    print(f"swapd demo: preparing {ws.root} (synthetic faces and a clip, drawn by swapd)",
          flush=True)
    create_demo_workspace(ws, fresh=args.fresh)
    return cmd_run(args)


def _read_state(workspace: Path | None, missing: str) -> tuple[Workspace, Any]:
    """The workspace and its state store opened read-only; (ws, None) after printing
    ``missing`` (formatted with the workspace root) when the service has not run there."""
    from swapd.daemon.state import StateStore

    ws = Workspace.open(workspace, create=False)
    if not ws.state_db.exists():
        print(missing.format(root=ws.root), file=sys.stderr)
        return ws, None
    return ws, StateStore(ws.state_db, readonly=True)


def cmd_status(args: argparse.Namespace) -> int:
    ws, store = _read_state(args.workspace, "no swapd state in {root} (has the service run there?)")
    if store is None:
        return 1
    jobs, problems = store.jobs(), store.problems()
    if args.json:
        print(json.dumps({
            "workspace": str(ws.root),
            "jobs": [{"name": j.name, "kind": j.kind, "state": j.state, "model": j.model,
                      "iteration": j.iteration, "target": j.target, "egs": j.egs,
                      "error": j.error} for j in jobs],
            "problems": [{"source": p.source, "kind": p.kind, "key": p.key,
                          "message": p.message, "moved_to": p.moved_to} for p in problems],
        }, indent=2))
        return 0
    print(f"workspace {ws.root}")
    for j in jobs:
        egs = f"{j.egs:.1f} EG/s" if j.egs else ""
        target = f"/{j.target}" if j.target else ""
        print(f"  {j.name:24} {j.state:11} {j.iteration}{target} {egs}")
        if j.error:
            print(f"      {j.error.splitlines()[0]}")
    for p in problems:
        print(f"  problem: {p.message.splitlines()[0]}"
              + (f" (moved to {p.moved_to})" if p.moved_to else ""))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Like grep: 0 marked, 1 not marked, 2 cannot read."""
    from swapd.media import UnreadableMediaError
    from swapd.merger.provenance import verify_file

    try:
        result = verify_file(Path(args.file))
    except UnreadableMediaError as exc:
        print(f"swapd verify: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(result.to_json())
    else:
        verdict = "marked as synthetic media made by swapd" if result.marked else "not marked"
        print(f"{args.file}: {verdict} (metadata tag: {'yes' if result.metadata_tag else 'no'},"
              f" watermark confidence {result.watermark.confidence:.2f})")
    return 0 if result.marked else 1


def _progress_bar(name: str) -> tuple[Any, Callable[[int, int | None], None]]:
    """A tqdm bar on stderr and the (done, total) callback merge and extract report to."""
    from tqdm import tqdm

    bar = tqdm(unit="frame", desc=name)

    def progress(done: int, total: int | None) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, progress


def cmd_merge(args: argparse.Namespace) -> int:
    from swapd.extract.alignments import AlignmentsError, load_alignments, record_beside
    from swapd.media import UnreadableMediaError
    from swapd.merger.merge import MergeError, MergeOptions, merge_file

    record = None if args.detect else (args.alignments or record_beside(args.input))
    try:
        alignments = None if record is None else load_alignments(record)
    except AlignmentsError as exc:
        print(f"swapd merge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if alignments is not None:
        print(f"faces from {record} ({len(alignments)} frames recorded)")
    bar, progress = _progress_bar(Path(args.input).name)
    try:
        result = merge_file(Path(args.input), Path(args.output), Path(args.model),
                            options=MergeOptions(faces=args.faces, device=args.device,
                                                 learned_mask=not args.no_learned_mask),
                            progress=progress, alignments=alignments)
    except (UnreadableMediaError, MergeError) as exc:
        bar.close()
        print(f"swapd merge: {exc}", file=sys.stderr)
        return 2
    bar.close()
    print(f"{result.output_path} ({result.frames} frames, {result.faces_swapped} faces swapped,"
          f" {result.fps:.1f} fps)")
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    from swapd.daemon.state import StateStore

    ws = Workspace.open(args.workspace, create=False)
    store = StateStore(ws.state_db)
    row = store.job(args.job)
    if row is None:
        print(f"no job named {args.job!r} in {ws.root}", file=sys.stderr)
        return 1
    if args.command == "resume" and row.state in ("stopped", "error", "interrupted"):
        store.set_job_state(args.job, "queued")  # no worker to tell: the service starts one
    else:
        store.request_control(args.job, args.command)
    print(f"{args.command} requested for {args.job} (was {row.state})")
    return 0


def cmd_faces_inspect(args: argparse.Namespace) -> int:
    from swapd.extract.detect import DetectorError, create_detector
    from swapd.extract.face_landmarks import add_found_landmarks
    from swapd.faces.validate import BadFaceError, inspect_face_file

    try:
        info = inspect_face_file(args.file, min_size=1)
        if args.detector != "none":
            add_found_landmarks(info, create_detector(args.detector))
    except (BadFaceError, DetectorError) as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    description = info.describe()
    if args.json:
        print(json.dumps(description))
        return 0
    for key, value in description.items():
        if key in ("landmarks", "source_landmarks") and value is not None:
            value = f"{len(value)} points"
        elif key == "pose" and value is not None:
            value = ", ".join(f"{name} {angle:+.1f}°" for name, angle in value.items())
        print(f"{key:>20}: {value}")
    return 0


def cmd_faces_import(args: argparse.Namespace) -> int:
    from swapd.faces.importer import import_faces

    config = _service_config(args)
    ws = _workspace(args, config)
    source = Path(args.dir)
    if not source.is_dir():
        print(f"swapd: {source}: not a folder", file=sys.stderr)
        return EXIT_USAGE
    try:
        destination = ws.face_set(args.set)
    except ValueError as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = import_faces(source, destination, min_size=config.ingest.min_face_size)
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(report.copied.items())) or "none"
    print(f"imported into {ws.relative(destination)}: {kinds}; {report.unchanged} already there, "
          f"{len(report.skipped)} skipped")
    if not report.copied and not report.unchanged:
        return EXIT_USAGE
    return 1 if report.skipped else 0


def cmd_faces_extract(args: argparse.Namespace) -> int:
    from swapd.extract.detect import DetectorError
    from swapd.extract.extract import extract
    from swapd.media import UnreadableMediaError

    config = _service_config(args)
    ws = _workspace(args, config)
    try:
        destination = Path(args.output) if args.output else ws.face_set(args.set)
    except ValueError as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    bar, progress = _progress_bar(Path(args.input).name)
    try:
        report = extract(Path(args.input), destination, size=args.size, centering=args.centering,
                         detector=args.detector, min_face_size=args.min_face,
                         redetect_every=args.redetect_every, progress=progress)
    except (UnreadableMediaError, DetectorError) as exc:
        bar.close()
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    bar.close()
    resumed = f", {report.frames_skipped} already done" if report.frames_skipped else ""
    print(f"{report.faces} faces from {report.frames} frames into {destination}{resumed} "
          f"({report.frames_without_face} frames without a face, {report.fps:.1f} fps); "
          f"alignments: {report.alignments[0].name}")
    return 0


def cmd_faces_list(args: argparse.Namespace) -> int:
    ws, store = _read_state(args.workspace,
                            "swapd: no face index in {root} yet (the service builds it)")
    if store is None:
        return 1
    try:
        records = store.faces(args.set)
        sets = store.face_sets()
    except sqlite3.OperationalError:  # a database from before the face index
        print(f"swapd: no face index in {ws.root} yet (the service builds it)", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.set is not None and not records:
        print(f"swapd: no indexed faces in set {args.set!r}; indexed sets: "
              f"{', '.join(sets) or 'none'}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"sets": sets, "faces": [
            {k: v for k, v in vars(r).items() if k != "landmarks" or args.landmarks}
            for r in records]}))
        return 0
    for r in records:
        if r.status == "quarantined":
            detail = f"QUARANTINED: {r.reason} (moved to {r.moved_to})"
        else:
            pose = ("pose ?" if r.yaw is None else
                    f"yaw {r.yaw:+5.1f} pitch {r.pitch:+5.1f} roll {r.roll:+5.1f}")
            found = ("unaligned" if r.landmarks_from is None
                     else f"landmarks {r.landmarks_from}")
            detail = f"{r.kind:<11} {r.width}x{r.height}x{r.channels}  {pose}  {found}"
            if r.duplicate_of:
                detail += f"  duplicate of {r.duplicate_of}"
        print(f"{r.set_name}/{r.name}: {detail}")
    for name, counts in sets.items():
        if args.set is None or name == args.set:
            print(f"{name}: {counts['ok']} ok, {counts['quarantined']} quarantined, "
                  f"{counts['duplicates']} duplicates")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _write_losses_csv(rows: Callable[[], Iterator[tuple[Any, ...]]], out: IO[str]) -> None:
    """iteration, time, loss_a, loss_b, then a column per loss component and side
    (``a_ssim``, ``a_mae``, ``a_eyes``, ...; empty where a row has none). ``rows`` is called
    twice: once to learn the components' names, once to write."""
    import csv
    from datetime import UTC, datetime

    names: dict[str, None] = {}  # ordered set
    for *_, components in rows():
        for side, parts in (components or {}).items():
            for name in parts:
                names.setdefault(f"{side}_{name}")
    writer = csv.writer(out)
    writer.writerow(["iteration", "time", "loss_a", "loss_b", *names])
    for iteration, when, loss_a, loss_b, components in rows():
        stamp = datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")
        flat = {f"{side}_{name}": value for side, parts in (components or {}).items()
                for name, value in parts.items()}
        writer.writerow([iteration, stamp, f"{loss_a:.6g}", f"{loss_b:.6g}",
                         *(f"{flat[n]:.6g}" if n in flat else "" for n in names)])


def cmd_losses(args: argparse.Namespace) -> int:
    """A job's whole loss history as CSV (iteration, time, loss_a, loss_b, components)."""
    ws, store = _read_state(args.workspace, "swapd: no swapd state in {root}")
    if store is None:
        return 1
    try:
        if store.job(args.job) is None:
            print(f"swapd: no job {args.job!r} in {ws.root}", file=sys.stderr)
            return 1
        if args.output:
            with open(args.output, "w", newline="", encoding="utf-8") as out:
                _write_losses_csv(lambda: store.iter_losses(args.job), out)
        else:
            _write_losses_csv(lambda: store.iter_losses(args.job), sys.stdout)
    finally:
        store.close()
    return 0


def _model_dir(args: argparse.Namespace, idle: bool) -> Path | None:
    """The model folder a ``swapd model`` command names (a folder, or --job NAME); None after
    printing why not. ``idle``: refuse a job whose worker is running."""
    if (args.model_dir is None) == (args.job is None):
        print(f"swapd model {args.model_command}: give a model folder or --job NAME",
              file=sys.stderr)
        return None
    if args.job is None:
        return Path(args.model_dir)
    ws, store = _read_state(args.workspace, "swapd: no swapd state in {root}")
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
            name = f"a_to_b_{args.snapshot}.onnx"
        else:
            checkpoint, name = model_dir / "model.pt", "a_to_b.onnx"
        output = args.output or model_dir / "exports" / name
        report = export_checkpoint(checkpoint, output, args.faces)
    except (SnapshotError, CheckpointError, ExportError, FaceSetError) as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"exported {report.path} (parity max abs diff {report.max_abs_diff:.2e})")
    return 0


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


def cmd_train(args: argparse.Namespace) -> int:
    from swapd.exporter.checkpoint_export import export_trainer
    from swapd.trainer.checkpoint import CHECKPOINT_NAME, CheckpointError
    from swapd.trainer.cli_train import run_training
    from swapd.trainer.data import FaceSetError
    from swapd.trainer.divergence import TrainingDivergedError
    from swapd.trainer.lr_finder import LRFinderError
    from swapd.trainer.options import OptionsError, parse_assignments

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    checkpoint = Path(args.model_dir) / CHECKPOINT_NAME
    try:
        reached = run_training(args.model, Path(args.A), Path(args.B), Path(args.model_dir),
                               parse_assignments(args.set), args.iterations, args.batch_size,
                               args.save_every, export_trainer if args.export else None,
                               snapshot_every=args.snapshot_every,
                               snapshot_policy=args.snapshot_policy,
                               snapshot_keep=args.snapshot_keep,
                               tracker=not args.no_tracker, tracker_faces=args.tracker_faces,
                               start_from=args.start_from)
    except (OptionsError, FaceSetError, CheckpointError, LRFinderError) as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDivergedError as exc:  # on_nan = "stop", or no rollback left
        kept = "the last checkpoint is intact" if checkpoint.exists() else "nothing was saved"
        print(f"swapd: training stopped, {exc.reason}: {exc}; {kept}", file=sys.stderr)
        return 1
    if not checkpoint.exists():
        print(f"nothing saved in {args.model_dir}")
        return 0
    print(f"saved {args.model_dir} at iteration {reached}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swapd", description="face-swap training service")
    parser.add_argument("--version", action="version", version=f"swapd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def service_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workspace", type=Path, help="workspace folder")
        p.add_argument("--config", type=Path, help="swapd.toml (default: built-in defaults)")
        p.add_argument("--host", help="dashboard address (non-loopback needs --token)")
        p.add_argument("--port", type=int, help="dashboard port (0 = any free port)")
        p.add_argument("--token", help="dashboard access token")
        p.add_argument("--no-dashboard", action="store_true", help="do not serve the dashboard")

    p = sub.add_parser("run", help="run the service in the foreground")
    service_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="create a synthetic demo workspace and run the service")
    service_args(p)
    p.add_argument("--fresh", action="store_true", help="start the demo over from scratch")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("status", help="jobs, problems and progress of a workspace")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("verify", help="does a file carry swapd's provenance mark? (0 yes, 1 no)")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the evidence as JSON")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("merge", help="merge one video or image now")
    p.add_argument("input")
    p.add_argument("--model", required=True, help="an .onnx file exported by swapd")
    p.add_argument("--output", default="merged", help="output folder")
    p.add_argument("--faces", default="all", choices=["all", "largest"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--alignments", type=Path,
                   help="faces per frame from `swapd faces extract` (default: "
                        "INPUT_STEM.alignments.jsonl beside the input, when present)")
    p.add_argument("--no-learned-mask", action="store_true",
                   help="blend with the mean face's outline even when the model learned a mask")
    p.add_argument("--detect", action="store_true",
                   help="detect every face, ignoring any alignments record")
    p.set_defaults(func=cmd_merge)

    for action in ("pause", "resume", "save", "stop"):
        p = sub.add_parser(action, help=f"{action} a training job")
        p.add_argument("job")
        p.add_argument("--workspace", type=Path)
        p.set_defaults(func=cmd_control)

    faces = sub.add_parser("faces", help="inspect and import aligned faces").add_subparsers(
        dest="faces_command", required=True)
    p = faces.add_parser("inspect", help="print a face file's metadata (exit 2 if unusable)")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--detector", default="mtcnn",
                   help="find landmarks the file lacks with this plugin (mtcnn, dlib; none: "
                        "do not look)")
    p.set_defaults(func=cmd_faces_inspect)
    p = faces.add_parser("import", help="copy a faceswap / DeepFaceLab face set in")
    p.add_argument("dir", help="folder of aligned faces")
    p.add_argument("--set", required=True, help="face set name (faces/<NAME>/)")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--config", type=Path)
    p.set_defaults(func=cmd_faces_import)
    p = faces.add_parser("extract", help="find, align and save the faces of new footage")
    p.add_argument("input", help="a video, an image, or a folder of images")
    p.add_argument("--set", required=True, help="face set to write (faces/<NAME>/)")
    p.add_argument("--output", help="write here instead of the workspace's face set")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--config", type=Path)
    p.add_argument("--size", type=int, default=512, help="aligned face side in pixels")
    p.add_argument("--centering", default="head", choices=["legacy", "face", "head"])
    p.add_argument("--detector", default="mtcnn", help="detector plugin (default mtcnn)")
    p.add_argument("--min-face", type=int, default=40, help="smallest face, in frame pixels")
    p.add_argument("--redetect-every", type=int, default=5,
                   help="video: full search every N frames, faces followed in between")
    p.set_defaults(func=cmd_faces_extract)
    p = faces.add_parser("list", help="the face index: each face's status, pose, duplicates")
    p.add_argument("set", nargs="?", help="one face set (default: all)")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--json", action="store_true")
    p.add_argument("--landmarks", action="store_true", help="include landmarks in --json")
    p.set_defaults(func=cmd_faces_list)

    p = sub.add_parser("train", help="train a model from the command line (no service)")
    p.add_argument("--model", required=True, help="lightweight, original, ...")
    p.add_argument("-A", required=True, help="faces of A, the face to replace")
    p.add_argument("-B", required=True, help="faces of B, the face to put in")
    p.add_argument("--model-dir", required=True, help="checkpoint folder (resumed if present)")
    p.add_argument("--iterations", type=int, default=0, help="stop here (0 = until Ctrl-C)")
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--save-every", type=_positive_int, default=250)
    p.add_argument("--snapshot-every", type=int, default=0,
                   help="keep a snapshot every N iterations (0 = none)")
    p.add_argument("--snapshot-policy", default="all", choices=["all", "last", "thinned"])
    p.add_argument("--snapshot-keep", type=_positive_int, default=10,
                   help="snapshots the last / thinned policies keep (newest)")
    p.add_argument("--tracker-faces", type=int, default=0,
                   help="faces per set in each snapshot's tracker data (0 = every face)")
    p.add_argument("--no-tracker", action="store_true", help="snapshots without tracker data")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a trainer or model option, e.g. --set learning_rate=1e-4")
    p.add_argument("--export", action="store_true", help="export ONNX when done")
    p.add_argument("--start-from", type=Path, metavar="MODEL.pt",
                   help="a new model starts from this checkpoint's weights (same model and "
                   "model options; DeepFaceLab's pretrained model)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("losses", help="a job's loss history as CSV")
    p.add_argument("job")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--output", help="write here instead of standard output")
    p.set_defaults(func=cmd_losses)

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
    p.add_argument("--faces", type=Path, help="A faces for the parity check (default: swapd's "
                                              "synthetic faces)")
    p.add_argument("--output", type=Path, help="default: <model dir>/exports/a_to_b.onnx, or "
                                               "a_to_b_<iteration>.onnx for a snapshot")
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
    p.add_argument("--top", type=_positive_int, default=5,
                   help="faces listed as most improved / worsened per side (default 5)")
    p.add_argument("--image", type=Path, help="also write those faces' images side by side "
                                              "(PNG: reconstruction then swap, before/after)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_model_compare)

    p = sub.add_parser("config", help="print the default swapd.toml")
    p.set_defaults(func=lambda _args: print(default_config_text(), end="") or 0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

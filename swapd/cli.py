"""The `swapd` command.

    swapd run     [--workspace DIR] [--config swapd.toml]   the service, in the foreground
    swapd demo    [--workspace DIR]                         a synthetic demo workspace, then run
    swapd status  [--workspace DIR] [--json]                jobs, problems, recent events
    swapd verify  FILE [--json]                             is this file marked as made by swapd?
    swapd merge   INPUT --model FILE.onnx [--output DIR]    one merge, now, with a progress bar
    swapd pause | resume | save | stop JOB                  control a training job
    swapd faces inspect FILE [--json]                       metadata of a faceswap / DFL face
    swapd faces import DIR --set NAME [--workspace DIR]     copy a face set into a workspace
    swapd config                                            print the default swapd.toml
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import sys
from pathlib import Path

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


def cmd_status(args: argparse.Namespace) -> int:
    from swapd.daemon.state import StateStore

    ws = Workspace.open(args.workspace, create=False)
    if not ws.state_db.exists():
        print(f"no swapd state in {ws.root} (has the service run there?)", file=sys.stderr)
        return 1
    store = StateStore(ws.state_db, readonly=True)
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


def cmd_merge(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from swapd.media import UnreadableMediaError
    from swapd.merger.merge import MergeError, MergeOptions, merge_file

    bar = tqdm(unit="frame", desc=Path(args.input).name)

    def progress(done: int, total: int | None) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        result = merge_file(Path(args.input), Path(args.output), Path(args.model),
                            options=MergeOptions(faces=args.faces, device=args.device),
                            progress=progress)
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
    from swapd.faces.validate import BadFaceError, inspect_face_file

    try:
        info = inspect_face_file(args.file, min_size=1)
    except BadFaceError as exc:
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
    destination = ws.face_set(args.set)
    report = import_faces(source, destination, min_size=config.ingest.min_face_size)
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(report.copied.items())) or "none"
    print(f"imported into {ws.relative(destination)}: {kinds}; {report.unchanged} already there, "
          f"{len(report.skipped)} skipped")
    if not report.copied and not report.unchanged:
        return EXIT_USAGE
    return 1 if report.skipped else 0


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
    p.set_defaults(func=cmd_faces_inspect)
    p = faces.add_parser("import", help="copy a faceswap / DeepFaceLab face set in")
    p.add_argument("dir", help="folder of aligned faces")
    p.add_argument("--set", required=True, help="face set name (faces/<NAME>/)")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--config", type=Path)
    p.set_defaults(func=cmd_faces_import)

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

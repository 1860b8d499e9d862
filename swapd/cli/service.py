"""The service's commands: run (in the foreground), demo (a synthetic workspace, then run),
config (the default swapd.toml)."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import sys
from pathlib import Path

from swapd import __version__
from swapd.cli.common import (
    EXIT_USAGE,
    Subparsers,
    TokenFileError,
    add_service_args,
    service_config,
    workspace_of,
)
from swapd.config import default_config_text
from swapd.workspace import Workspace


class _LogFile(logging.handlers.RotatingFileHandler):
    """The service's log file. On a full disk a line that cannot be written is dropped (the
    console, or the journal, still has it) rather than printed with a traceback each time."""

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handleError(record)


def _setup_logging(ws: Workspace | None, level: str) -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    if ws is not None:
        ws.logs.mkdir(parents=True, exist_ok=True)
        file = _LogFile(ws.logs / "swapd.log", maxBytes=5_000_000, backupCount=3,
                        encoding="utf-8")
        file.setFormatter(fmt)
        root.addHandler(file)
    for noisy in ("watchdog", "waitress", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # "Task queue depth is N" whenever a browser opens the page: not worth a warning.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def cmd_run(args: argparse.Namespace) -> int:
    from swapd.daemon.dashboard_settings import dashboard_problem
    from swapd.daemon.service import Service

    try:
        config = service_config(args)
    except TokenFileError as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problem = dashboard_problem(config)
    if problem is not None:
        print(f"swapd: not started: {problem}", file=sys.stderr)
        return EXIT_USAGE
    from swapd.merger.c2pa_credentials import (
        CredentialsError,
        check_time_stamps,
        load_credentials,
    )
    from swapd.merger.content_credentials import read_trust_anchors

    try:  # merges sign their outputs: bad credentials stop the service before it starts
        check_time_stamps(load_credentials(config.merge.c2pa_certificate,
                                           config.merge.c2pa_private_key,
                                           timestamp_url=config.merge.c2pa_timestamp_url))
        if config.merge.c2pa_trust_anchors:
            read_trust_anchors(config.merge.c2pa_trust_anchors)
    except (CredentialsError, ValueError) as exc:
        print(f"swapd: not started: {exc}", file=sys.stderr)
        return EXIT_USAGE
    ws = workspace_of(args, config)
    _setup_logging(ws, config.service.log_level)
    print(f"swapd {__version__}: workspace {ws.root}", flush=True)
    return Service(ws, config).run()


def cmd_demo(args: argparse.Namespace) -> int:
    from swapd.demo.workspace import create_demo_workspace

    args.workspace = args.workspace or Path("demo-workspace")
    ws = Workspace.open(args.workspace)
    print(f"swapd demo: preparing {ws.root} (synthetic faces and a clip, drawn by swapd)",
          flush=True)
    create_demo_workspace(ws, fresh=args.fresh)
    return cmd_run(args)


def add_run(sub: Subparsers) -> None:
    """swapd run"""
    p = sub.add_parser("run", help="run the service in the foreground")
    add_service_args(p)
    p.set_defaults(func=cmd_run)


def add_demo(sub: Subparsers) -> None:
    """swapd demo"""
    p = sub.add_parser("demo", help="create a synthetic demo workspace and run the service")
    add_service_args(p)
    p.add_argument("--fresh", action="store_true", help="start the demo over from scratch")
    p.set_defaults(func=cmd_demo)


def add_config(sub: Subparsers) -> None:
    """swapd config"""
    p = sub.add_parser("config", help="print the default swapd.toml")
    p.set_defaults(func=lambda _args: print(default_config_text(), end="") or 0)

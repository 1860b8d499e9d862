"""What the command groups share: exit codes, options, the workspace and its state store."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from swapd.config import ServiceConfig, load_service_config
from swapd.workspace import Workspace

EXIT_USAGE = 2
Subparsers = argparse._SubParsersAction  # what add_subparsers returns
TOKEN_VARIABLE = "SWAPD_DASHBOARD_TOKEN"


def add_service_args(p: argparse.ArgumentParser) -> None:
    """The options of the commands that start the service (run, demo)."""
    p.add_argument("--workspace", type=Path, help="workspace folder")
    p.add_argument("--config", type=Path, help="swapd.toml (default: built-in defaults)")
    p.add_argument("--host", help="dashboard address (any but 127.0.0.1 / localhost needs a "
                                  "token, or swapd refuses to start)")
    p.add_argument("--port", type=int, help="dashboard port (0 = any free port)")
    p.add_argument("--token-file", type=Path, metavar="FILE",
                   help="read the dashboard's access token from FILE (its first line); or set "
                        f"it in ${TOKEN_VARIABLE}, or as [dashboard] token in swapd.toml")
    p.add_argument("--token", help="the dashboard's access token on the command line (other "
                                   "users of the machine see it in ps: prefer --token-file or "
                                   f"${TOKEN_VARIABLE})")
    p.add_argument("--no-dashboard", action="store_true", help="do not serve the dashboard")


class TokenFileError(ValueError):
    """--token-file names a file that cannot be read, or an empty one."""


def dashboard_token(args: argparse.Namespace) -> str | None:
    """The token given to this command: --token, else --token-file's first line, else
    $SWAPD_DASHBOARD_TOKEN; None leaves swapd.toml's."""
    if getattr(args, "token", None):
        return str(args.token)
    path = getattr(args, "token_file", None)
    if path is not None:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenFileError(f"--token-file {path}: cannot read it ({exc})") from exc
        if not lines or not lines[0].strip():
            raise TokenFileError(f"--token-file {path}: the file is empty")
        return lines[0].strip()
    return os.environ.get(TOKEN_VARIABLE) or None


def service_config(args: argparse.Namespace) -> ServiceConfig:
    config = load_service_config(args.config)
    updates: dict[str, dict[str, object]] = {}
    if getattr(args, "host", None):
        updates.setdefault("dashboard", {})["host"] = args.host
    if getattr(args, "port", None) is not None:
        updates.setdefault("dashboard", {})["port"] = args.port
    if getattr(args, "no_dashboard", False):
        updates.setdefault("dashboard", {})["enabled"] = False
    token = dashboard_token(args)
    if token:
        updates.setdefault("dashboard", {})["token"] = token
    data = config.model_dump()
    for section, values in updates.items():
        data[section].update(values)
    return ServiceConfig.model_validate(data)


def workspace_of(args: argparse.Namespace, config: ServiceConfig | None = None) -> Workspace:
    root = args.workspace or (config.service.workspace if config else "") or None
    return Workspace.open(root)


def read_state(workspace: Path | None, missing: str) -> tuple[Workspace, Any]:
    """The workspace and its state store opened read-only; (ws, None) after printing
    ``missing`` (formatted with the workspace root) when the service has not run there."""
    from swapd.state import StateStore

    ws = Workspace.open(workspace, create=False)
    if not ws.state_db.exists():
        print(missing.format(root=ws.root), file=sys.stderr)
        return ws, None
    return ws, StateStore(ws.state_db, readonly=True)


@contextlib.contextmanager
def progress_bar(name: str) -> Iterator[Callable[[int, int | None], None]]:
    """A tqdm bar on stderr while the block runs, closed when it ends (an error's message
    then starts a line of its own), and the (done, total) callback merge and extract report
    to. Log lines written meanwhile go above the bar, not into it."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(), tqdm(unit="frame", desc=name) as bar:

        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        yield progress


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value

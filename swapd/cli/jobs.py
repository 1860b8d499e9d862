"""A workspace's jobs: status, pause | resume | save | stop, and a job's loss history."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from swapd.cli.common import Subparsers, read_state
from swapd.workspace import Workspace


def cmd_status(args: argparse.Namespace) -> int:
    ws, store = read_state(args.workspace, "no swapd state in {root} (has the service run there?)")
    if store is None:
        return 1
    jobs, problems = store.jobs(), store.problems()
    disk = {j.name: _disk_full(ws, store, j) for j in jobs}
    if args.json:
        print(json.dumps({
            "workspace": str(ws.root),
            "jobs": [{"name": j.name, "kind": j.kind, "state": j.state, "model": j.model,
                      "iteration": j.iteration, "target": j.target, "egs": j.egs,
                      "error": j.error, "disk_full": disk[j.name]} for j in jobs],
            "problems": [{"source": p.source, "kind": p.kind, "key": p.key,
                          "message": p.message, "moved_to": p.moved_to} for p in problems],
        }, indent=2))
        return 0
    print(f"workspace {ws.root}")
    short = _disk_shortage(ws)
    if short:
        print(f"  {short}")
    for j in jobs:
        egs = f"{j.egs:.1f} EG/s" if j.egs else ""
        target = f"/{j.target}" if j.target else ""
        print(f"  {j.name:24} {j.state:11} {j.iteration}{target} {egs}")
        if j.error:
            print(f"      {j.error.splitlines()[0]}")
        if disk[j.name] and not (j.error or "").startswith("disk full"):
            print(f"      {disk[j.name]}")
    for p in problems:
        print(f"  problem: {p.message.splitlines()[0]}"
              + (f" (moved to {p.moved_to})" if p.moved_to else ""))
    return 0


def _disk_shortage(ws: Workspace) -> str | None:
    """"disk full on ..." when the workspace's disk lacks the room the service needs to write
    its state (the jobs' own needs are in their states)."""
    from swapd.daemon.disk import MARGIN, shortage

    found = shortage(ws.internal, MARGIN, "the service's state and saves",
                     "training waits until there is room again")
    return None if found is None else str(found)


def _disk_full(ws: Workspace, store: Any, job: Any) -> str | None:
    """"disk full on ...: ... for a save; the checkpoint at iteration X is kept" for a job
    that would train but lacks the room to save, read from the disk itself (it holds even
    when the full disk kept the service from recording it)."""
    from swapd.daemon.disk import save_shortage

    if job.kind != "train" or job.state not in ("training", "queued", "waiting"):
        return None
    checkpoint = store.latest_artifact(job.name, "checkpoint")
    found = save_shortage(ws.model_dir(job.name), (job.info or {}).get("parameters"),
                          checkpoint.iteration if checkpoint else None)
    return None if found is None else str(found)


def cmd_control(args: argparse.Namespace) -> int:
    import sqlite3

    from swapd.state import StateStore

    ws = Workspace.open(args.workspace, create=False)
    try:
        store = StateStore(ws.state_db)
        row = store.job(args.job)
        if row is None:
            print(f"no job named {args.job!r} in {ws.root}", file=sys.stderr)
            return 1
        if args.command == "resume" and row.state in ("stopped", "error", "interrupted"):
            store.set_job_state(args.job, "queued")  # no worker to tell: the service starts one
        else:
            store.request_control(args.job, args.command)
    except (OSError, sqlite3.Error) as exc:
        print(f"swapd {args.command}: not recorded: {_disk_shortage(ws) or exc}",
              file=sys.stderr)
        return 1
    print(f"{args.command} requested for {args.job} (was {row.state})")
    return 0


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
    ws, store = read_state(args.workspace, "swapd: no swapd state in {root}")
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


def add_status(sub: Subparsers) -> None:
    """swapd status"""
    p = sub.add_parser("status", help="jobs, problems and progress of a workspace")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)


def add_controls(sub: Subparsers) -> None:
    """swapd pause | resume | save | stop"""
    for action in ("pause", "resume", "save", "stop"):
        p = sub.add_parser(action, help=f"{action} a training job")
        p.add_argument("job")
        p.add_argument("--workspace", type=Path)
        p.set_defaults(func=cmd_control)


def add_losses(sub: Subparsers) -> None:
    """swapd losses"""
    p = sub.add_parser("losses", help="a job's loss history as CSV")
    p.add_argument("job")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--output", help="write here instead of standard output")
    p.set_defaults(func=cmd_losses)

"""A job's history as CSV files: its losses (faceswap's Graph data) and its sessions
(faceswap's Analysis tab), as `swapd losses` and the dashboard's downloads give them."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import IO

from swapd.state.history import LossRow
from swapd.state.records import Session

SESSION_COLUMNS = ("start", "end", "start_iteration", "end_iteration", "steps",
                   "batch_size", "elapsed_seconds", "egs")


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def write_losses_csv(rows: Callable[[], Iterable[LossRow]], out: IO[str]) -> None:
    """iteration, time, loss_a, loss_b, then a column per loss component and side
    (``a_ssim``, ``a_mae``, ``a_eyes``, ...; empty where a row has none), then
    ``learning_rate`` and ``egs`` when any row records them. ``rows`` is called twice: once to
    learn the columns, once to write."""
    names: dict[str, None] = {}  # ordered set
    extras: dict[str, None] = {}
    for row in rows():
        for side, parts in (row.components or {}).items():
            for name in parts:
                names.setdefault(f"{side}_{name}")
        for extra in ("learning_rate", "egs"):
            if getattr(row, extra) is not None:
                extras.setdefault(extra)
    writer = csv.writer(out)
    writer.writerow(["iteration", "time", "loss_a", "loss_b", *names, *extras])
    for row in rows():
        flat = {f"{side}_{name}": value for side, parts in (row.components or {}).items()
                for name, value in parts.items()}
        writer.writerow([row.iteration, _stamp(row.time), f"{row.loss_a:.6g}",
                         f"{row.loss_b:.6g}",
                         *(f"{flat[n]:.6g}" if n in flat else "" for n in names),
                         *("" if getattr(row, e) is None else f"{getattr(row, e):.6g}"
                           for e in extras)])


def write_sessions_csv(sessions: Iterable[Session], out: IO[str]) -> None:
    writer = csv.writer(out)
    writer.writerow(SESSION_COLUMNS)
    for s in sessions:
        writer.writerow([_stamp(s.start), _stamp(s.end), s.start_iteration, s.end_iteration,
                         s.steps, s.batch_size, round(s.elapsed, 1),
                         "" if s.egs is None else f"{s.egs:.2f}"])

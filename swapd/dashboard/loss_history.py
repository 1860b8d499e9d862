"""A job's loss history as arrays, kept in memory between refreshes, smoothed as faceswap's
graph smooths it and thinned for drawing.

A job trained for 100,000 iterations has 100,000 rows; the page refreshes every few seconds.
The first read takes them all; later reads take only the rows after the newest one held, and
start over when the history was cut back (a rollback or a restore truncates it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import lfilter

from swapd.state import LossRow, StateStore

MAX_POINTS = 2500  # drawn per trace; the smoothing runs over every row first


@dataclass
class LossSeries:
    """One job's history: a column per value, NaN where a row lacks it."""

    iteration: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    time: np.ndarray = field(default_factory=lambda: np.empty(0))
    learning_rate: np.ndarray = field(default_factory=lambda: np.empty(0))
    egs: np.ndarray = field(default_factory=lambda: np.empty(0))
    # "a" and "b" (each side's total), "a.<part>" / "b.<part>" (its components: the face loss
    # functions, eyes, mouth, mask, true_face) and "discriminator" (the true face's own)
    values: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.iteration)

    def extend(self, rows: list[LossRow]) -> None:
        if not rows:
            return
        n, old = len(rows), len(self)
        self.iteration = np.concatenate([self.iteration, [r.iteration for r in rows]])
        self.time = np.concatenate([self.time, [r.time for r in rows]])
        self.learning_rate = np.concatenate(
            [self.learning_rate, [np.nan if r.learning_rate is None else r.learning_rate
                                  for r in rows]])
        self.egs = np.concatenate([self.egs, [np.nan if r.egs is None else r.egs for r in rows]])
        columns: dict[str, np.ndarray] = {}
        for i, row in enumerate(rows):
            for name, value in _flatten(row).items():
                column = columns.get(name)
                if column is None:
                    column = columns[name] = np.full(n, np.nan)
                column[i] = value
        for name in set(self.values) | set(columns):
            before = self.values.get(name, np.full(old, np.nan))
            self.values[name] = np.concatenate([before, columns.get(name, np.full(n, np.nan))])

    @property
    def components(self) -> list[str]:
        """The component names that have values, sides first, in a stable order."""
        return sorted((n for n in self.values if n not in ("a", "b")),
                      key=lambda n: (n == "discriminator", n))


def _flatten(row: LossRow) -> dict[str, float]:
    flat = {"a": row.loss_a, "b": row.loss_b}
    for side, parts in (row.components or {}).items():
        for name, value in parts.items():
            if side == "true_face" and name == "discriminator":
                flat["discriminator"] = value
            else:
                flat[f"{side}.{name}"] = value
    return flat


class LossCache:
    """Each job's LossSeries, brought up to date at every read."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], LossSeries] = {}  # by database and job
        self._lock = threading.Lock()

    def get(self, store: StateStore, job: str) -> LossSeries:
        key = (str(store.path), job)
        with self._lock:
            series = self._series.get(key) or LossSeries()
            # The newest row held must still be there as it was (not cut back and retrained).
            if len(series) and store.loss_time(job, int(series.iteration[-1])) != series.time[-1]:
                series = LossSeries()
            series.extend(store.loss_rows(job, since=int(series.iteration[-1]) if len(series)
                                          else -1))
            if store.loss_count(job) != len(series):  # rows went missing below the newest
                series = LossSeries()
                series.extend(store.loss_rows(job))
            self._series[key] = series
            return series


def smooth(values: np.ndarray, amount: float) -> np.ndarray:
    """faceswap's exponential moving average: out[0] = x[0], out[i] = (1 - amount) * x[i] +
    amount * out[i-1]; ``amount`` 0 leaves the values as they are. NaN (a row without this
    value) is carried over from the value before it."""
    if amount <= 0 or len(values) == 0:
        return values
    amount = min(amount, 0.999)
    filled = _carry_forward(values)
    start = filled[0] if np.isfinite(filled[0]) else 0.0
    out, _ = lfilter([1 - amount], [1, -amount], np.nan_to_num(filled),
                     zi=[amount * start])
    out[~np.isfinite(values)] = np.nan
    return out


def _carry_forward(values: np.ndarray) -> np.ndarray:
    valid = np.isfinite(values)
    if valid.all() or not valid.any():
        return values
    index = np.where(valid, np.arange(len(values)), 0)
    np.maximum.accumulate(index, out=index)
    filled = values[index]
    first = int(np.argmax(valid))
    filled[:first] = values[first]
    return filled


def thin(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """Indices of about ``max_points`` rows spread evenly over ``n``, the last always in."""
    if n <= max_points:
        return np.arange(n)
    step = -(-n // max_points)
    picked = np.arange(0, n, step)
    return picked if picked[-1] == n - 1 else np.append(picked, n - 1)


def examples_per_second(series: LossSeries, batch_size: int) -> np.ndarray:
    """EG/s per row: the recorded value, else worked out from the time between rows (both
    sides: ``2 * batch_size`` faces a step)."""
    if len(series) == 0:
        return series.egs
    derived = np.full(len(series), np.nan)
    if len(series) > 1:
        steps = np.diff(series.iteration).astype(float)
        seconds = np.diff(series.time)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = 2 * batch_size * steps / seconds
        # a gap of more than a minute is a pause or a new session, not a slow step
        derived[1:] = np.where((seconds > 0) & (seconds < 60), rate, np.nan)
    return np.where(np.isfinite(series.egs), series.egs, derived)

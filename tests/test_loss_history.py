"""The dashboard's loss history: faceswap's smoothing, and a cached copy that follows the state
database through appends, rollbacks and restores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from swapd.dashboard.loss_history import LossCache, examples_per_second, smooth, thin
from swapd.state import StateStore


def test_smoothing_is_faceswaps_moving_average() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(0.1, 1.0, 5000)
    for amount in (0.5, 0.9, 0.999):
        expected, running = [], values[0]
        for value in values:  # faceswap: alpha = 1 - amount, starting at the first value
            running = (1 - amount) * value + amount * running
            expected.append(running)
        assert np.allclose(smooth(values, amount), expected, rtol=1e-9)
    assert smooth(values, 0) is values
    gaps = values.copy()
    gaps[10:20] = np.nan  # a row without the value: carried over, and not drawn
    smoothed = smooth(gaps, 0.9)
    assert np.isnan(smoothed[10:20]).all() and np.isfinite(smoothed[20:]).all()


def test_thinning_keeps_the_newest_row() -> None:
    picked = thin(100_001, 2500)
    assert picked[0] == 0 and picked[-1] == 100_000 and len(picked) <= 2501
    assert list(thin(10, 2500)) == list(range(10))


def test_the_cached_history_follows_appends_rollbacks_and_restores(tmp_path: Path) -> None:
    writer = StateStore(tmp_path / "state.db")
    reader = StateStore(tmp_path / "state.db", readonly=True)
    cache = LossCache()

    def rows(first: int, last: int, t0: float, level: float) -> list[tuple[object, ...]]:
        return [(i, t0 + i, level, level * 2, {"a": {"ssim": level}}, 1e-4, 32.0)
                for i in range(first, last + 1)]

    writer.add_losses("j", rows(1, 100, 1000.0, 0.5))
    series = cache.get(reader, "j")
    assert list(series.iteration) == list(range(1, 101))
    writer.add_losses("j", rows(101, 110, 1000.0, 0.4))
    series = cache.get(reader, "j")
    assert len(series) == 110 and series.values["a"][-1] == 0.4
    assert series.values["a.ssim"][0] == 0.5 and series.learning_rate[0] == 1e-4
    # a rollback to 50, then training again past where the copy ended: rows rewritten
    writer.truncate_losses("j", 50)
    writer.add_losses("j", rows(51, 110, 5000.0, 0.3))
    series = cache.get(reader, "j")
    assert len(series) == 110 and series.values["a"][60] == 0.3 and series.values["a"][10] == 0.5
    writer.truncate_losses("j", 20)  # a restore: cut back, nothing after yet
    assert len(cache.get(reader, "j")) == 20
    # another database's job of the same name is another history
    other = StateStore(tmp_path / "other.db")
    other.add_losses("j", rows(1, 5, 1000.0, 0.9))
    assert len(cache.get(other, "j")) == 5 and len(cache.get(reader, "j")) == 20
    egs = examples_per_second(cache.get(reader, "j"), batch_size=16)
    assert egs == pytest.approx(np.full(20, 32.0))  # as recorded, not worked out
    for store in (writer, reader, other):
        store.close()

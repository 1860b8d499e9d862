"""The batch loader in the background: its threads at the lowest priority while training on
the CPU, handing over to threads at the normal priority when they cannot keep up, with the
batches in the seed's order throughout (real threads, real nice values, real faces)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from swapd.threads import BACKGROUND_NICE, run_in_background
from swapd.trainer.augment import AugmentSettings
from swapd.trainer.batches import BatchLoader
from swapd.trainer.data import FaceSet
from swapd.trainer.loop import Trainer
from swapd.trainer.options import TrainerOptions

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="a thread's own nice value is Linux's")


def _nice(thread: threading.Thread) -> int:
    assert thread.native_id is not None
    return os.getpriority(os.PRIO_PROCESS, thread.native_id)


@linux_only
def test_run_in_background_lowers_only_the_calling_thread() -> None:
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: list[int] = []

    def lowered() -> None:
        assert run_in_background()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    thread = threading.Thread(target=lowered)
    thread.start()
    thread.join()
    assert seen == [BACKGROUND_NICE]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
    assert os.getpriority(os.PRIO_PROCESS, 0) == mine  # the process's main thread


@linux_only
def test_a_background_loader_that_keeps_up_stays_in_the_background(
        faces: tuple[Path, Path]) -> None:
    set_a, set_b = FaceSet(faces[0], 32), FaceSet(faces[1], 32)
    loader = BatchLoader(set_a, set_b, 4, AugmentSettings(), seed=[1, 0], background=True,
                         starved_after=30.0)
    plain = BatchLoader(set_a, set_b, 4, AugmentSettings(), seed=[1, 0])
    try:
        for _ in range(5):
            assert np.array_equal(loader.get().input_a, plain.get().input_a)
        assert _nice(loader._threads[0]) == BACKGROUND_NICE
        assert _nice(plain._threads[0]) == os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        loader.close()
        plain.close()


@linux_only
@pytest.mark.parametrize("workers", [1, 2])
def test_a_starved_background_loader_hands_over_and_keeps_the_seeds_order(
        faces: tuple[Path, Path], workers: int) -> None:
    """Batches taken as fast as they come: get() soon finds none ready, the threads hand over
    to ones at the normal priority, and the batches are the ones a plain loader of the same
    seed gives, in its order."""
    set_a, set_b = FaceSet(faces[0], 32), FaceSet(faces[1], 32)
    loader = BatchLoader(set_a, set_b, 4, AugmentSettings(), seed=[3, 0], workers=workers,
                         background=True)
    plain = BatchLoader(set_a, set_b, 4, AugmentSettings(), seed=[3, 0], workers=workers)
    first = loader._threads[0]
    try:
        for _ in range(16):
            got, expected = loader.get(), plain.get()
            assert np.array_equal(got.input_a, expected.input_a)
            assert np.array_equal(got.mask_b, expected.mask_b)
        assert loader._threads[0] is not first  # handed over
        assert not first.is_alive()
        normal = os.getpriority(os.PRIO_PROCESS, 0)
        assert all(_nice(t) == normal for t in loader._threads)
    finally:
        loader.close()
        plain.close()
    assert not any(t.is_alive() for t in loader._threads)


@linux_only
def test_training_on_the_cpu_builds_batches_in_the_background(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    options = TrainerOptions(device="cpu")
    with Trainer("lightweight", {"input_size": 32, "width": 0.125, "dense_dim": 64}, options,
                 faces[0], faces[1], tmp_path / "model", batch_size=4) as trainer:
        trainer.step()  # one batch taken: the first is never a sign of starvation
        assert trainer.loader._background
        assert _nice(trainer.loader._threads[0]) == BACKGROUND_NICE


@linux_only
def test_a_background_loader_hands_over_when_the_machine_is_busy(
        faces: tuple[Path, Path]) -> None:
    """A load average over ``busy_above`` (here any: -1) counts as other programs keeping
    the cores busy: the threads hand over at the next batch, in the seed's order."""
    set_a, set_b = FaceSet(faces[0], 32), FaceSet(faces[1], 32)
    loader = BatchLoader(set_a, set_b, 4, AugmentSettings(), seed=[5, 0], background=True,
                         starved_after=30.0, busy_above=-1.0)
    plain = BatchLoader(set_a, set_b, 4, AugmentSettings(), seed=[5, 0])
    first = loader._threads[0]
    try:
        for _ in range(6):
            assert np.array_equal(loader.get().target_b, plain.get().target_b)
        assert loader._threads[0] is not first and not first.is_alive()
        assert _nice(loader._threads[0]) == os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        loader.close()
        plain.close()


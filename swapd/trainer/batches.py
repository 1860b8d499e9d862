"""Batch loading: augmented batches of both sides, built in background threads.

:class:`BatchLoader` draws faces from two :class:`~swapd.trainer.data.FaceSet` (by yaw band
with ``uniform_yaw``), augments them (:mod:`swapd.trainer.augment`, warping to the other side's
landmarks with ``warp_to_landmarks``) and keeps a few batches ready for the training step.
With a ``device`` the threads only gather the uint8 faces and draw the augmentation's random
choices, and :meth:`BatchLoader.get` augments them there (:mod:`swapd.trainer.augment_device`).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from swapd import threads
from swapd.trainer.augment import Augmenter, AugmentSettings
from swapd.trainer.augment_device import DeviceAugmenter, RawBatch, RawSide, draw_augment
from swapd.trainer.data import FaceSet, FaceSetError, StaleSnapshot, to_channels_last
from swapd.trainer.warp_landmarks import ClosestMatches, candidate_landmarks

Pixels = np.ndarray | torch.Tensor  # numpy from the loader's threads, tensors from a device


@dataclass
class Batch:
    """One training batch per side: warped inputs, their targets and the targets' masks
    (face, eyes, mouth), all float32 NCHW in [0, 1] (laid out channels last: the model's
    layout, as the augmentation leaves them); and per face whether its mask was drawn
    from landmarks (float32 (N,), 1 or 0: an all-face mask must not teach a learned mask).
    Numpy arrays, or tensors on the training device when it augments."""

    input_a: Pixels
    target_a: Pixels
    mask_a: Pixels
    input_b: Pixels
    target_b: Pixels
    mask_b: Pixels
    mask_known_a: Pixels
    mask_known_b: Pixels


class LoaderClosedError(RuntimeError):
    """``get()`` on a closed :class:`BatchLoader`."""


class BatchLoader:
    """Builds augmented batches for both sides in background threads.

    A bounded queue keeps a few batches ready; an exception in a thread is re-raised by
    :meth:`get`. ``close()`` stops the threads and waits for them. ``workers`` threads build
    batches side by side (OpenCV and numpy release the GIL for the heavy parts), each into
    its own queue, read in turn, so the batch order follows from ``seed`` however many.

    ``background`` (training on the CPU): the threads run at the lowest priority, in the
    moments torch's threads leave a core idle (:func:`swapd.threads.run_in_background`).
    When :meth:`get` then finds no batch ready (past the first; or none within
    ``starved_after`` seconds: the prefetched batches are used up), or the machine's load
    average is over ``busy_above`` (other programs keep the cores busy: a background thread
    that the scheduler leaves waiting while it holds the GIL would hold up the training
    step), each thread hands over to a new one at the normal priority once it has queued
    its batch, with the same random streams: the batches come in the same order.
    """

    def __init__(
        self,
        set_a: FaceSet,
        set_b: FaceSet,
        batch_size: int,
        augment: AugmentSettings,
        seed: int | list[int] = 0,
        prefetch: int = 3,
        workers: int = 1,
        shard: tuple[int, int] = (0, 1),
        device: torch.device | None = None,
        background: bool = False,
        starved_after: float = 0.0,
        busy_above: float | None = None,
    ) -> None:
        """``shard`` (rank, world size): under DistributedDataParallel each process draws the
        same global batch of ``batch_size`` faces per side and keeps its own share, so the
        processes together train on exactly the faces one process would (with one worker).
        ``device``: augment there, in :meth:`get` (its caller's thread), not in the threads;
        the same random choices for the same seed (ValueError for settings only the threads
        can apply). ``background``, ``starved_after``, ``busy_above``: see the class."""
        if set_a.size != set_b.size:
            raise ValueError("both face sets must have the same crop size")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        rank, world = shard
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} does not split over {world} processes")
        self.set_a, self.set_b = set_a, set_b
        self.batch_size = batch_size
        self._share = slice(rank * batch_size // world, (rank + 1) * batch_size // world)
        self._augmenter = Augmenter(set_a.size, augment)
        self.device_augmenter = (None if device is None
                                 else DeviceAugmenter(set_a.size, augment, device))
        # Warp to landmarks: each side's faces matched with the other side's closest ones.
        self._matches = (ClosestMatches() if augment.warp and augment.warp_to_landmarks
                         else None)
        seeds = seed if isinstance(seed, list) else [seed]
        # Per worker: the draw of faces (the same in every process of a shard group) and the
        # augmentation (each process its own).
        rngs = [(np.random.default_rng(seeds if workers == 1 else [*seeds, k]),
                 np.random.default_rng([*seeds, k, 7919, rank])) for k in range(workers)]
        # One queue per worker, read in turn: worker k builds steps k, k + workers, ..., so
        # the order of batches is fixed by the seed however the threads race (and every
        # process of a DDP group takes its share of the same global draw at each step).
        depth = max(2, -(-prefetch // workers))
        self._queues: list[queue.Queue[Batch | RawBatch | BaseException]] = [
            queue.Queue(maxsize=depth) for _ in range(workers)]
        self._rngs = rngs
        self._next = 0
        self._stop = threading.Event()
        self._background = background
        self._starved_after = starved_after
        self._busy_above = busy_above
        self._served = 0  # batches handed out by get()
        self._handing_over = threading.Event()  # background threads: finish, then end
        self._threads = [self._start(k) for k in range(workers)]

    def _start(self, k: int, after: threading.Thread | None = None) -> threading.Thread:
        thread = threading.Thread(target=self._run, args=(k, self._background, after),
                                  daemon=True, name=f"swapd-batch-loader-{k}")
        thread.start()
        return thread

    def _make(self, rngs: tuple[np.random.Generator, np.random.Generator]
              ) -> Batch | RawBatch:
        """Draw and augment one batch of each side. Both sets' arrays are read once, so faces,
        masks, landmarks (and the match table) agree even while a refresh replaces them. With
        warp to landmarks each face comes with the landmarks of its closest matches on the
        other side (the augmenter draws one)."""
        draw, augment = rngs
        snapshots = (self.set_a.arrays, self.set_b.arrays)
        parts: dict[str, Pixels] = {}
        raw: dict[int, RawSide] = {}
        for side, face_set in enumerate((self.set_a, self.set_b)):
            own, other = snapshots[side], snapshots[1 - side]
            idx = face_set.draw(draw, self.batch_size, own)[self._share]
            landmarks = None
            if self._matches is not None:
                table = self._matches.table(side, own.landmarks, other.landmarks)[idx]
                landmarks = (own.landmarks[idx], candidate_landmarks(table, other.landmarks))
            faces, face_masks = face_set.take(idx, own)
            known = own.mask_known[idx].astype(np.float32)
            if self.device_augmenter is not None:  # the device augments: only the draw here
                choices = draw_augment(self._augmenter, len(idx), faces.shape[-1], augment)
                raw[side] = RawSide(faces, face_masks, known, choices)
                continue
            inputs, targets, masks = self._augmenter(faces, augment, face_masks,
                                                     landmarks=landmarks)
            name = "ab"[side]
            parts |= {f"input_{name}": to_channels_last(inputs),
                      f"target_{name}": to_channels_last(targets),
                      f"mask_{name}": to_channels_last(masks),
                      f"mask_known_{name}": known}
        return Batch(**parts) if not raw else RawBatch(raw[0], raw[1])

    def _put(self, item: Batch | RawBatch | BaseException,
             out: queue.Queue[Batch | RawBatch | BaseException]) -> bool:
        while not self._stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, k: int, background: bool, after: threading.Thread | None) -> None:
        """Worker ``k``: builds batches into its queue until stopped. ``after``: the thread
        it takes over from, which must end first (the random streams are one thread's)."""
        if after is not None:
            after.join()
        rngs, out = self._rngs[k], self._queues[k]
        if background:
            threads.run_in_background()
        while not self._stop.is_set():
            if background and self._handing_over.is_set():
                return  # between batches: a thread at the normal priority goes on
            try:
                item: Batch | RawBatch | BaseException = self._make(rngs)
            except FaceSetError:
                # A folder emptied mid-training: wait for faces to come back (the trainer
                # reports the empty set itself) rather than ending the thread.
                self._stop.wait(0.5)
                continue
            except StaleSnapshot:  # this batch's faces were let go meanwhile: draw again
                continue
            except BaseException as exc:  # handed to the consumer, then the thread ends
                self._put(exc, out)
                return
            if not self._put(item, out):
                return

    def _catch_up(self) -> None:
        """The background threads could not keep up: each ends once its batch is queued,
        and a thread at the caller's priority, started now, goes on from there."""
        self._background = False
        self._handing_over.set()
        self._threads = [self._start(k, after=old) for k, old in enumerate(self._threads)]

    def _machine_busy(self) -> bool:
        return self._busy_above is not None and threads.load_average() > self._busy_above

    def _ready(self, source: queue.Queue[Batch | RawBatch | BaseException]) -> bool:
        """Whether ``source`` holds a batch within ``starved_after`` seconds (none taken)."""
        with source.not_empty:  # the queue's lock: its deque is read directly under it
            return source.not_empty.wait_for(lambda: len(source.queue) > 0,
                                             timeout=self._starved_after)

    def get(self, timeout: float | None = 60.0) -> Batch:
        """The next batch (blocks until one is ready)."""
        start = time.monotonic()
        while True:
            if self._stop.is_set():
                raise LoaderClosedError("batch loader is closed")
            source = self._queues[self._next]
            if self._background and self._served and (not self._ready(source)
                                                       or self._machine_busy()):
                self._catch_up()
            wait = 0.1
            if timeout is not None:
                wait = max(0.0, min(wait, start + timeout - time.monotonic()))
            try:
                item = source.get(timeout=wait)
            except queue.Empty:
                if timeout is not None and time.monotonic() - start >= timeout:
                    raise TimeoutError("no batch ready in time") from None
                if not self._threads[self._next].is_alive() and source.empty():
                    raise RuntimeError("batch loader thread ended unexpectedly") from None
                continue
            self._served += 1
            self._next = (self._next + 1) % len(self._queues)
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, RawBatch):
                return self._on_device(item)
            return item

    def _on_device(self, raw: RawBatch) -> Batch:
        assert self.device_augmenter is not None
        parts: dict[str, Pixels] = {}
        for name, side in (("a", raw.a), ("b", raw.b)):
            inputs, targets, masks = self.device_augmenter.side(side)
            parts |= {f"input_{name}": inputs, f"target_{name}": targets,
                      f"mask_{name}": masks,
                      f"mask_known_{name}": torch.from_numpy(side.mask_known)}
        return Batch(**parts)

    def close(self) -> None:
        """Stop the threads and drop queued batches; safe to call twice."""
        self._stop.set()
        for source in self._queues:
            while True:
                try:
                    source.get_nowait()
                except queue.Empty:
                    break
        for thread in self._threads:
            thread.join(timeout=10)

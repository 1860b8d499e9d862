"""The face cache's memory cap: decoded faces past it are kept compressed, behind an LRU.

A face set normally holds every face decoded (the model crop and its three masks, uint8):
``side² x (channels + 3)`` bytes a face, 384 KiB at 256 px, so 50,000 faces need 19 GiB. With
a cap (the ``face_cache_mib`` training option) a :class:`BoundedFaces` keeps every face as its
crop PNG-compressed in RAM (lossless: the same pixels, so the same batches for the same seed)
and at most ``capacity`` decoded faces in a least-recently-used cache; a batch that draws a face
outside it decodes the small PNG again (about 0.2 ms at 64 px, 1-2 ms at 256 px, in the batch
loader's threads), which is far cheaper than cutting it from its file again (decode of the
full image, re-alignment, landmark masks) and needs no file to be still there.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

MIB = 1 << 20
# The fast end of PNG's levels: faces compress nearly as well at 1 as at 9, 3-5x faster.
PNG_LEVEL = 1
AUTO_SHARE = 4  # face_cache_mib = 0: both sets' decoded faces may take a quarter of the RAM


def face_bytes(size: int, channels: int, mask_channels: int) -> int:
    """RAM of one decoded face: its crop and its masks."""
    return size * size * (channels + mask_channels)


def machine_memory(cgroup_root: Path = Path("/sys/fs/cgroup"),
                   own_cgroups: Path = Path("/proc/self/cgroup")) -> int | None:
    """Memory this process may use, in bytes: the physical memory, or less where a control
    group caps it (systemd's ``MemoryMax=``, a container's limit); None where the platform
    says neither."""
    try:
        physical: int | None = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        physical = None
    limits = [x for x in (physical, cgroup_memory_limit(cgroup_root, own_cgroups)) if x]
    return min(limits) if limits else None


def cgroup_memory_limit(root: Path, own_cgroups: Path) -> int | None:
    """The tightest memory limit of this process's control group and the groups above it
    (cgroup v2 ``memory.max``, v1 ``memory.limit_in_bytes``), or None: none, or not Linux."""
    try:
        lines = own_cgroups.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:  # "0::/system.slice/swapd.service" (v2), "7:memory:/user.slice" (v1)
        fields = line.split(":", 2)
        if len(fields) != 3 or ".." in fields[2].split("/"):
            continue  # not a cgroup line (a platform of its own), or a path out of the tree
        _, controllers, path = fields
        if controllers == "":
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        group = base / path.lstrip("/")
        for folder in (group, *group.parents):  # a limit above the group binds it too
            try:
                text = (folder / name).read_text().strip()
            except OSError:
                text = ""
            # v2 writes "max" for none; v1 a huge page-rounded number
            if text.isdigit() and int(text) < 1 << 60:
                limits.append(int(text))
            if folder == base:
                break
    return min(limits) if limits else None


def capacity_for(limit_mib: int, size: int, channels: int, mask_channels: int,
                 sets: int = 2, least: int = 64) -> int | None:
    """Decoded faces one of ``sets`` face sets may hold under ``limit_mib`` (0: auto, a quarter
    of the memory the process may use, :func:`machine_memory`); None: no cap. Never fewer
    than ``least``: a batch's faces must fit, or every batch would decode each face again."""
    if limit_mib == 0:
        memory = machine_memory()
        if memory is None:
            return None
        budget = memory // AUTO_SHARE
    else:
        budget = limit_mib * MIB
    return max(least, budget // sets // face_bytes(size, channels, mask_channels))


def release_freed_memory() -> None:
    """Hand memory freed on the C heap back to the system (glibc's ``malloc_trim``; nothing
    elsewhere). Loading a set decodes each face into small buffers that are freed once the
    faces are stacked; glibc keeps such freed memory in the process, and measured at 1,000
    faces of 64 px the set then held 58 KiB of resident memory a face against 35 KiB after
    the trim (its pixels are 24 KiB)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's malloc_trim, looked up once (None without glibc)."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    return None


def _encode(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL])
    if not ok:  # pragma: no cover - a uint8 image of 1 or 3 channels always encodes
        raise ValueError("PNG encode failed")
    return data.tobytes()


def _decode(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    flags = cv2.IMREAD_UNCHANGED
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags).reshape(shape)


class BoundedFaces:
    """Faces and masks by key, all compressed, at most ``capacity`` of them decoded (LRU).

    Safe to use from the batch loader's threads: decoding happens outside the lock, so two
    threads decode different faces at once.
    """

    def __init__(self, capacity: int, face_shape: tuple[int, ...],
                 mask_shape: tuple[int, ...]) -> None:
        self.capacity = capacity
        self.face_shape, self.mask_shape = face_shape, mask_shape
        self._packed: dict[Hashable, tuple[bytes, bytes]] = {}
        self._decoded: OrderedDict[Hashable, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._packed)

    @property
    def decoded(self) -> int:
        """Faces held decoded now (at most ``capacity``)."""
        return len(self._decoded)

    def packed_bytes(self) -> int:
        """RAM the compressed faces take."""
        with self._lock:
            return sum(len(f) + len(m) for f, m in self._packed.values())

    def put(self, key: Hashable, face: np.ndarray, mask: np.ndarray) -> None:
        """Hold (or replace) ``key``'s face and mask; they count as just used."""
        packed = (_encode(face), _encode(mask))
        with self._lock:
            self._packed[key] = packed
            self._remember(key, (face, mask))

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._packed.pop(key, None)
            self._decoded.pop(key, None)

    def _remember(self, key: Hashable, pair: tuple[np.ndarray, np.ndarray]) -> None:
        self._decoded[key] = pair
        self._decoded.move_to_end(key)
        while len(self._decoded) > self.capacity:
            self._decoded.popitem(last=False)

    def get(self, key: Hashable) -> tuple[np.ndarray, np.ndarray]:
        """``key``'s face and mask (KeyError if never put or discarded since)."""
        with self._lock:
            pair = self._decoded.get(key)
            if pair is not None:
                self._decoded.move_to_end(key)
                self.hits += 1
                return pair
            face_png, mask_png = self._packed[key]
            self.misses += 1
        pair = (_decode(face_png, self.face_shape), _decode(mask_png, self.mask_shape))
        with self._lock:
            if key in self._packed:  # not discarded meanwhile by a refresh
                self._remember(key, pair)
        return pair

    def take(self, keys: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
        """The faces and masks of ``keys``, stacked (a new array each call)."""
        faces = np.empty((len(keys), *self.face_shape), np.uint8)
        masks = np.empty((len(keys), *self.mask_shape), np.uint8)
        for i, key in enumerate(keys):
            faces[i], masks[i] = self.get(key)
        return faces, masks

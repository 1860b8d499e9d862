"""The face cache's memory cap: past it faces are kept compressed (in RAM, then on disk),
behind an LRU of decoded ones.

A face set normally holds every face decoded (the model crop and its three masks, uint8):
``side² x (channels + 3)`` bytes a face, 384 KiB at 256 px, so 50,000 faces need 19 GiB. With
a cap (the ``face_cache_mib`` training option) a :class:`BoundedFaces` keeps every face as its
crop PNG-compressed (lossless: the same pixels, so the same batches for the same seed), in RAM
up to a quarter of the set's share and in an unnamed file on disk past it, and at most
``capacity`` decoded faces (the other three quarters) in a least-recently-used cache; a batch
that draws a face outside it decodes the small PNG again (about 0.2 ms at 64 px, 1-2 ms at
256 px, in the batch loader's threads), which is far cheaper than cutting it from its file
again (decode of the full image, re-alignment, landmark masks) and needs no file to be still
there.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from swapd import cgroups, threads

log = logging.getLogger(__name__)

MIB = 1 << 20
# The fast end of PNG's levels: faces compress nearly as well at 1 as at 9, 3-5x faster.
PNG_LEVEL = 1
AUTO_SHARE = 4  # face_cache_mib = 0: both sets' faces may take a quarter of the RAM
# Of the cap, the decoded faces' part; the compressed faces in RAM get the rest (a
# photograph's crop compresses to a third to a half, a rendered one to a fifth: the rest holds
# about as many compressed faces again as are decoded), and those past it go to disk
DECODED_SHARE = 0.75
# The spill file is rewritten with its live faces only once the bytes of faces replaced or
# discarded outweigh them and this much: a refreshed folder cannot grow it without end
COMPACT_LEAST = 64 * MIB


def face_bytes(size: int, channels: int, mask_channels: int) -> int:
    """RAM of one decoded face: its crop and its masks."""
    return size * size * (channels + mask_channels)


def machine_memory(cgroup_root: Path = cgroups.ROOT,
                   own_cgroups: Path = cgroups.OWN_CGROUPS) -> int | None:
    """Memory this process may use, in bytes: the physical memory, or less where a control
    group caps it (systemd's ``MemoryMax=``, a container's limit); None where the platform
    says neither."""
    try:
        physical: int | None = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        physical = None
    limits = [x for x in (physical, cgroups.memory_limit(cgroup_root, own_cgroups)) if x]
    return min(limits) if limits else None


def capacity_for(limit_mib: int, size: int, channels: int, mask_channels: int,
                 sets: int = 2, least: int = 64) -> int | None:
    """Decoded faces one of ``sets`` face sets may hold under ``limit_mib`` (0: auto, a quarter
    of the memory the process may use, :func:`machine_memory`, shared among the training
    processes on the machine, :func:`swapd.threads.training_processes`), their
    :data:`DECODED_SHARE` of it; None: no cap. Never fewer than ``least``: a batch's faces
    must fit, or every batch would decode each face again."""
    if limit_mib == 0:
        memory = machine_memory()
        if memory is None:
            return None
        budget = memory // AUTO_SHARE // threads.training_processes()
    else:
        budget = limit_mib * MIB
    return max(least, int(budget * DECODED_SHARE) // sets // face_bytes(size, channels,
                                                                        mask_channels))


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


def _write_at(file: IO[bytes], offset: int, data: bytes) -> None:
    """Write all of ``data`` at ``offset`` of an unbuffered file (a full disk fails this
    write, never a later read of other faces)."""
    file.seek(offset)
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:  # never for a regular file; a broken one must not spin here
            raise OSError(errno.EIO, "the spill file took no bytes")
        view = view[written:]


def _decode(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    flags = cv2.IMREAD_UNCHANGED
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags).reshape(shape)


# A compressed face in RAM (its face's and mask's PNGs), or where it lies in the spill file
# (offset, face length, mask length)
_Packed = tuple[bytes, bytes] | tuple[int, int, int]


class BoundedFaces:
    """Faces and masks by key, all compressed, at most ``capacity`` of them decoded (LRU).

    The compressed faces take RAM too (a photograph's crop compresses to a third to a half of
    its pixels): past ``packed_limit`` bytes of them (default: the cap's share that
    :data:`DECODED_SHARE` leaves them beside ``capacity`` decoded faces) the rest go to an
    unnamed file in ``spill_dir`` (default: the system's temp folder), read back through the
    page cache when drawn. So a set's faces stay within its share of the cap, however many
    there are. A face replaced or discarded leaves its old bytes in that file; once those
    outweigh the live faces' (and ``compact_least`` bytes) the file is written again with the
    live faces only, so a folder refreshed again and again keeps it at most about twice
    their size.

    Safe to use from the batch loader's threads: decoding happens outside the lock, so two
    threads decode different faces at once.
    """

    def __init__(self, capacity: int, face_shape: tuple[int, ...],
                 mask_shape: tuple[int, ...], packed_limit: int | None = None,
                 spill_dir: Path | None = None, compact_least: int = COMPACT_LEAST) -> None:
        self.capacity = capacity
        self.compact_least = compact_least
        self.face_shape, self.mask_shape = face_shape, mask_shape
        decoded = capacity * (int(np.prod(face_shape)) + int(np.prod(mask_shape)))
        self.packed_limit = (int(decoded * (1 - DECODED_SHARE) / DECODED_SHARE)
                             if packed_limit is None else packed_limit)
        self.spill_dir = None if spill_dir is None else Path(spill_dir)
        self._packed: dict[Hashable, _Packed] = {}
        self._ram_bytes = 0  # the compressed faces held in RAM
        self._spill: IO[bytes] | None = None  # made at the first face past packed_limit
        self._spill_end = 0
        self._spill_garbage = 0  # bytes in the file of faces replaced or discarded since
        self._spill_failed = False
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
        """RAM the compressed faces take (at most ``packed_limit``, give or take a face)."""
        with self._lock:
            return self._ram_bytes

    def spilled_bytes(self) -> int:
        """The spill file's size (0: none made)."""
        with self._lock:
            return self._spill_end

    def spilled_garbage(self) -> int:
        """Bytes of the spill file that no face uses any more."""
        with self._lock:
            return self._spill_garbage

    def put(self, key: Hashable, face: np.ndarray, mask: np.ndarray) -> None:
        """Hold (or replace) ``key``'s face and mask; they count as just used. A view (a row
        of a set's stacked faces, when the set outgrows the cap while training) is copied:
        it would keep the whole old stack alive while counting as one face."""
        face, mask = (a if a.base is None else a.copy() for a in (face, mask))
        face_png, mask_png = _encode(face), _encode(mask)
        size = len(face_png) + len(mask_png)
        with self._lock:
            self._forget(key)
            if self._ram_bytes + size > self.packed_limit and self._spilled(face_png, mask_png):
                self._packed[key] = (self._spill_end - size, len(face_png), len(mask_png))
            else:
                self._packed[key] = (face_png, mask_png)
                self._ram_bytes += size
            self._remember(key, (face, mask))
            self._compact_if_wasteful()

    def _spilled(self, face_png: bytes, mask_png: bytes) -> bool:
        """Append a face to the spill file; False (the face then stays in RAM, said once)
        when the file cannot be made or written (a full disk)."""
        try:
            if self._spill is None:
                self._spill = self._spill_file()
            _write_at(self._spill, self._spill_end, face_png + mask_png)
        except OSError as exc:
            if not self._spill_failed:
                log.warning("the face cache cannot write compressed faces to disk (%s): they "
                            "stay in RAM, past its cap", exc)
            self._spill_failed = True
            return False
        self._spill_end += len(face_png) + len(mask_png)
        return True

    def _spill_file(self) -> IO[bytes]:
        """The spill file: unnamed where the platform allows (Linux; on Windows a
        ``.swapd-faces-*`` file while it is open), so a crash leaves nothing behind; it lives
        as long as this cache (closed by close(), or with it). In ``spill_dir`` (made if need
        be: a new model's folder may not exist yet), or the system's temp folder where that
        folder cannot be made."""
        folder = self.spill_dir
        if folder is not None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError:
                folder = None
        return tempfile.TemporaryFile(prefix=".swapd-faces-", dir=folder,  # noqa: SIM115
                                      buffering=0)

    def _forget(self, key: Hashable) -> None:
        old = self._packed.pop(key, None)
        if old is not None and isinstance(old[0], bytes):
            self._ram_bytes -= len(old[0]) + len(old[1])  # type: ignore[arg-type]
        elif old is not None:
            self._spill_garbage += old[1] + old[2]  # type: ignore[operator]
        self._decoded.pop(key, None)

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._forget(key)
            self._compact_if_wasteful()

    def _compact_if_wasteful(self) -> None:
        """Write the live spilled faces to a new file and drop the old one, where the old
        one's garbage outweighs them (under the lock: the loader threads wait for it, once
        in a long while). A disk that cannot take the new file keeps the old one."""
        garbage = self._spill_garbage
        if self._spill is None or garbage <= max(self.compact_least, self._spill_end - garbage):
            return
        spilled = [(k, p) for k, p in self._packed.items() if not isinstance(p[0], bytes)]
        fresh: IO[bytes] | None = None
        end, moved = 0, {}
        try:
            fresh = self._spill_file()
            for key, packed in spilled:
                face_png, mask_png = self._read(packed)
                _write_at(fresh, end, face_png + mask_png)
                moved[key] = (end, len(face_png), len(mask_png))
                end += len(face_png) + len(mask_png)
        except OSError as exc:
            log.warning("the face cache could not compact its spill file (%s): it keeps "
                        "%d MiB of replaced faces", exc, garbage // MIB)
            if fresh is not None:
                fresh.close()
            self.compact_least = max(self.compact_least, 2 * garbage)  # not at every put
            return
        self._spill.close()
        self._spill, self._spill_end, self._spill_garbage = fresh, end, 0
        self._packed.update(moved)
        log.info("the face cache compacted its spill file: %d MiB of replaced faces freed",
                 garbage // MIB)

    def close(self) -> None:
        """Close the spill file: the faces in it are gone with it (a later get() of one
        raises KeyError), those in RAM stay, and a later put() starts a new file."""
        with self._lock:
            if self._spill is not None:
                self._spill.close()
                self._spill, self._spill_end, self._spill_garbage = None, 0, 0
                for key in [k for k, p in self._packed.items() if not isinstance(p[0], bytes)]:
                    self._forget(key)

    def _remember(self, key: Hashable, pair: tuple[np.ndarray, np.ndarray]) -> None:
        self._decoded[key] = pair
        self._decoded.move_to_end(key)
        while len(self._decoded) > self.capacity:
            self._decoded.popitem(last=False)

    def _read(self, packed: _Packed) -> tuple[bytes, bytes]:
        """A face's PNGs, from RAM or the spill file (under the lock: one file position)."""
        if isinstance(packed[0], bytes):
            return packed  # type: ignore[return-value]
        offset, face_len, mask_len = packed  # type: ignore[misc]
        assert self._spill is not None
        self._spill.seek(offset)
        data = b""
        while len(data) < face_len + mask_len:
            more = self._spill.read(face_len + mask_len - len(data))
            if not more:
                raise OSError(f"the face cache's spill file ends at {offset + len(data)}, "
                              f"before the face it holds at {offset}")
            data += more
        return data[:face_len], data[face_len:]

    def get(self, key: Hashable) -> tuple[np.ndarray, np.ndarray]:
        """``key``'s face and mask (KeyError if never put or discarded since)."""
        with self._lock:
            pair = self._decoded.get(key)
            if pair is not None:
                self._decoded.move_to_end(key)
                self.hits += 1
                return pair
            packed = self._packed[key]
            face_png, mask_png = self._read(packed)
            self.misses += 1
        pair = (_decode(face_png, self.face_shape), _decode(mask_png, self.mask_shape))
        with self._lock:
            # not discarded or replaced meanwhile by a refresh (its new pixels would lose to
            # these old ones); a compaction that moved it only costs this one decode
            if self._packed.get(key) is packed:
                self._remember(key, pair)
        return pair

    def take(self, keys: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
        """The faces and masks of ``keys``, stacked (a new array each call)."""
        faces = np.empty((len(keys), *self.face_shape), np.uint8)
        masks = np.empty((len(keys), *self.mask_shape), np.uint8)
        for i, key in enumerate(keys):
            faces[i], masks[i] = self.get(key)
        return faces, masks

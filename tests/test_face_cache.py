"""The face cache's cap: past it, faces are kept compressed behind an LRU of decoded ones
(swapd.trainer.face_cache), with the same pixels, every face still drawn, the same batches."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from swapd.demo.face_sets import write_face_set
from swapd.demo.identity import DEMO_A, DEMO_B
from swapd.trainer.augment import AugmentSettings
from swapd.trainer.batches import BatchLoader
from swapd.trainer.data import FaceSet, StaleSnapshot
from swapd.trainer.face_cache import (
    BoundedFaces,
    capacity_for,
    face_bytes,
)
from swapd.trainer.options import TrainerOptions

SIZE = 32


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cache_sets")
    write_face_set(root / "a", DEMO_A, 30, seed=3, size=64)
    write_face_set(root / "b", DEMO_B, 20, seed=4, size=64)
    return {"a": root / "a", "b": root / "b"}


def digest(face: np.ndarray) -> str:
    return hashlib.blake2b(face.tobytes(), digest_size=8).hexdigest()


def test_bounded_faces_hold_at_most_their_capacity_decoded_and_give_the_same_pixels() -> None:
    rng = np.random.default_rng(0)
    faces = {k: rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8) for k in range(20)}
    masks = {k: (rng.random((SIZE, SIZE, 3)) > 0.5).astype(np.uint8) * 255 for k in range(20)}
    cache = BoundedFaces(5, (SIZE, SIZE, 3), (SIZE, SIZE, 3))
    for k in faces:
        cache.put(k, faces[k], masks[k])
        assert cache.decoded <= 5
    assert len(cache) == 20 and cache.decoded == 5
    for k in rng.integers(0, 20, 200):
        face, mask = cache.get(int(k))
        assert np.array_equal(face, faces[int(k)]) and np.array_equal(mask, masks[int(k)])
        assert cache.decoded <= 5
    assert cache.misses > 0 and cache.hits > 0  # both paths ran
    # Least recently used goes first: after touching 0..4, they are what is held decoded.
    for k in range(5):
        cache.get(k)
    hits = cache.hits
    for k in range(5):
        cache.get(k)
    assert cache.hits == hits + 5
    cache.discard(3)
    with pytest.raises(KeyError):
        cache.get(3)


def test_a_capped_set_gives_the_same_faces_and_draws_every_one(folders: dict[str, Path]
                                                               ) -> None:
    full = FaceSet(folders["a"], SIZE)
    capped = FaceSet(folders["a"], SIZE, capacity=8)
    assert full.bounded is None and capped.bounded is not None
    assert capped.bounded.decoded <= 8 and len(capped.bounded) == len(full) == 30
    assert capped.paths == full.paths
    rows = np.arange(len(full))
    for got, want in zip(capped.take(rows), full.take(rows), strict=True):
        assert np.array_equal(got, want)
    assert capped.bounded.decoded <= 8
    # Every face is still drawn, though at most 8 are decoded at a time.
    wanted = {digest(f) for f in full.faces}
    seen: set[str] = set()
    rng = np.random.default_rng(1)
    for _ in range(40):
        faces, _ = capped.sample(rng, 16)
        seen |= {digest(f) for f in faces}
        assert capped.bounded.decoded <= 8
    assert seen == wanted


def test_the_same_seed_gives_the_same_batches_with_or_without_a_cap(folders: dict[str, Path]
                                                                     ) -> None:
    def batches(capacity: int | None) -> list[np.ndarray]:
        sets = [FaceSet(folders[s], SIZE, capacity=capacity) for s in "ab"]
        loader = BatchLoader(sets[0], sets[1], 8, AugmentSettings(), seed=5)
        try:
            return [np.concatenate([b.input_a.ravel(), b.target_b.ravel(), b.mask_a.ravel()])
                    for b in (loader.get() for _ in range(4))]
        finally:
            loader.close()

    for got, want in zip(batches(6), batches(None), strict=True):
        assert np.array_equal(got, want)


def test_a_set_that_outgrows_its_cap_while_training_is_capped(folders: dict[str, Path],
                                                              tmp_path: Path) -> None:
    folder = tmp_path / "growing"
    shutil.copytree(folders["b"], folder)
    face_set = FaceSet(folder, SIZE, capacity=24)
    assert face_set.bounded is None and len(face_set) == 20
    uncapped = face_set.arrays  # what a loader thread may be building a batch from
    write_face_set(folder, DEMO_B, 10, seed=9, size=64)  # 30 files now: past the cap
    assert face_set.refresh() == (10, 0)
    assert face_set.bounded is not None and face_set.bounded.decoded <= 24
    assert len(face_set.take(np.arange(20), uncapped)[0]) == 20  # its faces are its own
    # the faces it had were rows of one stacked array: each held face owns its own memory,
    # or one of them would keep the whole old stack alive
    held = [a for pair in face_set.bounded._decoded.values() for a in pair]
    assert held and all(a.base is None for a in held)
    before = face_set.arrays
    gone = face_set.paths[0]
    gone.unlink()
    assert face_set.refresh() == (0, 1)
    assert len(face_set.faces) == 29
    # a loader thread still building a batch from the snapshot before reads all its faces
    assert np.array_equal(face_set.take(np.arange(30), before)[0][1:], face_set.faces)
    assert len(face_set.bounded) == 30  # the removed face goes at the next refresh
    assert face_set.refresh() == (0, 0)
    assert len(face_set.bounded) == 29
    with pytest.raises(KeyError):
        face_set.bounded.get(gone)
    with pytest.raises(StaleSnapshot):  # two refreshes on: that thread draws again
        face_set.take(np.arange(30), before)


def test_the_cap_from_the_job_option() -> None:
    per_face = face_bytes(64, 3, 3)
    assert per_face == 64 * 64 * 6
    # 100 MiB for both sets: half each, three quarters of it decoded, a quarter compressed.
    assert capacity_for(100, 64, 3, 3) == int(100 * 2**20 * 0.75) // 2 // per_face
    cache = BoundedFaces(capacity_for(100, 64, 3, 3), (64, 64, 3), (64, 64, 3))
    assert cache.packed_limit == pytest.approx(100 * 2**20 / 2 / 4, rel=0.01)
    assert capacity_for(1, 256, 3, 3) == 64  # never fewer than a few batches' faces
    assert capacity_for(0, 64, 3, 3) is not None  # auto: a share of this machine's memory
    assert TrainerOptions().face_cache_mib == 0
    assert TrainerOptions(face_cache_mib=2048).face_cache_mib == 2048


def _noise_faces(count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)  # noise: compresses no smaller than its pixels
    return [(rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8),
             rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8)) for _ in range(count)]


def test_compressed_faces_past_their_share_go_to_disk(tmp_path: Path) -> None:
    """The compressed faces' RAM is bounded too: past packed_limit they go to an unnamed file
    in the spill folder and come back the same pixels; replacing and discarding keep the
    count of RAM right."""
    faces = _noise_faces(40)
    cache = BoundedFaces(4, (SIZE, SIZE, 3), (SIZE, SIZE, 3), spill_dir=tmp_path)
    assert cache.packed_limit == 4 * face_bytes(SIZE, 3, 3) // 3  # a quarter of 4 faces' cap
    cache.packed_limit = 6 * face_bytes(SIZE, 3, 3)  # room for about five noise faces in RAM
    for key, (face, mask) in enumerate(faces):
        cache.put(key, face, mask)
    assert cache.packed_bytes() <= cache.packed_limit and cache.spilled_bytes() > 0
    assert cache.decoded == 4
    assert all(p.name.startswith(".swapd-faces-") for p in tmp_path.iterdir())
    if Path("/proc/self/fd").is_dir():  # Linux: unnamed (nothing left by a crash), yet there
        assert not list(tmp_path.iterdir())
        spill = cache._spill
        assert spill is not None
        assert os.readlink(f"/proc/self/fd/{spill.fileno()}").startswith(str(tmp_path))
    for key, (face, mask) in enumerate(faces):  # from RAM, the file and the LRU alike
        got_face, got_mask = cache.get(key)
        assert np.array_equal(got_face, face) and np.array_equal(got_mask, mask)
    in_ram = cache.packed_bytes()
    cache.put(0, *faces[1])  # a face in RAM replaced (the new bytes may go either way)
    cache.discard(1)
    assert cache.packed_bytes() <= in_ram and len(cache) == 39
    assert np.array_equal(cache.get(0)[0], faces[1][0])
    with pytest.raises(KeyError):
        cache.get(1)
    on_disk = [k for k in range(2, 40) if not isinstance(cache._packed[k][0], bytes)]
    in_ram = [k for k in range(2, 40) if isinstance(cache._packed[k][0], bytes)]
    cache.close()  # the faces on disk go with the file; those in RAM stay
    with pytest.raises(KeyError):
        cache.get(on_disk[-1])
    assert np.array_equal(cache.get(in_ram[0])[0], faces[in_ram[0]][0])
    cache.put(on_disk[-1], *faces[on_disk[-1]])  # a new file from the start
    assert np.array_equal(cache.get(on_disk[-1])[0], faces[on_disk[-1]][0])
    cache.close()


_FULL_DISK_PROBE = """
import logging, resource, signal, sys
import numpy as np
from swapd.trainer.face_cache import BoundedFaces
logging.basicConfig(level=logging.WARNING)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))  # the spill file's disk is 'full'
rng = np.random.default_rng(2)
faces = [np.full((32, 32, 3), i, np.uint8) if i % 3 else  # flat: a few hundred bytes
         rng.integers(0, 255, (32, 32, 3), np.uint8) for i in range(40)]
cache = BoundedFaces(2, (32, 32, 3), (32, 32, 3), packed_limit=0, spill_dir=sys.argv[1])
for key, face in enumerate(faces):
    cache.put(key, face, face)
for key, face in enumerate(faces):
    assert np.array_equal(cache.get(key)[0], face), key
print("spilled", cache.spilled_bytes(), "in RAM", cache.packed_bytes())
"""


def test_a_full_disk_keeps_the_faces_in_ram(tmp_path: Path) -> None:
    """A spill file that cannot grow (a real write refused by the kernel: the file-size
    limit, as a full disk refuses it): the faces it cannot take stay in RAM, said once, and
    every face, small ones that fit in a write buffer included, still comes back whole."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _FULL_DISK_PROBE, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("cannot write compressed faces to disk") == 1, done.stderr
    spilled, in_ram = (int(x) for x in done.stdout.split()[1::3])
    assert 0 < spilled <= 3000 and in_ram > 0


def test_a_capped_set_spills_into_its_folder(folders: dict[str, Path], tmp_path: Path) -> None:
    """A FaceSet past its cap with a tiny RAM share for compressed faces draws the same
    batches as one holding every face decoded; a new model's folder, not there yet, is made
    for the spill file (a temp folder may be RAM)."""
    spill = tmp_path / "model"
    capped = FaceSet(folders["a"], SIZE, capacity=4, spill_dir=spill)
    assert capped.bounded is not None
    capped.bounded.packed_limit = 0  # every face refreshed from here on goes to the file
    for path in capped.paths:
        face, mask = capped.bounded.get(path)
        capped.bounded.put(path, face, mask)
    assert capped.bounded.packed_bytes() == 0 and capped.bounded.spilled_bytes() > 0
    assert spill.is_dir()
    if Path("/proc/self/fd").is_dir():
        file = capped.bounded._spill
        assert file is not None
        assert os.readlink(f"/proc/self/fd/{file.fileno()}").startswith(str(spill))
    whole = FaceSet(folders["a"], SIZE)
    assert np.array_equal(capped.faces, whole.faces) and np.array_equal(capped.masks,
                                                                        whole.masks)


def test_replaced_faces_do_not_grow_the_spill_file_without_end(tmp_path: Path) -> None:
    """A folder refreshed again and again (faces re-extracted) replaces spilled faces: once
    the replaced bytes outweigh the live ones the file is written again with the live faces
    only, and every face still comes back the same."""
    faces = _noise_faces(12)
    cache = BoundedFaces(2, (SIZE, SIZE, 3), (SIZE, SIZE, 3), packed_limit=0,
                         spill_dir=tmp_path, compact_least=1)
    for key, (face, mask) in enumerate(faces):
        cache.put(key, face, mask)
    live = cache.spilled_bytes()
    assert live > 0 and cache.spilled_garbage() == 0 and cache.packed_bytes() == 0
    first_file = cache._spill
    for round_ in range(5):  # every face replaced by another, five times over
        for key in range(len(faces)):
            cache.put(key, *faces[(key + round_ + 1) % len(faces)])
            assert cache.spilled_bytes() <= 2 * live + 2 * face_bytes(SIZE, 3, 3)
    assert cache._spill is not first_file and first_file is not None and first_file.closed
    for key in range(len(faces)):
        got_face, got_mask = cache.get(key)
        want_face, want_mask = faces[(key + 5) % len(faces)]
        assert np.array_equal(got_face, want_face) and np.array_equal(got_mask, want_mask)
    for key in range(len(faces) - 1):  # discarding counts as well
        cache.discard(key)
    assert cache.spilled_bytes() - cache.spilled_garbage() < live
    assert np.array_equal(cache.get(len(faces) - 1)[0], faces[(len(faces) + 4) % 12][0])
    cache.close()


_FULL_DISK_COMPACTION_PROBE = """
import logging, resource, signal, sys
import numpy as np
from swapd.trainer.face_cache import BoundedFaces
logging.basicConfig(level=logging.INFO)
rng = np.random.default_rng(5)
faces = [rng.integers(0, 255, (32, 32, 3), np.uint8) for i in range(10)]
cache = BoundedFaces(2, (32, 32, 3), (32, 32, 3), packed_limit=0, spill_dir=sys.argv[1],
                     compact_least=1)
for key, face in enumerate(faces):
    cache.put(key, face, face)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))  # no file may grow past 1000 bytes
for key, face in enumerate(faces):  # replaced: neither appended nor compacted, kept in RAM
    cache.put(key, face[::-1].copy(), face)
for key, face in enumerate(faces):
    assert np.array_equal(cache.get(key)[0], face[::-1]), key
print("garbage", cache.spilled_garbage(), "in RAM", cache.packed_bytes())
"""


def test_a_compaction_the_disk_refuses_keeps_every_face(tmp_path: Path) -> None:
    """The new spill file refused by a real write limit: the old one stays, said once, and
    every face comes back."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _FULL_DISK_COMPACTION_PROBE, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("could not compact its spill file") == 1, done.stderr
    assert "compacted its spill file" not in done.stderr
    garbage, in_ram = (int(x) for x in done.stdout.split()[1::3])
    assert garbage > 0 and in_ram > 0


def test_a_face_replaced_while_another_thread_decodes_it_is_not_served_stale(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A loader thread decodes a face outside the lock while a refresh puts the changed file's
    new pixels: the thread's old decode must not land in the LRU over them."""
    import threading

    from swapd.trainer import face_cache

    cache = BoundedFaces(1, (8, 8, 3), (8, 8, 3))
    old, new, mask = (np.full((8, 8, 3), v, np.uint8) for v in (10, 200, 0))
    cache.put("k", old, mask)
    cache.put("other", old, mask)  # evicts "k" from the decoded LRU (capacity 1)
    decoding, carry_on = threading.Event(), threading.Event()
    real_decode = face_cache._decode

    def held_decode(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
        decoding.set()
        carry_on.wait(10)
        return real_decode(data, shape)

    monkeypatch.setattr(face_cache, "_decode", held_decode)
    reader = threading.Thread(target=cache.get, args=("k",))
    reader.start()
    assert decoding.wait(10)
    monkeypatch.setattr(face_cache, "_decode", real_decode)
    cache.put("k", new, mask)  # the file changed; a refresh puts its new face
    carry_on.set()
    reader.join(10)
    assert int(cache.get("k")[0][0, 0, 0]) == 200

"""The face cache's cap: past it, faces are kept compressed behind an LRU of decoded ones
(swapd.trainer.face_cache), with the same pixels, every face still drawn, the same batches."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from swapd.demo.face_sets import write_face_set
from swapd.demo.identity import DEMO_A, DEMO_B
from swapd.trainer.augment import AugmentSettings
from swapd.trainer.batches import BatchLoader
from swapd.trainer.data import FaceSet
from swapd.trainer.face_cache import (
    BoundedFaces,
    capacity_for,
    cgroup_memory_limit,
    face_bytes,
    machine_memory,
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
    write_face_set(folder, DEMO_B, 10, seed=9, size=64)  # 30 files now: past the cap
    assert face_set.refresh() == (10, 0)
    assert face_set.bounded is not None and face_set.bounded.decoded <= 24
    gone = face_set.paths[0]
    gone.unlink()
    assert face_set.refresh() == (0, 1)
    assert len(face_set.bounded) == 29
    with pytest.raises(KeyError):
        face_set.bounded.get(gone)
    assert len(face_set.faces) == 29


def test_the_cap_from_the_job_option() -> None:
    per_face = face_bytes(64, 3, 3)
    assert per_face == 64 * 64 * 6
    # 100 MiB for both sets: half each.
    assert capacity_for(100, 64, 3, 3) == 100 * 2**20 // 2 // per_face
    assert capacity_for(1, 256, 3, 3) == 64  # never fewer than a few batches' faces
    assert capacity_for(0, 64, 3, 3) is not None  # auto: a share of this machine's memory
    assert TrainerOptions().face_cache_mib == 0
    assert TrainerOptions(face_cache_mib=2048).face_cache_mib == 2048


def _group(root: Path, own: str, limits: dict[str, str]) -> tuple[Path, Path]:
    """A control-group tree as the kernel shows it: *limits* maps a file under *root* to its
    text; *own* is /proc/self/cgroup's text."""
    for name, text in limits.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    (root / "self_cgroup").write_text(own)
    return root, root / "self_cgroup"


def test_the_automatic_cap_follows_a_control_groups_memory_limit(tmp_path: Path) -> None:
    """A service under systemd's MemoryMax= (cgroup v2) or in a container (v1) gets a quarter
    of what it may use, not of the machine; the tightest group on the way up counts."""
    gib = 1 << 30
    physical = machine_memory(tmp_path / "none", tmp_path / "no_such_file")
    assert physical and physical > gib  # no groups: the machine's memory
    v2 = _group(tmp_path / "v2", "0::/system.slice/swapd.service\n", {
        "system.slice/swapd.service/memory.max": str(gib), "system.slice/memory.max": "max"})
    assert machine_memory(*v2) == min(gib, physical)
    (v2[0] / "system.slice/memory.max").write_text(str(gib // 2))  # the slice is tighter
    assert cgroup_memory_limit(*v2) == gib // 2
    v1 = _group(tmp_path / "v1", "4:memory:/docker/abc\n3:cpuset:/\n", {
        "memory/docker/abc/memory.limit_in_bytes": str(3 * gib),
        "memory/memory.limit_in_bytes": "9223372036854771712"})  # v1's "no limit"
    assert cgroup_memory_limit(*v1) == 3 * gib
    unlimited = _group(tmp_path / "max", "0::/user.slice\n", {"user.slice/memory.max": "max"})
    assert cgroup_memory_limit(*unlimited) is None
    odd = _group(tmp_path / "odd", "\nnot a cgroup line\n4:memory:/../../etc\n0::/a\n",
                 {"a/memory.max": str(gib)})  # only the well-formed line inside the tree counts
    assert cgroup_memory_limit(*odd) == gib

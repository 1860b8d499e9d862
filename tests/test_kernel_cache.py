"""The compiled kernels' disk cache (swapd.trainer.jit): a second process loads what the first
compiled, with the same maps; a folder that cannot be written means no cache, not an error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swapd.trainer import jit

REPO = Path(__file__).resolve().parents[1]

# A batch of warp_to_landmarks maps in a fresh process: where the kernels were cached, whether
# the batch kernel was loaded or compiled, and the maps' digest.
SCRIPT = """
import hashlib, json
import numpy as np
from swapd.trainer import jit, landmark_kernels
from swapd.trainer.warp_landmarks import warp_faces_to_landmarks
rng = np.random.default_rng(4)
src = 32 + rng.normal(scale=9, size=(6, 68, 2))
dst = src + rng.normal(scale=1.5, size=src.shape)
faces = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
out, warped = warp_faces_to_landmarks(faces, src, dst)
stats = landmark_kernels.landmark_maps.stats
print(json.dumps({"folder": str(jit.FOLDER), "hits": sum(stats.cache_hits.values()),
                  "misses": sum(stats.cache_misses.values()), "warped": int(warped.sum()),
                  "digest": hashlib.sha256(out.tobytes()).hexdigest()}))
"""


def run(cache: str) -> dict:
    env = {**os.environ, jit.ENV: cache, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_compiled_kernels(tmp_path: Path) -> None:
    first = run(str(tmp_path / "kernels"))
    second = run(str(tmp_path / "kernels"))
    folder = Path(first["folder"])
    assert folder.parent == tmp_path / "kernels" and any(folder.rglob("*.nbi"))
    assert (first["misses"], first["hits"]) == (1, 0)  # compiled, and written
    assert (second["misses"], second["hits"]) == (0, 1)  # loaded
    assert second["folder"] == first["folder"] and first["warped"] == 6
    assert second["digest"] == first["digest"]
    uncached = run("off")  # compiled in memory: the same maps
    assert uncached["folder"] == "None" and uncached["digest"] == first["digest"]


def test_no_writable_folder_means_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(jit.ENV, str(blocker / "kernels"))
    with caplog.at_level("INFO", logger="swapd.trainer.jit"):
        assert jit.cache_folder() is None
    assert "not cached" in caplog.text and jit.ENV in caplog.text
    monkeypatch.setenv(jit.ENV, "off")
    assert jit.cache_folder() is None
    monkeypatch.setenv(jit.ENV, str(tmp_path / "here"))
    chosen = jit.cache_folder()
    assert chosen is not None and chosen.parent == tmp_path / "here" and chosen.is_dir()


def test_every_module_compiling_kernels_is_in_the_digest() -> None:
    """A kernel module left out of KERNEL_MODULES would not renew the cache when it changes,
    and its callers would keep its old code."""
    package = REPO / "swapd"
    compiling = sorted(path.name for path in package.rglob("*.py")
                       if "from swapd.trainer.jit import njit" in path.read_text())
    assert compiling == sorted(jit.KERNEL_MODULES)
    assert all((package / "trainer" / name).is_file() for name in jit.KERNEL_MODULES)


# Four loader threads asking for the kernels at once, in a process that has not compiled
# them (no cache): numba's compiler lock makes them wait for one compilation.
THREADS = """
import hashlib, threading
import numpy as np
from swapd.trainer.warp_landmarks import warp_faces_to_landmarks
rng = np.random.default_rng(5)
src = 32 + rng.normal(scale=9, size=(4, 68, 2))
dst = src + rng.normal(scale=1.5, size=src.shape)
faces = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
start, digests = threading.Barrier(4), []
def work():
    start.wait()
    out, warped = warp_faces_to_landmarks(faces, src, dst)
    digests.append((hashlib.sha256(out.tobytes()).hexdigest(), int(warped.sum())))
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(len(digests), len(set(digests)), digests[0][1])
"""


def test_threads_asking_first_at_once_get_one_compilation() -> None:
    env = {**os.environ, jit.ENV: "off", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", THREADS], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["4", "1", "4"]  # four results, all the same, all warped



def test_an_older_versions_folder_unused_for_a_month_is_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each upgrade starts a new digest folder; the old ones go once nothing has used them for
    STALE_DAYS, and nothing else in the folder is touched."""
    root = tmp_path / "kernels"
    old, recent = root / "0123456789abcdef", root / "fedcba9876543210"
    mine_but_not_a_digest = root / "notes"
    for folder in (old, recent, mine_but_not_a_digest):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "k.nbi").write_bytes(b"x")
    month_ago = time.time() - (jit.STALE_DAYS + 1) * 86400
    for folder in (old, mine_but_not_a_digest):
        os.utime(folder, (month_ago, month_ago))
    os.utime(recent, (time.time() - 86400,) * 2)
    monkeypatch.setenv(jit.ENV, str(root))
    chosen = jit.cache_folder()
    assert chosen is not None and chosen.is_dir()
    assert not old.exists()
    assert recent.is_dir() and mine_but_not_a_digest.is_dir()
    # the folder in use is touched each start, so it never looks stale to another version
    os.utime(chosen, (month_ago, month_ago))
    assert jit.cache_folder() == chosen and chosen.stat().st_mtime > month_ago + 86400

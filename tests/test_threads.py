"""Threads as shipped: `swapd train` and the service's worker set torch's threads up by
themselves, with no environment variable from the user (swapd.threads)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from swapd.threads import physical_cores, usable_cores

ROOT = Path(__file__).parents[1]
# The user's environment without any of the variables swapd's set-up depends on.
BARE = {k: v for k, v in os.environ.items()
        if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT",
                     "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX",
                     "GLIBC_TUNABLES", "LD_PRELOAD", "OPENCV_FOR_THREADS_NUM",
                     "OPENBLAS_NUM_THREADS")}
GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
BARE["PYTHONPATH"] = str(ROOT)
TINY = ["--set", "input_size=32", "--set", "width=0.125", "--set", "dense_dim=32",
        "--iterations", "2", "--save-every", "2", "--no-tracker"]
REPORT = re.compile(r"torch on the CPU: (\d+) threads of (\d+) cores, OpenMP wait policy (\S+)")


def train(sets: dict[str, Path], model_dir: Path, **env: str) -> tuple[int, int, str]:
    """Run `python -m swapd train` (what the `swapd` console script runs) in a fresh process
    and return what it reported: threads, cores, wait policy."""
    result = subprocess.run(
        [sys.executable, "-m", "swapd", "train", "--model", "lightweight",
         "-A", str(sets["alice"]), "-B", str(sets["bob"]), "--model-dir", str(model_dir),
         *TINY], capture_output=True, text=True, timeout=300, env={**BARE, **env})
    assert result.returncode == 0, result.stderr
    found = REPORT.search(result.stderr)
    assert found, result.stderr
    if GLIBC and "MALLOC_TRIM_THRESHOLD_" not in env:
        assert "memory allocator: freed memory kept for reuse" in result.stderr
    assert "OpenCV: in the calling thread" in result.stderr  # the loader in the background
    if sys.platform.startswith("linux"):  # wheels with OpenBLAS bundled (not macOS's)
        assert "OpenBLAS (numpy's, scipy's, OpenCV's): in the calling thread" in result.stderr
    return int(found[1]), int(found[2]), found[3]


def test_swapd_train_uses_every_core_with_passive_waiting_without_being_told(
        synthetic_sets: dict[str, Path], tmp_path: Path) -> None:
    threads, cores, policy = train(synthetic_sets, tmp_path / "m")
    assert cores == usable_cores()
    # one thread a physical core (hyperthreads share one core's vector units)
    assert policy == "PASSIVE" and threads == min(cores, physical_cores() or cores)


def test_a_users_own_choice_is_kept(synthetic_sets: dict[str, Path], tmp_path: Path) -> None:
    # Spinning threads on every core would stall the batch loader: one core is left to it.
    threads, cores, policy = train(synthetic_sets, tmp_path / "a", OMP_WAIT_POLICY="ACTIVE")
    assert policy == "ACTIVE" and threads == max(1, min(cores, physical_cores() or cores) - 1)
    threads, _, policy = train(synthetic_sets, tmp_path / "n", OMP_NUM_THREADS="1")
    assert policy == "PASSIVE" and threads == 1


def test_training_processes_side_by_side_share_the_cores(synthetic_sets: dict[str, Path],
                                                         tmp_path: Path) -> None:
    """The service's workers (max_workers = 2) each take half the cores, as a process
    started with the variable the service sets shows."""
    threads, cores, _ = train(synthetic_sets, tmp_path / "s", SWAPD_TRAINING_PROCESSES="2")
    assert threads == max(1, min(cores, physical_cores() or cores) // 2)


def test_the_share_and_torchruns_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a 16-core machine: torchrun's OMP_NUM_THREADS=1 for 4 processes a node is its
    default, not the user's choice, and the cores are divided instead; a user's own count
    is kept; the service's share and torchrun's local world size divide the cores."""
    from swapd import threads

    monkeypatch.setattr(threads, "usable_cores", lambda: 16)
    monkeypatch.setattr(threads, "physical_cores", lambda: 16)
    for name in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID",
                 threads.PROCESSES_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert (threads.training_processes(), threads.training_threads()) == (1, 16)
    monkeypatch.setenv(threads.PROCESSES_ENV, "3")
    assert (threads.training_processes(), threads.training_threads()) == (3, 5)
    monkeypatch.setenv(threads.PROCESSES_ENV, "nonsense")
    assert threads.training_processes() == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.training_threads() == 1  # not torchrun's: a user's own 1
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert threads.training_threads() == 4  # torchrun's default: 16 cores among 4
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.training_threads() == 2  # a user's own count under torchrun


def test_the_automatic_face_cache_is_shared_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from swapd import threads
    from swapd.trainer import face_cache

    if face_cache.machine_memory() is None:
        pytest.skip("this platform does not say how much memory there is")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv(threads.PROCESSES_ENV, raising=False)
    alone = face_cache.capacity_for(0, 64, 3, 3, least=1)
    monkeypatch.setenv(threads.PROCESSES_ENV, "2")
    shared = face_cache.capacity_for(0, 64, 3, 3, least=1)
    assert alone is not None and shared is not None and abs(alone - 2 * shared) <= 1


@pytest.mark.parametrize("entry", ["swapd.daemon.train_worker", "swapd.cli"])
def test_torch_sees_passive_waiting_when_loaded_after_an_entry_point(entry: str) -> None:
    # What libgomp reads when torch loads it is the environment at that moment: the worker's
    # module (the service starts it as `python -m swapd.daemon.train_worker`) and the CLI
    # import torch only after swapd has set it.
    probe = f"import os; import {entry}; print(os.environ.get('OMP_WAIT_POLICY'))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, env=BARE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "PASSIVE"


def test_set_before_torch_only() -> None:
    # Once torch is loaded, setting the variable would be a lie: OpenMP read it already.
    probe = ("import os, torch, swapd; print(os.environ.get('OMP_WAIT_POLICY'))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, env=BARE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"


# Four 1 MiB arrays made and freed, again and again: what a batch loader and a training step
# do with their arrays. Prints the page faults of one round (each a fresh page the system
# had to map and zero).
CHURN = """
import resource, sys
import numpy as np
from swapd import threads
kept = threads.keep_freed_memory() if sys.argv[1] == "keep" else False
def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def churn():
    held = [np.ones(1 << 20, np.uint8) for _ in range(4)]
    del held
for _ in range(3): churn()
before = faults()
for _ in range(50): churn()
print(kept, (faults() - before) / 50)
"""


def churn(mode: str, **env: str) -> tuple[bool, float]:
    result = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True,
                            text=True, timeout=120, env={**BARE, **env})
    assert result.returncode == 0, result.stderr
    kept, faults = result.stdout.split()
    return kept == "True", float(faults)


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator")
def test_freed_memory_is_kept_for_reuse() -> None:
    _, plain = churn("plain")
    kept, faults = churn("keep")
    assert kept
    # By default glibc hands the freed megabytes back and maps them afresh each round (about
    # 1000 faults here); kept, they are reused.
    assert plain > 20 * max(faults, 1), (plain, faults)


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator")
def test_a_users_allocator_set_up_is_left_alone() -> None:
    _, plain = churn("plain")
    kept, faults = churn("keep", MALLOC_TRIM_THRESHOLD_="0")
    assert not kept and faults > plain / 2, (plain, faults)


# The batch loader's augmentation of one side (16 faces of 64 px, CLAHE on half of them), 20
# times: prints whether swapd set OpenCV up, OpenCV's thread count, and how many threads the
# process gained meanwhile (OpenCV's pool starts its threads on its first parallel call;
# numpy's and torch's exist from their import).
AUGMENT = """
import os, sys
import numpy as np
from swapd import threads
from swapd.trainer.augment import Augmenter, AugmentSettings
alone = threads.opencv_in_calling_thread() if sys.argv[1] == "swapd" else False
import cv2
rng = np.random.default_rng(0)
faces = np.empty((16, 64, 64, 3), np.uint8)
faces[:] = np.linspace(0, 255, 64, dtype=np.uint8)[:, None]  # a ramp across each face
augment = Augmenter(64, AugmentSettings(clahe=0.5))
before = set(os.listdir("/proc/self/task"))
for _ in range(20):
    augment(faces, rng, faces)
print(alone, cv2.getNumThreads(), len(set(os.listdir("/proc/self/task")) - before))
"""


def augment_threads(mode: str, **env: str) -> tuple[bool, int, int]:
    result = subprocess.run([sys.executable, "-c", AUGMENT, mode], capture_output=True,
                            text=True, timeout=120, env={**BARE, **env})
    assert result.returncode == 0, result.stderr
    alone, count, started = result.stdout.split()
    return alone == "True", int(count), int(started)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_opencv_works_in_the_loaders_thread_alone() -> None:
    alone, count, started = augment_threads("swapd")
    assert alone and count == 1
    # OpenCV started no pool: nothing of the augmentation runs on threads of its own at the
    # normal priority, beside the loader's in the background. (Its pool on 2 cores cost
    # 45-60 % more CPU for the same work: benchmarks/opencv_pool.py.)
    assert started == 0
    _, count, started = augment_threads("plain")
    if count > 1:  # what it avoids: OpenCV's own pool, started by the same calls
        assert started > 0


def test_a_users_opencv_threads_are_left_alone() -> None:
    alone, count, _ = augment_threads("swapd", OPENCV_FOR_THREADS_NUM="3")
    assert not alone and count == 3


# Small matrix work that wakes the bundled OpenBLAS: the merger's colour transfer ``idt``
# (DeepFaceLab's, projections of a 256 px crop's pixels) 3 times. Prints whether swapd
# limited the bundled OpenBLAS libraries ("swapd": the call itself; "merger": what loading a
# model for merging does; "plain": neither), the thread count each of them reports, torch's
# threads before and after, and the CPU seconds of the calling thread and of the whole
# process meanwhile.
COLOUR_TRANSFER = """
import sys, tempfile, time
from pathlib import Path
import numpy as np
import torch
from swapd import threads
from swapd.merger.colour import idt
torch_threads = torch.get_num_threads()
limited = False
if sys.argv[1] == "swapd":
    limited = threads.openblas_in_calling_thread()
elif sys.argv[1] == "merger":
    from swapd.merger.merge import Merger
    from tests.merge_support import export_cast_model
    with tempfile.TemporaryDirectory() as tmp:
        Merger(export_cast_model(Path(tmp) / "cast.onnx"))
from threadpoolctl import threadpool_info
counts = [lib["num_threads"] for lib in threadpool_info() if lib["internal_api"] == "openblas"
          and "torch" not in lib["filepath"]]
rng = np.random.default_rng(0)
crops = [rng.random((256, 256, 3), dtype=np.float32) for _ in range(2)]
idt(*crops)
process, thread = time.process_time(), time.thread_time()
for _ in range(3):
    idt(*crops)
print(limited, ",".join(map(str, counts)), torch_threads, torch.get_num_threads(),
      time.process_time() - process, time.thread_time() - thread)
"""


class BlasRun(NamedTuple):
    limited: bool
    counts: list[int]  # threads of each bundled OpenBLAS library
    torch_before: int
    torch_after: int
    process_cpu: float
    thread_cpu: float


def colour_transfer_run(mode: str, **env: str) -> BlasRun:
    result = subprocess.run([sys.executable, "-c", COLOUR_TRANSFER, mode], capture_output=True,
                            text=True, timeout=120, env={**BARE, **env}, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    limited, counts, before, after, process, thread = result.stdout.split()
    return BlasRun(limited == "True", [int(c) for c in counts.split(",")], int(before),
                   int(after), float(process), float(thread))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="wheels with OpenBLAS bundled")
def test_bundled_openblas_works_in_the_calling_thread() -> None:
    run = colour_transfer_run("swapd")
    # numpy's and scipy's own OpenBLAS at least (scipy's loaded by the call, not missed)
    assert run.limited and len(run.counts) >= 2 and set(run.counts) == {1}
    assert run.torch_after == run.torch_before  # torch's threads left alone
    # No BLAS thread spins beside the caller: the process used about the calling thread's CPU.
    assert run.process_cpu < 1.25 * run.thread_cpu
    plain = colour_transfer_run("plain")
    assert max(plain.counts) > 1 or usable_cores() == 1  # what it changes: a thread per core
    # (Without the limit OpenBLAS's threads spin beside this workload: on 2 cores the process
    # took twice the caller's CPU, docs/benchmarks.md; how long they spin is OpenBLAS's.)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="wheels with OpenBLAS bundled")
def test_a_merger_runs_the_bundled_openblas_in_the_calling_thread() -> None:
    """Loading a model for merging sets it (the CLI, the service's merge worker, previews)."""
    run = colour_transfer_run("merger")
    assert len(run.counts) >= 2 and set(run.counts) == {1}
    assert run.torch_after == run.torch_before
    assert run.process_cpu < 1.25 * run.thread_cpu


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="wheels with OpenBLAS bundled")
def test_a_users_blas_threads_are_left_alone() -> None:
    run = colour_transfer_run("swapd", OPENBLAS_NUM_THREADS="2")
    # as many as OpenBLAS gives that setting by itself (it caps it at the CPUs it sees)
    assert not run.limited
    assert run.counts == colour_transfer_run("plain", OPENBLAS_NUM_THREADS="2").counts
    assert max(run.counts) > 1 or usable_cores() == 1


def test_loader_threads_beside_a_gpu_do_not_follow_the_hosts_cpus(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each loader worker draws from its own random stream: a count that followed the host's
    CPUs would give one seed different batches on a 2-core and an 8-core GPU host."""
    import torch

    from swapd.trainer.options import TrainerOptions
    from swapd.trainer.setup import loader_workers

    counts = set()
    for cpus in (2, 8, 64):
        monkeypatch.setattr(os, "cpu_count", lambda cpus=cpus: cpus)
        counts.add(loader_workers(TrainerOptions(), torch.device("cuda")))
    assert counts == {4}
    assert loader_workers(TrainerOptions(), torch.device("cpu")) == 1
    assert loader_workers(TrainerOptions(loader_workers=3), torch.device("cuda")) == 3

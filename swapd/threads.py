"""How swapd runs torch on the CPU: OpenMP's wait policy and the number of threads.

OpenMP (libgomp in torch's CPU builds) reads ``OMP_WAIT_POLICY`` once, when torch loads it, so
it must be in the environment before ``import torch``. ``swapd/__init__`` calls
:func:`prepare_environment` first thing, so every way into swapd (the ``swapd`` command,
``python -m swapd``, the service's worker processes, the benchmarks, a script that imports
swapd before torch) trains with the same set-up, with nothing for the user to set.

Why passive: by default OpenMP threads spin while they wait for work. On a small CPU shared
with the batch loader, the daemon or anything else, spinning threads steal the cores the other
threads need; measured on 2 shared cores (s/step, the demo model): 1 thread 6.9, 2 spinning
10.3, 2 passive 3.0. Passive waiting costs nothing measurable when the cores are free.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import threading
from pathlib import Path

from swapd import cgroups

log = logging.getLogger(__name__)

WAIT_POLICY = "OMP_WAIT_POLICY"
# Set by the service for its training workers: how many may run side by side (max_workers)
PROCESSES_ENV = "SWAPD_TRAINING_PROCESSES"
# glibc's mallopt parameters, and the values swapd sets (see keep_freed_memory)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest on 64-bit
_TRIM_THRESHOLD = 1 << 30
_ALLOCATOR_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX",
                        "LD_PRELOAD")


def prepare_environment() -> bool:
    """Ask for passive OpenMP waiting unless the user chose a policy, while it can still take
    effect (torch not yet imported). Returns whether torch runs (or will run) with it."""
    if "torch" not in sys.modules:
        os.environ.setdefault(WAIT_POLICY, "PASSIVE")
    return passive_waiting()


def passive_waiting() -> bool:
    """Whether the environment asks OpenMP to wait passively."""
    return os.environ.get(WAIT_POLICY, "").strip().upper() == "PASSIVE"


def _affinity() -> set[int] | None:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # not on Linux
        return None


def logical_cores() -> int:
    """The logical CPUs this process may run on: its affinity (taskset, a cpuset)."""
    affinity = _affinity()
    return len(affinity) if affinity is not None else os.cpu_count() or 1


def usable_cores() -> int:
    """The logical CPUs this process may keep busy: :func:`logical_cores`, and no more than
    a control group's CPU quota allows (``CPUQuota=``, ``docker --cpus``)."""
    cores = logical_cores()
    quota = cgroups.cpu_limit()
    return min(cores, quota) if quota else cores


def physical_cores(cpus: set[int] | None = None,
                   topology: Path = Path("/sys/devices/system/cpu")) -> int | None:
    """The physical cores among *cpus* (default: this process's affinity): hyperthreads of
    one core count once (Linux's ``thread_siblings_list``); None where the platform does not
    say."""
    cpus = _affinity() if cpus is None else cpus
    if not cpus:
        return None
    cores = set()
    for cpu in cpus:
        try:
            cores.add((topology / f"cpu{cpu}" / "topology" / "thread_siblings_list")
                      .read_text().strip())
        except OSError:
            return None
    return len(cores)


def training_processes() -> int:
    """How many training processes share this machine's CPUs and memory: torchrun's
    ``LOCAL_WORLD_SIZE`` (its processes on this node), or what the service tells its
    workers (:data:`PROCESSES_ENV`, its ``max_workers``); 1 by default."""
    counts = [1]
    for name in ("LOCAL_WORLD_SIZE", PROCESSES_ENV):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            counts.append(int(value))
    return max(counts)


def _torchrun_default_threads() -> bool:
    """``OMP_NUM_THREADS=1`` as torchrun sets it for several processes on a node when the
    user did not (it says so in its own warning): meant to keep them from overloading the
    CPUs, which dividing the cores among them does too, without training on one core."""
    return (os.environ.get("OMP_NUM_THREADS", "").strip() == "1"
            and "TORCHELASTIC_RUN_ID" in os.environ
            and os.environ.get("LOCAL_WORLD_SIZE", "1").strip() not in ("", "1"))


def training_threads() -> int:
    """torch's thread count for training on the CPU.

    ``OMP_NUM_THREADS`` when the user set it (not torchrun's default of 1); otherwise one a
    physical core (torch's own default: two threads on one core's hyperthreads only contend
    for its vector units), within the CPUs :func:`usable_cores` allows, divided among the
    :func:`training_processes` that share them, with passive waiting; every one but one with
    spinning threads (a user's ``OMP_WAIT_POLICY=ACTIVE``): spinning threads on every core
    stall the batch loader's thread (see the module's note).
    """
    wanted = os.environ.get("OMP_NUM_THREADS", "").strip()
    if wanted.isdigit() and int(wanted) > 0 and not _torchrun_default_threads():
        return int(wanted)
    cores = min(usable_cores(), physical_cores() or sys.maxsize) // training_processes()
    return max(1, cores if passive_waiting() else cores - 1)


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse rather than hand it back to the
    system at once (Linux with glibc; returns whether it was set).

    A training step allocates and frees the same arrays and tensors again and again (the
    batch loader's faces, masks and float batches, torch's activations): by default glibc
    gives freed blocks back to the system and maps them afresh for the next batch, and every
    fresh page costs a page fault and zeroing: 736 faults for one side's batch of the demo's
    model (16 faces, 64 px), whose loader then took 5.0 ms of CPU a side against 3.5 ms with
    the memory kept. The cost: a training process keeps about its peak memory (a preview,
    an export or a tracker pass included) instead of shrinking after it. Left alone when the
    user set the allocator up (``MALLOC_*_`` variables, glibc's malloc tunables, another
    allocator by ``LD_PRELOAD``). Once per process (later calls return the first's answer)."""
    if not sys.platform.startswith("linux") or _allocator_chosen():
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The trim threshold first: alone it changes nothing a failed second call would regret.
    kept = bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)) and bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD))
    if kept:
        log.info("memory allocator: freed memory kept for reuse (glibc mallopt)")
    return kept


def _allocator_chosen() -> bool:
    """Whether the user's environment sets the allocator up itself."""
    return (any(v in os.environ for v in _ALLOCATOR_VARIABLES)
            or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""))


# The nice value of a thread that should run only on cores the training step leaves idle
BACKGROUND_NICE = 19


def run_in_background() -> bool:
    """Lower the calling thread to the lowest priority (Linux: a thread has a nice value of
    its own); returns whether it did. Raising it back needs a privilege an ordinary user
    lacks, so a thread that must catch up is replaced instead (see
    :class:`swapd.trainer.batches.BatchLoader`).

    Why: on the CPU, torch's threads (one per core) meet at the end of every operation, so a
    third thread that takes a core from one of them stalls both: the batch loader's work,
    about 1.5 % of the demo model's CPU a step, cost it 2.7 % of its speed at the default
    priority and 1.4 % at the lowest, where the scheduler gives it the moments torch's
    threads wait (docs/benchmarks.md, "The batch loader in the background"). Only while the
    machine is otherwise idle: a background thread the scheduler leaves waiting while it
    holds the GIL holds up the main thread."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except OSError:
        return False
    return True


# OpenCV's own setting of its thread count, which swapd leaves alone when the user set it
OPENCV_THREADS = "OPENCV_FOR_THREADS_NUM"


def opencv_in_calling_thread() -> bool:
    """Run OpenCV's functions in the thread that calls them, without its pool of worker
    threads, unless the user set ``OPENCV_FOR_THREADS_NUM``; returns whether it did. For the
    whole process: the batch loader's thread is its main user while training on the CPU.

    Why: a training batch's faces are small, and OpenCV's pool (a thread per core, which
    waits actively for work) spends more CPU handing the work out than it saves. The demo's
    augmentation of one side (16 faces of 64 px) took 2.7 ms of CPU (1.8 ms wall) on the
    pool of 2 threads against 1.9 ms (1.9 ms wall) in the calling thread alone; with CLAHE
    3.9 ms against 2.6 (2.5 ms wall against 2.6; benchmarks/opencv_pool.py). And the pool's
    thread runs at the normal priority on the cores torch's threads need, where the
    loader's own runs in the background (:func:`run_in_background`)."""
    if os.environ.get(OPENCV_THREADS, "").strip():
        return False
    import cv2  # here: the rest of this module runs before anything heavy is imported

    cv2.setNumThreads(1)
    log.info("OpenCV: in the calling thread (no pool of its own)")
    return True


# OpenBLAS's own setting of its thread count, which swapd leaves alone when the user set it
OPENBLAS_THREADS = "OPENBLAS_NUM_THREADS"


def openblas_in_calling_thread() -> bool:
    """Run the OpenBLAS libraries that numpy's, scipy's and OpenCV's wheels bundle in the
    calling thread, without worker threads, unless the user set ``OPENBLAS_NUM_THREADS``;
    returns whether it limited any. For the whole process, for good. torch's BLAS (MKL in
    its x86 wheels, or its own OpenBLAS), any BLAS on OpenMP (whose setting would reach
    torch's threads) and a numpy built on MKL are left alone.

    Why: OpenBLAS's worker threads wait actively for work at the normal priority, and any
    small matrix work in numpy or scipy wakes them. scipy's Delaunay interpolation, which
    ``warp_to_landmarks`` used until its map was rasterised, did: for every millisecond of
    the loader's own CPU they spun another on the core torch's threads need (a batch of both
    sides, 16 faces of 64 px a side: 27.8 ms of the loader's thread, 55.7 ms of the process;
    26.2 and 26.2 with one thread; benchmarks/loader_blas.py), and training with the option
    ran at 0.81 of its bare loop's speed, 0.96 with one thread (docs/benchmarks.md). It
    stays for whatever matrix work a loader still does. An optimisation only: where the
    libraries cannot be inspected it logs why and training goes on."""
    if os.environ.get(OPENBLAS_THREADS, "").strip():
        return False
    try:
        # Imported here: the rest of this module runs before anything heavy is imported.
        # scipy's linear algebra loads scipy's OpenBLAS, which a limit set now would miss.
        import scipy.linalg  # noqa: F401
        from threadpoolctl import ThreadpoolController

        controller = ThreadpoolController()
        bundled = [lib["filepath"] for lib in controller.info()
                   if lib["internal_api"] == "openblas"
                   and lib.get("threading_layer") == "pthreads"
                   and "torch" not in Path(lib["filepath"]).parts]
        if bundled:
            controller.select(filepath=bundled).limit(limits=1)
    except Exception as error:  # noqa: BLE001  (any failure to inspect: leave them be)
        log.warning("OpenBLAS threads left as they are: %s", error)
        return False
    if bundled:
        log.info("OpenBLAS (numpy's, scipy's, OpenCV's): in the calling thread (%d libraries)",
                 len(bundled))
    return bool(bundled)


def load_average() -> float:
    """The system's 1-minute load average (0 where the system does not keep one)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return 0.0

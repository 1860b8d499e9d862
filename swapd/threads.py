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

import os
import sys

WAIT_POLICY = "OMP_WAIT_POLICY"


def prepare_environment() -> bool:
    """Ask for passive OpenMP waiting unless the user chose a policy, while it can still take
    effect (torch not yet imported). Returns whether torch runs (or will run) with it."""
    if "torch" not in sys.modules:
        os.environ.setdefault(WAIT_POLICY, "PASSIVE")
    return passive_waiting()


def passive_waiting() -> bool:
    """Whether the environment asks OpenMP to wait passively."""
    return os.environ.get(WAIT_POLICY, "").strip().upper() == "PASSIVE"


def usable_cores() -> int:
    """The cores this process may run on (its affinity, e.g. under taskset or a cgroup)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def training_threads() -> int:
    """torch's thread count for training on the CPU.

    ``OMP_NUM_THREADS`` when the user set it; otherwise every core with passive waiting, and
    every core but one with spinning threads (a user's ``OMP_WAIT_POLICY=ACTIVE``): spinning
    threads on every core stall the batch loader's thread (see the module's note).
    """
    wanted = os.environ.get("OMP_NUM_THREADS", "").strip()
    if wanted.isdigit() and int(wanted) > 0:
        return int(wanted)
    cores = usable_cores()
    return cores if passive_waiting() else max(1, cores - 1)

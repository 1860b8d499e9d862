"""What this process's control groups allow it (Linux): memory (systemd's ``MemoryMax=``, a
container's memory limit) and CPU time (systemd's ``CPUQuota=``, ``docker --cpus``).

Read from ``/proc/self/cgroup`` and the cgroup file system, v2 or v1; a limit on a group above
the process's binds it too, so the tightest on the way up counts. No imports beyond the
standard library: :mod:`swapd.threads` reads the CPU limit before torch loads.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
OWN_CGROUPS = Path("/proc/self/cgroup")


def _settings(root: Path, own_cgroups: Path, v2_names: tuple[str, ...], v1_controller: str,
              v1_names: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """The texts of the named files in this process's group and each group above it (v2's
    names, or v1's under the controller's hierarchy); a group without them is passed over."""
    try:
        lines = own_cgroups.read_text().splitlines()
    except OSError:
        return
    for line in lines:  # "0::/system.slice/swapd.service" (v2), "7:memory:/user.slice" (v1)
        fields = line.split(":", 2)
        if len(fields) != 3 or ".." in fields[2].split("/"):
            continue  # not a cgroup line (a platform of its own), or a path out of the tree
        _, controllers, path = fields
        if controllers == "":
            base, names = root, v2_names
        elif v1_controller in controllers.split(","):
            base, names = root / v1_controller, v1_names
        else:
            continue
        group = base / path.lstrip("/")
        for folder in (group, *group.parents):
            try:
                texts = tuple((folder / name).read_text().strip() for name in names)
            except OSError:
                texts = ()
            if texts:
                yield texts
            if folder == base:
                break


def memory_limit(root: Path = ROOT, own_cgroups: Path = OWN_CGROUPS) -> int | None:
    """The tightest memory limit in bytes (v2 ``memory.max``, v1 ``memory.limit_in_bytes``),
    or None: none, or not Linux."""
    limits = [int(text) for (text,) in _settings(root, own_cgroups, ("memory.max",), "memory",
                                                  ("memory.limit_in_bytes",))
              # v2 writes "max" for none; v1 a huge page-rounded number
              if text.isdigit() and int(text) < 1 << 60]
    return min(limits) if limits else None


def cpu_limit(root: Path = ROOT, own_cgroups: Path = OWN_CGROUPS) -> int | None:
    """The CPUs the tightest CPU quota allows, rounded up (v2 ``cpu.max`` "quota period", v1
    ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``), or None: no quota, or not Linux."""
    limits = []
    for texts in _settings(root, own_cgroups, ("cpu.max",), "cpu",
                           ("cpu.cfs_quota_us", "cpu.cfs_period_us")):
        quota, _, period = (texts[0].partition(" ") if len(texts) == 1 else
                            (texts[0], " ", texts[1]))
        if quota.isdigit() and period.strip().isdigit() and int(period) > 0:
            limits.append(max(1, math.ceil(int(quota) / int(period))))  # v2 "max", v1 "-1": none
    return min(limits) if limits else None

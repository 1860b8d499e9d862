"""What the control groups allow: memory (the face cache's automatic cap) and CPU time
(the training threads), from cgroup trees laid out as the kernel shows them (v2 and v1), and
hyperthreads counted once."""

from __future__ import annotations

from pathlib import Path

from swapd.cgroups import cpu_limit, memory_limit
from swapd.threads import physical_cores
from swapd.trainer.face_cache import machine_memory


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
    assert memory_limit(*v2) == gib // 2
    v1 = _group(tmp_path / "v1", "4:memory:/docker/abc\n3:cpuset:/\n", {
        "memory/docker/abc/memory.limit_in_bytes": str(3 * gib),
        "memory/memory.limit_in_bytes": "9223372036854771712"})  # v1's "no limit"
    assert memory_limit(*v1) == 3 * gib
    unlimited = _group(tmp_path / "max", "0::/user.slice\n", {"user.slice/memory.max": "max"})
    assert memory_limit(*unlimited) is None
    odd = _group(tmp_path / "odd", "\nnot a cgroup line\n4:memory:/../../etc\n0::/a\n",
                 {"a/memory.max": str(gib)})  # only the well-formed line inside the tree counts
    assert memory_limit(*odd) == gib


def test_a_cpu_quota_caps_the_cores(tmp_path: Path) -> None:
    """systemd's CPUQuota=150% (v2 "150000 100000") allows 2 CPUs' worth of threads, docker's
    --cpus=3 (v1 quota 300000 over 100000) 3; "max" and -1 are no quota; the tightest group
    on the way up counts."""
    v2 = _group(tmp_path / "v2", "0::/system.slice/swapd.service\n", {
        "system.slice/swapd.service/cpu.max": "150000 100000", "system.slice/cpu.max": "max"})
    assert cpu_limit(*v2) == 2
    (v2[0] / "system.slice/cpu.max").write_text("50000 100000\n")  # the slice: half a CPU
    assert cpu_limit(*v2) == 1
    v1 = _group(tmp_path / "v1", "2:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n", {
        "cpu/docker/abc/cpu.cfs_quota_us": "300000", "cpu/docker/abc/cpu.cfs_period_us": "100000",
        "cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"})
    assert cpu_limit(*v1) == 3
    assert memory_limit(*v1) is None  # no memory files there
    none = _group(tmp_path / "none", "0::/user.slice\n", {"user.slice/cpu.max": "max 100000"})
    assert cpu_limit(*none) is None
    assert cpu_limit(tmp_path / "nothing", tmp_path / "no_such_file") is None


def test_hyperthreads_of_one_core_count_once(tmp_path: Path) -> None:
    """Four logical CPUs on two cores (Linux's thread_siblings_list): two physical cores; a
    platform that does not say gives None."""
    for cpu, siblings in enumerate(("0,2", "1,3", "0,2", "1,3")):
        folder = tmp_path / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "thread_siblings_list").write_text(siblings + "\n")
    assert physical_cores({0, 1, 2, 3}, tmp_path) == 2
    assert physical_cores({0, 2}, tmp_path) == 1
    assert physical_cores({0, 9}, tmp_path) is None
    assert physical_cores(set(), tmp_path) is None

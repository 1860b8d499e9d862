#!/usr/bin/python3
"""Run a command under the system-call restrictions of a systemd unit, without systemd.

    /usr/bin/python3 scripts/unit_sandbox.py systemd/swapd.service -- COMMAND [ARGS...]

Where no systemd runs as PID 1 (a container, CI) a unit cannot be started, but the parts of its
hardening that live in the process itself can be applied by hand, the way systemd applies them:
the seccomp filter of ``SystemCallFilter=`` (groups expanded by ``systemd-analyze
syscall-filter``, allow-list then ``~`` removals, ``SystemCallErrorNumber=``), the socket
families of ``RestrictAddressFamilies=``, ``SystemCallArchitectures=native``,
``NoNewPrivileges=``, ``MemoryDenyWriteExecute=`` (as the kernel's prctl PR_SET_MDWE, its
equivalent) and ``UMask=``. Capabilities are dropped by running this under ``setpriv``. The
mount, device and namespace directives are not applied: they need systemd (or root and a
private mount namespace), and docs/reliability.md says so.

Run with the system's python3: it needs python3-seccomp (Debian), and what it execs may be any
interpreter (swapd's venv).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import seccomp  # type: ignore[import-not-found]  # (Debian's python3-seccomp)

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def directives(unit: Path) -> dict[str, list[str]]:
    """Each key of the unit's [Service] section and its values, in order."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def expand(name: str, seen: set[str] | None = None) -> set[str]:
    """A system call, or a group's calls (nested groups too) as systemd lists them."""
    if not name.startswith("@"):
        return {name}
    seen = seen if seen is not None else set()
    if name in seen:
        return set()
    seen.add(name)
    listed = subprocess.run(["systemd-analyze", "syscall-filter", name], check=True,
                            capture_output=True, text=True).stdout
    calls: set[str] = set()
    for line in listed.splitlines()[1:]:
        item = line.strip()
        if item and not item.startswith("#"):
            calls |= expand(item, seen)
    return calls


def allowed_calls(filters: list[str]) -> set[str]:
    """``SystemCallFilter=`` lines in order: the first without ``~`` starts an allow-list,
    later ``~`` lines take calls out of it (systemd's rule)."""
    allowed: set[str] = set()
    for value in filters:
        deny = value.startswith("~")
        names = set()
        for item in value.lstrip("~").split():
            names |= expand(item)
        allowed = allowed - names if deny else allowed | names
    return allowed


def apply(unit: Path) -> None:
    found = directives(unit)
    if found.get("UMask"):
        os.umask(int(found["UMask"][-1], 8))
    error = found.get("SystemCallErrorNumber", ["EPERM"])[-1]
    refuse = seccomp.ERRNO(getattr(errno, error))
    filters = found.get("SystemCallFilter", [])
    families = " ".join(found.get("RestrictAddressFamilies", [])).split()
    if filters:
        rules = seccomp.SyscallFilter(defaction=refuse)
        for call in sorted(allowed_calls(filters)):
            if call in ("socket", "socketpair") and families:
                continue  # allowed below, per family
            # (a call this architecture does not have is skipped, as systemd skips it)
            with contextlib.suppress(RuntimeError, ValueError, OSError):
                rules.add_rule(seccomp.ALLOW, call)
        for family in families:
            number = int(getattr(socket, family))
            for call in ("socket", "socketpair"):
                rules.add_rule(seccomp.ALLOW, call, seccomp.Arg(0, seccomp.EQ, number))
        # (NoNewPrivileges: loading a filter as a user needs it, and systemd sets it too)
        rules.load()
    if found.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
            sys.exit(f"prctl(PR_SET_MDWE): {os.strerror(ctypes.get_errno())}")


def main(argv: list[str]) -> int:
    if "--" not in argv or len(argv) < 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    split = argv.index("--")
    unit, command = Path(argv[0]), argv[split + 1:]
    for flag in argv[1:split]:  # overrides, e.g. MemoryDenyWriteExecute=yes
        if not re.fullmatch(r"\w+=.*", flag):
            print(f"unit_sandbox: expected KEY=VALUE, got {flag!r}", file=sys.stderr)
            return 2
    overrides = dict(flag.split("=", 1) for flag in argv[1:split])
    if overrides:
        text = unit.read_text(encoding="utf-8") + "\n[Service]\n" + "".join(
            f"{k}={v}\n" for k, v in overrides.items())
        unit = Path(os.environ.get("TMPDIR", "/tmp")) / f"unit_sandbox.{os.getpid()}.service"
        unit.write_text(text, encoding="utf-8")
    try:
        apply(unit)
    finally:
        if overrides:
            unit.unlink()  # (read: the copy with the overrides is not needed any more)
    os.execvp(command[0], command)
    return 127  # (not reached)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The systemd units (issue 18, item 11): both verify clean, both score as hardened, swapd
runs under what of their hardening can be applied without systemd as PID 1, and the system
unit starts, trains, merges and stops under a real systemd booted in namespaces of its own
(scripts/systemd_check.py).

`systemd-analyze verify` needs the unit's binary to exist, so each unit is checked as a copy
whose ExecStart runs this interpreter's swapd (everything else unchanged); it prints a line for
every unknown key or bad value and still exits 0, so the test wants no output at all.
`systemd-analyze security --offline=yes` scores the files themselves.

Without booting a systemd, scripts/unit_sandbox.py applies
the units' seccomp filter (system calls, socket families), NoNewPrivileges, UMask and, when
asked, MemoryDenyWriteExecute (as prctl PR_SET_MDWE), and `setpriv` drops every capability;
torch, onnxruntime and ffmpeg run under that, and the slow test runs the whole service there:
training, export and a merge.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import TINY_JOB, in_ci, require_tools, start_with_face_sets, wait_for

REPO = Path(__file__).resolve().parents[1]
UNITS = {"system": REPO / "systemd" / "swapd.service",
         "user": REPO / "systemd" / "swapd-user.service"}
# The scores the units have now (the issue asks 3.0 or less for the system unit): a change
# that loosens either shows here.
MAX_SCORE = {"system": 1.5, "user": 2.5}
SANDBOX = REPO / "scripts" / "unit_sandbox.py"
SYSTEM_PYTHON = "/usr/bin/python3"


def _analyze(kind: str, *args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    require_tools("systemd-analyze")
    runtime = tmp / "xdg"  # a user manager's runtime folder: --user needs one to exist
    runtime.mkdir(mode=0o700, exist_ok=True)
    scope = ["--user"] if kind == "user" else []
    return subprocess.run(["systemd-analyze", *scope, *args], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, XDG_RUNTIME_DIR=str(runtime)))


def _runnable_copy(kind: str, folder: Path) -> Path:
    """The unit with an ExecStart that exists here (verify checks the binary)."""
    text = UNITS[kind].read_text()
    text, count = re.subn(r"(?m)^ExecStart=\S+", f"ExecStart={sys.executable} -m swapd",
                          text)
    assert count == 1
    copy = folder / UNITS[kind].name
    copy.write_text(text)
    return copy


@pytest.mark.parametrize("kind", ["system", "user"])
def test_the_unit_verifies_without_a_warning(kind: str, tmp_path: Path) -> None:
    done = _analyze(kind, "verify", str(_runnable_copy(kind, tmp_path)), tmp=tmp_path)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), (
        done.stdout + done.stderr)
    # (the check itself: a misspelt key is reported)
    bad = tmp_path / "bad" / UNITS[kind].name
    bad.parent.mkdir()
    bad.write_text(_runnable_copy(kind, tmp_path).read_text().replace(
        "ProtectClock=yes", "ProtectClok=yes"))
    said = _analyze(kind, "verify", str(bad), tmp=tmp_path)
    assert "Unknown key" in said.stdout + said.stderr


@pytest.mark.parametrize("kind", ["system", "user"])
def test_the_unit_is_hardened(kind: str, tmp_path: Path) -> None:
    done = _analyze(kind, "security", "--offline=yes", str(UNITS[kind]), tmp=tmp_path)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= MAX_SCORE[kind], done.stdout
    failed = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("✗")}
    # what swapd needs, each said in the unit's comments: the network (the dashboard), the
    # GPU's devices and /proc files, writable executable memory (torch's and CUDA's JIT)
    assert "MemoryDenyWriteExecute=" in failed and "SystemCallFilter=~@privileged" not in failed
    assert not {f for f in failed if f.startswith(("NoNewPrivileges", "RestrictNamespaces",
                                                   "ProtectKernel", "UMask", "ProtectSystem",
                                                   "LockPersonality"))}


def _sandboxed(*overrides: str) -> list[str]:
    """The command prefix that runs a program under the system unit's process restrictions
    (with its directives overridden by ``overrides``, KEY=VALUE) and no capabilities."""
    require_tools("setpriv", "systemd-analyze")
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True)
    if probe.returncode != 0:
        message = "needs the system's python3 with seccomp (apt install python3-seccomp)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs",
            SYSTEM_PYTHON, str(SANDBOX), str(UNITS["system"]), *overrides, "--"]


PROBE = """
import os, socket, subprocess, sys
import onnxruntime, torch
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
    print("netlink allowed")
except OSError as exc:
    print("netlink refused:", exc.errno)
try:
    os.chroot("/")
    print("chroot allowed")
except OSError as exc:
    print("chroot refused:", exc.errno)
print("umask", oct(os.umask(0)))
try:
    # (a convolution large enough for oneDNN's compiled kernels; a tiny one may not use them)
    torch.nn.Conv2d(3, 16, 3)(torch.randn(4, 3, 64, 64)).square().mean().backward()
    print("torch ok")
except RuntimeError as exc:
    print("torch failed:", exc)
try:  # numba's JIT (warp_to_landmarks' map) compiles into executable memory as well
    from swapd.faces.landmarks import MEAN_FACE_2D_68
    from swapd.trainer.warp_landmarks import landmark_maps
    face = MEAN_FACE_2D_68 * 45 + 10
    map_x, _ = landmark_maps(face, face + 1, 64)
    print("numba ok", round(float(map_x[32, 32]), 1))
except Exception as exc:
    print("numba failed:", exc)
done = subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:d=1",
                       "-c:v", "libx264", "-f", "null", "-"], capture_output=True, text=True)
print("ffmpeg", done.returncode, done.stderr.strip()[-200:])
"""


def test_torch_and_ffmpeg_run_under_the_units_filter_and_not_without_jit_memory() -> None:
    require_tools("ffmpeg")
    run = subprocess.run([*_sandboxed(), sys.executable, "-c", PROBE], capture_output=True,
                         text=True, timeout=300)
    said = run.stdout + run.stderr
    assert run.returncode == 0, said
    assert "netlink refused: 1" in said and "chroot refused: 1" in said  # the filter bites
    assert "umask 0o77" in said
    assert "torch ok" in said and "ffmpeg 0 " in said and "numba ok" in said, said
    # MemoryDenyWriteExecute=yes breaks torch's CPU kernels (oneDNN compiles them at run
    # time): the reason the unit leaves it off. If this starts passing, turn it on.
    run = subprocess.run([*_sandboxed("MemoryDenyWriteExecute=yes"), sys.executable, "-c",
                          PROBE], capture_output=True, text=True, timeout=300)
    assert "torch failed: could not create a primitive" in run.stdout, run.stdout + run.stderr


@pytest.mark.slow  # the service's first export and merge: about 2 minutes on 2 cores
def test_the_service_trains_exports_and_merges_under_the_units_filter(
        service, synthetic_sets, synthetic_clip, tmp_path: Path) -> None:
    require_tools("ffmpeg", "ffprobe")
    from swapd.state import StateStore

    ws = tmp_path / "ws"
    svc = start_with_face_sets(service, synthetic_sets, ws, tuple(_sandboxed()))
    (ws / "jobs" / "tiny.toml").write_text(TINY_JOB.format(iterations=0, save_every=20))
    (ws / "footage" / "tiny").mkdir(parents=True, exist_ok=True)
    shutil.copy(synthetic_clip, ws / "footage" / "tiny" / "clip.mp4")
    store = StateStore(ws / ".swapd" / "state.db", readonly=True)
    merged = wait_for(lambda: store.latest_artifact("tiny", "merge"), 400, "a merged clip",
                      svc.process)
    assert Path(merged.path).is_file()
    assert oct((ws / "models" / "tiny" / "model.pt").stat().st_mode & 0o777) == "0o600"
    store.close()
    code, _ = svc.terminate()
    assert code == 0, svc.log()[-3000:]
    assert "Operation not permitted" not in svc.log()


@pytest.mark.slow  # boots a systemd, trains a demo job, exports and merges: about 1 min
@pytest.mark.parametrize("kind", ["system", "user"])
def test_the_hardened_unit_starts_trains_merges_and_stops_under_a_real_systemd(
        kind: str, tmp_path: Path) -> None:
    """scripts/systemd_check.py: systemd as PID 1 in namespaces of its own, the unit as it
    ships (the user unit under the swapd user's user manager), the demo job trained, exported
    and merged under it, a clean `systemctl stop`."""
    require_tools("unshare", "nsenter", "systemctl", "ip", "dbus-daemon", "runuser")
    out = tmp_path / "systemd_check.json"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "systemd_check.py"),
                           *(["--user"] if kind == "user" else []),
                           "--iterations", "30", "--timeout", "600", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    if done.returncode == 77:  # the machine (not root, no namespaces), not the unit: say so
        pytest.skip(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads(out.read_text())
    assert found["problems"] == []
    assert found["job"]["state"] == "done" and found["job"]["iteration"] >= 30
    assert found["verdict"].startswith("MARKED as synthetic media")
    assert "disagree" not in found["verdict"]
    assert found["after_stop"] == {"Result": "success", "ExecMainStatus": "0",
                                   "NRestarts": "0", "ActiveState": "inactive"}
    score = float(re.search(r"exposure level for swapd.service: ([\d.]+)",
                            found["security"][-1]).group(1))
    assert score <= MAX_SCORE[kind]  # the loaded unit, as systemd itself scores it
    if kind == "system":  # the unit's IPAddressDeny=any, IPAddressAllow=localhost
        assert found["ip_firewall"]["127.0.0.1"] == "111"  # through (nothing listens)
        assert found["ip_firewall"]["10.9.9.9"] in ("1", "timeout")  # dropped

"""Boot a real systemd, start swapd's hardened unit under it and train a demo job there.

    sudo .venv/bin/python scripts/systemd_check.py [--user] [--unit UNIT]
        [--iterations 40] [--timeout 900] [--out test-artifacts/systemd_check.json]

Where no systemd runs as PID 1 (a container, CI), one can still boot in namespaces of its own:
``unshare`` gives it a PID namespace (where it is PID 1), a mount namespace and a network
namespace, and inside them private ``/tmp``, ``/run``, ``/var/lib``, ``/var/log`` and
``/opt``: nothing it does touches the machine's own files, services or ports. There the unit
file is installed as it ships (not one directive changed), with what it expects around it: a
``swapd`` user (a private copy of /etc/passwd), ``/opt/swapd`` as a venv of the system's
Python 3 holding swapd's installed packages and the landmark model, and
``/var/lib/swapd/workspace`` with the demo's synthetic faces, clip and a job cut to
``--iterations``. With ``--user`` the user unit goes in that user's ``~/.config/systemd/user``
and runs under its own user manager (``user@.service``, with D-Bus and logind), on the
default workspace in its home.

Then: ``systemctl start`` (Type=notify: it returns once swapd says it is ready), the job
trains, saves, exports and merges the clip (torch, onnxruntime and ffmpeg under the unit's
system-call filter, capabilities and namespaces); the merged file is checked for its marks;
``systemd-analyze security`` scores the loaded unit; ``systemctl stop`` must end it cleanly
(SIGTERM, exit 0, no restart). A JSON summary goes to ``--out``; the exit status is 0 when all
of it held, 1 when something did not, 77 when this machine cannot boot a systemd (not root,
no systemd, no namespaces, or it did not come up), saying why.

The unit's IP firewall (``IPAddressDeny=any``, ``IPAddressAllow=localhost``) is probed the same
way, under a transient service with those two properties: localhost reachable, another
address of the namespace dropped (its connect times out; 111, refused, without them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
UID = 990  # the swapd user's, inside
SYSTEM_WORKSPACE = "/var/lib/swapd/workspace"  # the system unit's --workspace
USER_WORKSPACE = "/var/lib/swapd/.local/share/swapd"  # the user unit's: the default, in its home
SKIP = 77
PY = f"python{sys.version_info.major}.{sys.version_info.minor}"

# Run by bash as the new namespaces' first process; ends by becoming systemd (PID 1 there).
INNER = r"""
set -euo pipefail
mount --make-rprivate /
# The repository and the venv may lie under a folder about to be hidden (a clone in /tmp):
# hold them aside first, and put them back at their own paths after.
mount -t tmpfs -o mode=755 tmpfs /opt
mkdir -p /opt/.hold/repo /opt/.hold/prefix
mount --bind "$REPO" /opt/.hold/repo
mount --bind "$PREFIX" /opt/.hold/prefix
for d in /tmp:1777 /run:755 /var/lib:755 /var/log:755; do
    mount -t tmpfs -o mode="${d#*:}" tmpfs "${d%%:*}"
done
mkdir -p "$REPO" "$PREFIX"
mount --bind /opt/.hold/repo "$REPO"
mount --bind /opt/.hold/prefix "$PREFIX"
ip link set lo up
ip addr add 10.9.9.9/32 dev lo  # an address that is not localhost, for the firewall probe
mkdir -p /run/systemd/system /run/swapd-etc /var/lib/swapd /opt/swapd/bin \
    "/opt/swapd/lib/$PY/site-packages"
cp /etc/passwd /etc/group /etc/shadow /run/swapd-etc/
echo "swapd:x:$SWAPD_UID:$SWAPD_UID:swapd:/var/lib/swapd:/usr/sbin/nologin" >> /run/swapd-etc/passwd
echo "swapd:x:$SWAPD_UID:" >> /run/swapd-etc/group
echo "swapd:!:20000::::::" >> /run/swapd-etc/shadow  # (PAM wants one, for the user manager)
for f in passwd group shadow; do mount --bind "/run/swapd-etc/$f" "/etc/$f"; done
# /opt/swapd: a venv of the system's Python holding swapd's packages (as an install would be)
ln -s "/usr/bin/$PY" /opt/swapd/bin/python
printf 'home = /usr/bin\ninclude-system-site-packages = false\n' > /opt/swapd/pyvenv.cfg
mount --bind "$PREFIX/lib/$PY/site-packages" "/opt/swapd/lib/$PY/site-packages"
if [ -d "$PREFIX/share/swapd" ]; then  # the landmark model, where setup-landmarks put it
    mkdir -p /opt/swapd/share/swapd && mount --bind "$PREFIX/share/swapd" /opt/swapd/share/swapd
fi
# swapd's source tree at /opt/swapd/src, first on the path of the service and its workers:
# the venv's editable install points into the repository, which PrivateTmp= hides when it
# lies under /tmp
mkdir -p /opt/swapd/src && mount --bind "$REPO" /opt/swapd/src
cat > /opt/swapd/bin/swapd <<'SHIM'
#!/opt/swapd/bin/python
import os
import sys
os.environ["PYTHONPATH"] = "/opt/swapd/src"
sys.path.insert(0, "/opt/swapd/src")
from swapd.cli import main
sys.exit(main())
SHIM
chmod 755 /opt/swapd/bin/swapd
if [ "$USER_UNIT" = 0 ]; then cp "$UNIT" /run/systemd/system/swapd.service; fi
# Boot into a target with nothing in it, and keep away what the machine's own units would
# start beside swapd (its database, mDNS, udev, sysctl and module loading).
printf '[Unit]\nDescription=swapd check\nDefaultDependencies=no\n' \
    > /run/systemd/system/swapd-check.target
for u in postgresql.service avahi-daemon.service avahi-daemon.socket e2scrub_reap.service \
         systemd-modules-load.service systemd-sysctl.service systemd-udevd.service \
         systemd-udev-trigger.service systemd-remount-fs.service; do
    ln -sf /dev/null "/run/systemd/system/$u"
done
exec env container=other /usr/bin/systemd --system --unit=swapd-check.target
"""


class Booted:
    """The namespaces and the systemd in them; commands run inside with nsenter."""

    def __init__(self, unit: Path, log: Path, user: bool) -> None:
        env = {**os.environ, "UNIT": str(unit), "PREFIX": sys.prefix, "PY": PY,
               "REPO": str(REPO),
               "USER_UNIT": str(int(user)), "SWAPD_UID": str(UID)}
        # the user unit is the swapd user's, under its own user manager
        self.ctl = (["runuser", "-u", "swapd", "--", "env", f"XDG_RUNTIME_DIR=/run/user/{UID}",
                     "systemctl", "--user"] if user else ["systemctl"])
        self.workspace = USER_WORKSPACE if user else SYSTEM_WORKSPACE
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--mount-proc", "--net", "--kill-child",
             "bash", "-c", INNER], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = 0

    def wait_running(self, timeout: float) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                return f"exited {self.process.returncode}"
            found = subprocess.run(["pgrep", "-P", str(self.process.pid), "-x", "systemd"],
                                   capture_output=True, text=True).stdout.split()
            if found:
                self.pid = int(found[0])
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return state
            time.sleep(0.5)
        return "timed out"

    def run(self, *argv: str, check: bool = True, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", "-n", "--", *argv],
                              capture_output=True, text=True, check=check, timeout=timeout)

    def path(self, inside: str) -> Path:
        """A path inside, seen from here (through systemd's root in /proc)."""
        return Path(f"/proc/{self.pid}/root{inside}")

    def show(self, *props: str) -> dict[str, str]:
        out = self.run(*self.ctl, "show", "swapd", *(f"-p{p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # --kill-child: everything in the namespaces goes with it
            self.process.wait(30)
        self.log.close()


PROBE = """
import socket
for host in ("127.0.0.1", "10.9.9.9"):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, 9))
        print(host, "connected")
    except OSError as e:
        print(host, e.errno or "timeout")
"""


def firewall(booted: Booted, unit: Path) -> dict[str, str]:
    """Connect to localhost and to another address of this namespace under the unit's own
    IPAddressDeny=/IPAddressAllow= (as a transient service): refused by the peer (nothing
    listens: ECONNREFUSED, 111) where the firewall lets it through; dropped (a timeout) or
    EPERM (1) where it does not."""
    properties = [f"-p{line.strip()}" for line in unit.read_text().splitlines()
                  if line.startswith(("IPAddressDeny=", "IPAddressAllow="))]
    booted.run("systemctl", "start", "dbus.socket")  # (systemd-run asks over D-Bus)
    done = booted.run("systemd-run", "--wait", "--pipe", "--quiet", *properties,
                      f"/usr/bin/{PY}", "-c", PROBE, check=False, timeout=60)
    found = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    return found or {"systemd-run": done.stderr.strip()}


def cannot_boot() -> str | None:
    """Why this machine cannot boot a systemd in namespaces, or None."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux"
    for tool in ("unshare", "nsenter", "systemctl", "ip", "dbus-daemon"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/usr/bin/systemd").exists():
        return "/usr/bin/systemd is not installed (Debian's systemd package)"
    if not Path(f"/usr/bin/{PY}").exists():
        return f"/usr/bin/{PY} (the system's Python, for /opt/swapd) is not installed"
    tried = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--net", "true"],
                           capture_output=True, text=True)
    if tried.returncode:
        return f"no namespaces here: {tried.stderr.strip()}"
    return None


def make_workspace(booted: Booted, iterations: int, user_unit: Path | None) -> None:
    """The demo's workspace where the unit expects it; for the user unit, also the unit in
    the user's systemd folder and its venv where its ExecStart looks (%h/.local/share)."""
    script = ("from swapd.workspace import Workspace\n"
              "from swapd.demo.workspace import create_demo_workspace\n"
              f"ws = Workspace.open({booted.workspace!r})\n"
              f"create_demo_workspace(ws, iterations={iterations})\n")
    booted.run("/opt/swapd/bin/python", "-c", script, timeout=600)
    if user_unit is not None:
        booted.run("mkdir", "-p", "/var/lib/swapd/.config/systemd/user")
        booted.run("cp", str(user_unit), "/var/lib/swapd/.config/systemd/user/swapd.service")
        booted.run("ln", "-s", "/opt/swapd", "/var/lib/swapd/.local/share/swapd-venv")
    booted.run("chown", "-R", "swapd:swapd", "/var/lib/swapd")
    if user_unit is not None:  # its user manager, as a login would start it
        for unit in ("dbus.socket", "systemd-logind.service", f"user@{UID}.service"):
            booted.run("systemctl", "start", unit)


STATE = """
import json
import sys
from swapd.state import StateStore
store = StateStore(sys.argv[1] + "/.swapd/state.db", readonly=True)
row, merge, export = (store.job("demo"), store.latest_artifact("demo", "merge"),
                      store.latest_artifact("demo", "export"))
print(json.dumps({} if row is None else {
    "state": row.state, "iteration": row.iteration, "error": row.error,
    "export": export.path if export else None, "merged": merge.path if merge else None,
    "problems": [f"{p.source}: {p.message}" for p in store.problems()]}))
"""


def job_state(booted: Booted) -> dict[str, Any]:
    """The demo job's state, and the export and merged file the service recorded (their
    paths inside), read inside (the database's WAL wants its own mount namespace)."""
    read = booted.run("/opt/swapd/bin/python", "-c", STATE, booted.workspace, check=False,
                      timeout=60)
    return json.loads(read.stdout) if read.returncode == 0 and read.stdout.strip() else {}


def check(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from swapd.merger.provenance import verify_file
    from swapd.merger.verdict import verdict_line  # (the one line of `swapd verify`)

    found: dict[str, Any] = {"unit": str(args.unit), "problems": []}
    problems: list[str] = found["problems"]
    booted = Booted(args.unit.resolve(), work / "systemd.log", args.user)
    try:
        found["system"] = booted.wait_running(120)
        if found["system"] not in ("running", "degraded"):
            return found
        make_workspace(booted, args.iterations, args.unit.resolve() if args.user else None)
        started = time.monotonic()
        start = booted.run(*booted.ctl, "start", "swapd", check=False)
        found["seconds_to_ready"] = round(time.monotonic() - started, 1)
        if start.returncode:
            problems.append(f"systemctl start failed: {start.stderr.strip()}")
            return found
        analyze = (booted.ctl[:-2] + ["systemd-analyze", "--user"] if args.user
                   else ["systemd-analyze"])
        found["security"] = booted.run(*analyze, "security", "swapd", "--no-pager",
                                       check=False).stdout.strip().splitlines()[-1:]
        end, state = time.monotonic() + args.timeout, {}
        while time.monotonic() < end:
            state = job_state(booted)
            if (state.get("state") == "done" and state.get("merged")) or state.get("problems"):
                break
            if booted.show("ActiveState")["ActiveState"] != "active":
                problems.append("the service stopped by itself")
                break
            time.sleep(5)
        found["job"], found["seconds_to_done"] = state, round(time.monotonic() - started)
        problems += [f"the service reported {p}" for p in state.get("problems", [])]
        if state.get("state") != "done":
            problems.append(f"the job did not finish: {state}")
        if not state.get("export") or not booted.path(state["export"]).is_file():
            problems.append("no ONNX export")
        if not state.get("merged"):
            problems.append("no merged output")
        else:
            result = verify_file(booted.path(state["merged"]))
            found["verdict"] = verdict_line(result)
            if not result.marked:
                problems.append(f"the merged file is not marked: {found['verdict']}")
        stop = booted.run(*booted.ctl, "stop", "swapd", check=False, timeout=120)
        shown = booted.show("Result", "ExecMainStatus", "NRestarts", "ActiveState")
        found["after_stop"] = shown
        if stop.returncode or shown["Result"] != "success" or shown["ExecMainStatus"] != "0":
            problems.append(f"did not stop cleanly: {shown}")
        if shown["NRestarts"] != "0":
            problems.append(f"systemd restarted it {shown['NRestarts']} times")
        journal = booted.run("journalctl", "--no-pager", "-o", "cat",
                             "_SYSTEMD_USER_UNIT=swapd.service" if args.user
                             else "_SYSTEMD_UNIT=swapd.service", check=False).stdout
        (work / "journal.txt").write_text(journal)
        found["journal_tail"] = journal.splitlines()[-6:]
        boot = booted.run("journalctl", "-b", "--no-pager", "-o", "cat", check=False).stdout
        (work / "boot_journal.txt").write_text(boot)
        if args.user:  # (a user manager has no IP firewall to give: the unit sets none)
            return found
        found["ip_firewall"] = firewall(booted, args.unit)
        wall = found["ip_firewall"]  # nothing listens: localhost refuses; the other is dropped
        if wall.get("127.0.0.1") != "111" or wall.get("10.9.9.9") not in ("1", "timeout"):
            problems.append(f"the unit's IP firewall did not hold: {found['ip_firewall']}")
        return found
    finally:
        booted.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", action="store_true", help="the user unit, under the "
                        "swapd user's own user manager (default: the system unit)")
    parser.add_argument("--unit", type=Path, help="default: systemd/swapd.service, or "
                        "systemd/swapd-user.service with --user")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--out", type=Path, default=REPO / "test-artifacts" /
                        "systemd_check.json")
    args = parser.parse_args()
    args.unit = args.unit or REPO / "systemd" / ("swapd-user.service" if args.user
                                                 else "swapd.service")
    why = cannot_boot()
    if why:
        print(f"cannot boot a systemd here: {why}")
        return SKIP
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="swapd-systemd-") as tmp:
        found = check(args, Path(tmp))
        logs = args.out.parent / "systemd_check"
        shutil.rmtree(logs, ignore_errors=True)
        shutil.copytree(tmp, logs)
    args.out.write_text(json.dumps(found, indent=2) + "\n")
    print(json.dumps(found, indent=2))
    if found.get("system") not in ("running", "degraded"):  # the machine, not the unit
        print(f"cannot boot a systemd here: it did not come up ({found.get('system')}); "
              f"its log: {logs / 'systemd.log'}")
        return SKIP
    return 1 if found["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

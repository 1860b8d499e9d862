#!/usr/bin/env bash
# Create or refresh swapd's virtual environment (.venv) and the system tools it uses.
#   scripts/setup.sh            runtime + test dependencies (CPU: torch pinned by constraints.txt)
#   scripts/setup.sh --gpu      also swap onnxruntime for onnxruntime-gpu (the two cannot coexist)
#   scripts/setup.sh --dlib     also the optional dlib plugin (its 68-point model is licensed for
#                               non-commercial use only; the tests install it to test the plugin)
# Every run also makes sure the default 68-point landmark model is there (once: pip downloads
# the mediapipe 0.10.21 wheel, without its dependencies, and swapd converts the Apache-2.0 face
# mesh model inside it to ONNX in .venv/share/swapd/models; swapd never downloads at run time).
# System packages (Debian/Ubuntu, installed when run as root or with passwordless sudo):
#   ffmpeg (ffprobe for tests; swapd itself falls back to imageio-ffmpeg's ffmpeg),
#   chromium + chromium-driver (the dashboard's browser test),
#   strace (the test that watches saves fsync in order),
#   systemd (systemd-analyze for the units' verify and security tests, and the systemd that
#   scripts/systemd_check.py boots in namespaces of its own; nothing of it runs on the machine
#   itself unless systemd is the init) and python3-seccomp (the
#   system python's libseccomp binding: scripts/unit_sandbox.py applies the units' system-call
#   filter by hand where systemd cannot start them); dbus-daemon and iproute2 for
#   scripts/systemd_check.py, which boots a systemd in namespaces of its own and starts the
#   unit there (nothing outside them is touched).
set -euo pipefail
cd "$(dirname "$0")/.."

GPU=0
EXTRAS="test"
for arg in "$@"; do
    case "$arg" in
        --gpu) GPU=1 ;;
        --dlib) EXTRAS="test,dlib" ;;
        *) echo "setup: unknown option $arg" >&2; exit 2 ;;
    esac
done
PYTHON="${PYTHON:-python3}"

"$PYTHON" - <<'PY' || { echo "swapd needs Python 3.11 or newer" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

missing=()
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
/usr/bin/python3 -c "import seccomp" >/dev/null 2>&1 || missing+=(python3-seccomp)
command -v dbus-daemon >/dev/null 2>&1 || missing+=(dbus-daemon)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if ((${#missing[@]})); then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        if [[ $(id -u) -ne 0 ]]; then
            if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=""; fi
        fi
        if [[ $(id -u) -eq 0 || -n "$SUDO" ]]; then
            echo "setup: installing ${missing[*]} (Debian packages)"
            $SUDO apt-get update -qq
            lean=() plain=()  # systemd without what it recommends (dbus, ...): only its
            for package in "${missing[@]}"; do  # systemd-analyze is wanted
                if [[ $package == systemd ]]; then lean+=("$package"); else plain+=("$package"); fi
            done
            if ((${#plain[@]})); then
                DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${plain[@]}" >/dev/null
            fi
            if ((${#lean[@]})); then
                DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
                    --no-install-recommends "${lean[@]}" >/dev/null
            fi
        else
            echo "setup: please install ${missing[*]} (apt-get install ${missing[*]})" >&2
        fi
    else
        echo "setup: please install ${missing[*]} with your package manager" >&2
    fi
fi

[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
# Reinstall only when the dependency list changed since the last setup.
stamp=.venv/.swapd-setup
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1) gpu=$GPU extras=$EXTRAS"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[$EXTRAS]"
    if ((GPU)); then
        .venv/bin/python -m pip uninstall -y -q onnxruntime
        .venv/bin/python -m pip install -q -c constraints.txt -e ".[gpu]"
    fi
    echo "$want" > "$stamp"
fi
.venv/bin/swapd faces setup-landmarks
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, onnxruntime; print("torch", torch.__version__, "onnxruntime", onnxruntime.__version__)'))"

#!/usr/bin/env bash
# Set up (scripts/setup.sh, with the optional dlib plugin so its tests run), lint, then run
# the tests. Extra arguments go to pytest
# (e.g. `scripts/test.sh -m slow` for the long ones).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dlib
.venv/bin/ruff check --no-cache swapd tests benchmarks
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the demo: a synthetic workspace in ./demo-workspace,
# the service in the foreground, the dashboard at http://127.0.0.1:8050. Ctrl-C stops it;
# running this again resumes training where it stopped. Extra arguments go to `swapd demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/swapd demo "$@"

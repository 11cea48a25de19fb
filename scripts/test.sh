#!/usr/bin/env bash
# Sets everything up (packages, .venv, dockerd) and runs the whole test suite.
# Extra arguments go to pytest, e.g. bash scripts/test.sh -k config
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$repo/scripts/setup.sh"
cd "$repo"
exec python -m pytest "$@"

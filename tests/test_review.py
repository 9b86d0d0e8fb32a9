"""The adversarial review's reproductions (/work/shared/review, of the first protocol at 39145fd),
adapted to assert the fixed behaviour: tests/review/<finding>_*.py, one MPI program each, run
under `mpiexec ... python -m mpi4py` (an exception on any rank aborts the job) with a hard
timeout, on the transports where each applies.  tests/review/README.md maps findings to scripts.

RDQ_REVIEW_AGAINST=/path/to/another/tree runs the same scripts against that tree's rdq (built
for this environment's MPI), e.g. a worktree of 39145fd, where each of them should fail.
"""
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from mpirun import launch, mpiexec_command
from test_mpi import TRANSPORTS

REVIEW = Path(__file__).resolve().parent / "review"
AGAINST = os.environ.get("RDQ_REVIEW_AGAINST")
# the shared-memory transport and the network path; rma forced on one node is the same protocol
# as the network path (tests/test_mpi.py runs it everywhere), so the review runs where it differs
ALL = ("shm", "network")
LOCAL = ("shm",)

# (finding, script, ranks, transports, extra arguments)
CASES = [
    ("F1", "f1_two_consumer_threads.py", 2, ALL, ()),
    ("F1", "f1_two_consumer_threads.py", 2, LOCAL, ("--gc",)),
    ("F2", "f2_double_close.py", 3, ALL, ()),
    ("F2", "f2_close_while_put.py", 2, ALL, ()),
    ("F3", "f3_release_other_thread.py", 2, ALL, ()),
    ("F4", "f4_release_after_free.py", 1, ALL, ()),
    ("F5", "f5_explicit_finalize.py", 2, ALL, ()),
    ("F5", "f5_dataset_finalize.py", 2, ("network",), ()),
    ("F6", "f6_strided_batch_consumers.py", 1, LOCAL, ()),
    ("F8", "f8_bounded_waits_owner_away.py", 2, ("network",), ()),
    ("F9", "f9_get_all_held.py", 1, LOCAL, ()),
    ("S3", "s3_shm_wait_serves_rma.py", 2, ("shm", "network"), ()),   # each queue names its transport
    ("S6", "s6_interrupts.py", 3, ALL, ()),
]


def review_env(transport):
    env = dict(TRANSPORTS[transport])
    if AGAINST:
        env["PYTHONPATH"] = AGAINST
    return env


def check(finding, cmd, transport, timeout=60):
    out, failure = launch(cmd, timeout, env=review_env(transport))
    assert failure is None, f"{finding} [{transport}]: {failure}\n{out[-5000:]}"
    assert f"{finding} ok" in out, f"{finding} [{transport}]: no '{finding} ok' line\n{out[-5000:]}"
    return out


@pytest.mark.parametrize("finding, script, n, transport, args", [
    pytest.param(finding, script, n, transport, args,
                 id=f"{script[:-3]}{''.join(args)}-{transport}")
    for finding, script, n, transports, args in CASES for transport in transports])
def test_review_finding(finding, script, n, transport, args):
    if script == "f5_dataset_finalize.py":
        pytest.importorskip("torch")
    cmd = mpiexec_command(n) + [sys.executable, "-m", "mpi4py", str(REVIEW / script), *args]
    check(finding, cmd, transport)


@pytest.mark.parametrize("transport", ("shm", "rma", "network"))   # rma on one node: MPI's /dev/shm
def test_review_f7_small_dev_shm(transport):
    """F7 in a mount namespace of the job's own with a 40 MB /dev/shm (the review's size): a 48 MiB
    queue is refused on every rank or, where its memory is not in /dev/shm, works; never SIGBUS."""
    unshare = shutil.which("unshare")
    assert unshare, "this test needs unshare(1) (util-linux) to give the job a small /dev/shm"
    job = shlex.join(mpiexec_command(2) + [sys.executable, "-m", "mpi4py", str(REVIEW / "f7_small_dev_shm.py")])
    cmd = [unshare, "-m", "sh", "-c", f"mount -t tmpfs -o size=40m tmpfs /dev/shm && exec {job}"]
    check("F7", cmd, transport)

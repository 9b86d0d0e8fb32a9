"""Failures and resource limits: a failing rank ends the whole job promptly, nothing hangs, nothing leaks.

Programs run under `python -m mpi4py`, which calls MPI_Abort when any rank
raises (README, "Failures").  The Queue's `with` block does not call the
collective free() on the way out of an exception, which would otherwise wait
for ranks that never come.
"""
import sys
import time

import pytest

from mpirun import SCENARIOS, launch, mpiexec_command, run_scenario
from test_mpi import TRANSPORTS


@pytest.mark.parametrize("who", ["producer", "consumer"])
@pytest.mark.parametrize("transport", ["shm", "rma"])
def test_exception_on_one_rank_aborts_the_job(who, transport):
    cmd = mpiexec_command(3) + [sys.executable, "-m", "mpi4py", str(SCENARIOS), "fail", who]
    t0 = time.monotonic()
    out, failure = launch(cmd, timeout=60, env={"RDQ_TRANSPORT": transport})
    assert failure is not None and "TIMEOUT" not in failure, f"{failure}\n{out[-3000:]}"
    assert time.monotonic() - t0 < 30
    rank = 0 if who == "producer" else 2
    assert f"{who} rank {rank} failed on purpose" in out


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_thousands_of_queues_and_no_leaks(transport):
    """2000 queues alive at once on 2 ranks (MPICH allows about 2040 windows per process: one
    context id each), then 3000 made and freed: no file descriptor or memory growth."""
    out = run_scenario("resources", 2, 2000, timeout=180, env=TRANSPORTS[transport])
    assert "fds" in out


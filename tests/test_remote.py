"""The multi-ring protocol under mpiexec (docs/protocol.md): rings that fill while others flow,
an owner that computes while producers put, capacity per producer, and what a message costs in
MPI calls, counted by MPI itself through a PMPI shim."""
import subprocess
import sys
from pathlib import Path

import pytest

from mpirun import run_scenario
from test_mpi import transport_env  # noqa: F401  (the fixture: shm, rma, network)

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("n", [2, 4])
def test_full_ring_while_others_flow(n, transport_env):
    run_scenario("full_ring_others_flow", n, env=transport_env)


@pytest.mark.parametrize("n", [2, 3])
def test_owner_computing_does_not_stall_producers(n, transport_env):
    out = run_scenario("owner_computes", n, env=transport_env)
    assert "longest put" in out


@pytest.mark.parametrize("n", [1, 5])
def test_more_producers_than_capacity(n, transport_env):
    run_scenario("more_producers_than_capacity", n, env=transport_env)


@pytest.mark.parametrize("n", [2, 4])
def test_batches_mix_producers_rather_than_wait(n, transport_env):
    run_scenario("lockstep_batches", n, env=transport_env)


@pytest.mark.parametrize("n", [2, 3])
def test_puts_with_more(n, transport_env):
    """put(more=True): flush(), a put without more and close() each complete the staged run."""
    run_scenario("more", n, env=transport_env)


def test_stream_with_more(transport_env):
    """Runs of put(more=True) of random length through wrap-arounds, held views, a consumer that
    releases in random order, and a close() from another thread: exactly once, in order, intact."""
    out = run_scenario("stream", 4, "--kind", "raw", "--seconds", 2, "--capacity", 5, "--hold", 1,
                       "--window", 3, "--more", "--close-race", timeout=120, env=transport_env)
    assert "exactly once, in order, intact" in out


@pytest.fixture(scope="session")
def pmpi_shim(tmp_path_factory):
    """tests/pmpi/mpi_calls.c built with this environment's mpicc."""
    mpicc = Path(sys.executable).with_name("mpicc")
    lib = tmp_path_factory.mktemp("pmpi") / "libmpi_calls.so"
    subprocess.run([str(mpicc if mpicc.exists() else "mpicc"), "-shared", "-fPIC", "-O2", "-o", str(lib),
                    str(HERE / "pmpi" / "mpi_calls.c")], check=True)
    return lib


@pytest.mark.parametrize("more", [False, True])
@pytest.mark.parametrize("nbytes", [64, 65536])
def test_mpi_calls_per_message(nbytes, more, transport_env, pmpi_shim):
    """rma: a message is 2 MPI_Put and 1 MPI_Win_flush (2 above rdq's hashed size), credit is
    read once per round, no MPI atomic anywhere; shm: no one-sided MPI call at all.  With
    put(more=True) a run of 32 messages of 64 B is 2 MPI_Put and 1 flush in all."""
    extra = ["more"] if more else []
    out = run_scenario("mpi_calls", 2, nbytes, *extra, env={**transport_env, "LD_PRELOAD": str(pmpi_shim)})
    assert out.count("MPI saw") == 2
    print(out)

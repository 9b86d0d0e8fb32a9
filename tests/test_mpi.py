"""Multi-rank scenarios under mpiexec, on both transports (see scenarios.py).

The rma transport is the path remote producers take; on one machine it is
forced with RDQ_TRANSPORT=rma, and additionally through the MPI library's
network path (the `network` transport below): MPICH with MPIR_CVAR_NOLOCAL=1
(its UCX netmod), Open MPI with osc/rdma over the TCP BTL.
"""
import pytest

from mpirun import IS_OPEN_MPI, run_scenario

TRANSPORTS = {
    "shm": {},
    "rma": {"RDQ_TRANSPORT": "rma"},
    "network": ({"RDQ_TRANSPORT": "rma", "OMPI_MCA_osc": "rdma", "OMPI_MCA_btl": "self,tcp"} if IS_OPEN_MPI
                else {"RDQ_TRANSPORT": "rma", "MPIR_CVAR_NOLOCAL": "1"}),
}


@pytest.fixture(params=list(TRANSPORTS))
def transport_env(request):
    return TRANSPORTS[request.param]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("owner", ["first", "last"])
def test_stream_typed(n, owner, transport_env):
    run_scenario("stream", n, "--owner", owner, "--count", 500, "--capacity", 8, "--hold", 2,
                 "--window", 3, env=transport_env)


@pytest.mark.parametrize("n", [2, 4])
def test_stream_raw_varying_sizes(n, transport_env):
    run_scenario("stream", n, "--kind", "raw", "--owner", "last", "--count", 400, "--capacity", 6,
                 "--hold", 2, "--window", 4, env=transport_env)


@pytest.mark.parametrize("n", [2, 4])
def test_wraparound_capacity_one(n, transport_env):
    """Thousands of wrap-arounds through a single slot, several producers."""
    run_scenario("stream", n, "--capacity", 1, "--count", 1500, env=transport_env)


def test_held_views_across_wraparounds(transport_env):
    """Views held until the end pin their slots while producers keep cycling through the rest."""
    run_scenario("stream", 3, "--capacity", 6, "--count", 1500, "--hold", 4, "--window", 1,
                 env=transport_env)


def test_slow_consumer(transport_env):
    run_scenario("stream", 3, "--capacity", 4, "--count", 300, "--window", 2, "--slow-consumer", 0.05,
                 env=transport_env)


@pytest.mark.parametrize("capacity", [1, 7, 4096])
def test_stress_seven_producers_random_sizes(capacity, transport_env):
    """The short form of the soak: 7 ranks on 2 cores, random sizes, random release order, held
    views, a consumer that naps at random; everything checked."""
    hold, window = (0, 1) if capacity == 1 else (2, min(4, capacity - 2))
    out = run_scenario("stream", 7, "--kind", "raw", "--seconds", 3, "--capacity", capacity, "--hold", hold,
                       "--window", window, "--slow-consumer", 0.005, timeout=120, env=transport_env)
    assert "exactly once, in order, intact" in out


def test_release_thread_and_close_races(transport_env):
    """A worker thread of the owner releases (a data loader), and a second thread of each producer
    closes at a random moment while it puts: still exactly once, in order, intact."""
    out = run_scenario("stream", 4, "--kind", "raw", "--seconds", 3, "--capacity", 5, "--hold", 1,
                       "--window", 3, "--release-thread", "--close-race", timeout=120, env=transport_env)
    assert "exactly once, in order, intact" in out


@pytest.mark.parametrize("n", [1, 3])
def test_end_of_stream_slow_producer(n, transport_env):
    run_scenario("eos", n, env=transport_env)


@pytest.mark.parametrize("n", [1, 3])
def test_timeouts_full_and_empty(n, transport_env):
    run_scenario("timeouts", n, env=transport_env)


@pytest.mark.parametrize("n", [2, 4])
def test_natural_owner_loop_ends(n, transport_env):
    """Default producers, views kept past the loop, forgotten close(): the obvious code ends."""
    run_scenario("natural_loop", n, env=transport_env)


@pytest.mark.parametrize("n", [1, 3])
def test_bad_input(n, transport_env):
    run_scenario("bad_input", n, env=transport_env)


@pytest.mark.parametrize("n", [2, 4])
def test_many_queues_different_owners(n, transport_env):
    run_scenario("many_queues", n, env=transport_env)


@pytest.mark.parametrize("n", [1, 3])
def test_torch_views_pin_slots(n, transport_env):
    pytest.importorskip("torch")
    run_scenario("torch_views", n, env=transport_env)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_zero_copy_batches_many_producers(n, transport_env):
    run_scenario("batches", n, env=transport_env)


@pytest.mark.parametrize("n", [3, 4])
def test_two_trainers_with_gloo(n, transport_env):
    pytest.importorskip("torch")
    run_scenario("trainers", n, env=transport_env)

"""rdq.ReplayBuffer: single-process tests on MPI.COMM_SELF, and the multi-rank scenarios of
replay_scenarios.py under mpiexec on every transport."""
import gc
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

import rdq
from mpirun import run_scenario
from test_mpi import TRANSPORTS
from test_remote import pmpi_shim  # noqa: F401  (a fixture)

SCRIPT = Path(__file__).with_name("replay_scenarios.py")


@pytest.fixture(params=list(TRANSPORTS))
def transport_env(request):
    return TRANSPORTS[request.param]


def test_policies_errors_and_counts(transport_env):
    run_scenario("replay", 3, env=transport_env, script=SCRIPT, timeout=120)


def test_no_torn_sample_and_no_wait(transport_env):
    out = run_scenario("replay_hammer", 3, env=transport_env, script=SCRIPT, timeout=120)
    assert "intact while" in out


@pytest.mark.parametrize("transport", ["rma", "network"])
def test_failed_put_never_hangs_a_sample(transport, pmpi_shim):  # noqa: F811
    out = run_scenario("replay_put_error", 2, script=SCRIPT,
                       env={**TRANSPORTS[transport], "LD_PRELOAD": str(pmpi_shim), "RDQ_FAIL_FLUSH": "10"})
    assert "skip the slot whose write failed" in out


def make(policy="reservoir", capacity=4, seed=3):
    # one rank: the owner is the only producer, so it puts and samples
    return rdq.ReplayBuffer(MPI.COMM_SELF, capacity=capacity, shape=(2, 2), dtype="float32",
                            policy=policy, seed=seed)


def put_many(rb, count):
    return [rb.put(np.full((2, 2), i, np.float32)) for i in range(count)]


def test_never_waits_and_skips_by_the_reservoir():
    rb = make()
    kept = put_many(rb, 200)           # 50 x the capacity: a FIFO queue would have been full at 4
    assert kept[:4] == [True] * 4 and kept.count(True) < 40
    stats = rb.stats()
    assert stats["inserted"] == kept.count(True) and stats["skipped"] == kept.count(False)
    assert stats["resident"] == 4 and stats["evicted"] == stats["inserted"] - 4
    b = rb.sample(4)
    a = np.asarray(b)
    assert a.shape == (4, 2, 2) and b.copied and list(b.sources) == [0] * 4
    assert sorted(a[:, 0, 0].astype(int).tolist()) == sorted(b.seqs.tolist())
    rb.free()


def test_same_seed_same_choices():
    resident = []
    for _ in range(2):
        rb = make(seed=11)
        put_many(rb, 100)
        resident.append(sorted(rb.sample(4).seqs.tolist()))
        rb.free()
    assert resident[0] == resident[1]


def test_sample_is_a_copy_that_outlives_free():
    rb = make(policy="window")
    put_many(rb, 4)
    a = np.asarray(rb.sample(4))
    before = a.copy()
    put_many(rb, 8)                    # every slot overwritten
    rb.free()
    gc.collect()
    assert np.array_equal(a, before)
    with pytest.raises(rdq.Closed, match="freed"):
        rb.sample(1)


def test_repr_signature_and_type():
    import inspect
    rb = make()
    assert "rdq.ReplayBuffer" in repr(rb) and rb.policy == "reservoir"
    assert "policy" in inspect.signature(rdq.ReplayBuffer).parameters
    assert not isinstance(rb, rdq.Queue) and not hasattr(rb, "get")
    rb.free()


def test_replay_dataset_steps_and_end_of_stream():
    torch = pytest.importorskip("torch")
    from rdq.torch import ReplayDataset
    rb = make(capacity=8)
    put_many(rb, 8)
    loader = torch.utils.data.DataLoader(ReplayDataset(rb, 4, steps=5), batch_size=None)
    batches = list(loader)
    assert len(batches) == 5 and all(t.shape == (4, 2, 2) for t in batches)
    rb.close()                          # end of stream: two passes over 8 resident rows = 4 batches of 4
    assert len(list(ReplayDataset(rb, 4, passes=2))) == 4
    with pytest.raises(ValueError, match="batch_size"):
        ReplayDataset(rb, 9)
    rb.free()


@pytest.mark.parametrize("nbytes, puts, flushes", [(64, 2, 1), (16384, 2, 1), (16384 + 8, 3, 3)])
def test_mpi_calls_per_put_on_rma(nbytes, puts, flushes):
    """What README and docs/replay.md promise: a checked row is two MPI_Put and one flush, a larger
    one a busy stamp, the payload and the stamp, each flushed; a skipped message costs nothing."""
    rb = rdq.ReplayBuffer(MPI.COMM_SELF, capacity=4, shape=nbytes // 8, dtype=np.int64, transport="rma")
    kept = [rb.put(np.full(nbytes // 8, i, np.int64)) for i in range(40)]
    stats = rb.stats()
    assert (stats["mpi_puts"], stats["mpi_flushes"], stats["mpi_gets"]) == \
        (puts * kept.count(True), flushes * kept.count(True), 0)
    b = rb.sample(4)
    assert (np.asarray(b)[:, 0] == b.seqs).all()
    rb.free()

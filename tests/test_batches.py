"""Batches, put-side sampling, PyTorch streaming and groups, in one process on MPI.COMM_SELF."""
import io
import gc
import os
import subprocess
import sys

import numpy as np
import pytest
from mpi4py import MPI

import rdq
from rdq.sampling import Bernoulli, EveryNth, RateLimit

SHAPE = (2, 3)


def typed_queue(capacity=8, **kw):
    return rdq.Queue(MPI.COMM_SELF, capacity=capacity, shape=SHAPE, dtype="float64", name="b", **kw)


def row(i):
    return np.full(SHAPE, i, np.float64)


def test_batch_is_zero_copy_when_k_divides_capacity():
    with typed_queue(capacity=8) as q:
        for lap in range(5):                               # many laps, never a copy
            for i in range(4):
                q.put(row(lap * 4 + i))
            with q.get_batch(4) as b:
                a = np.asarray(b)
                assert a.shape == (4, *SHAPE) and not b.copied and len(b) == 4
                assert a[:, 0, 0].tolist() == [lap * 4 + i for i in range(4)]
                assert b.sources.tolist() == [0] * 4 and b.seqs.tolist() == [lap * 4 + i for i in range(4)]
                del a
        assert q.stats()["batch_copies"] == 0


def test_batch_rows_are_consecutive_slots_of_the_window():
    with typed_queue(capacity=8) as q:
        for i in range(8):
            q.put(row(i))
        b1, b2 = q.get_batch(4), q.get_batch(4)
        a1 = np.asarray(b1)
        # 48-byte rows in 64-byte slots: one strided array over consecutive slots
        assert a1.strides == (64, 24, 8) and a1.ctypes.data % 64 == 0
        assert a1.ctypes.data + 4 * 64 == np.asarray(b2).ctypes.data
        with pytest.raises(BufferError, match="strided"):   # PEP 3118: no padding behind a contiguous request
            io.BytesIO().write(b1)
        assert bytes(b1) == a1.tobytes()                   # bytes() asks for strides and compacts
        assert np.ascontiguousarray(b1).tobytes() == a1.tobytes()
        with pytest.raises(rdq.Full):                      # both batches pin all 8 slots
            q.put(row(9), block=False)
        b2.release()
        for i in range(4):
            q.put(row(10 + i), block=False)
        assert (a1[:, 0, 0] == [0, 1, 2, 3]).all()         # pinned rows untouched
        del a1, b1, b2


def test_batch_copies_when_slots_are_scattered_and_counts_it():
    with typed_queue(capacity=4) as q:
        for i in range(4):
            q.put(row(i))
        msgs = [q.get() for _ in range(4)]
        for i in (2, 0, 3, 1):                             # out of order: the free list is scattered
            msgs[i].release()
        for i in range(4):
            q.put(row(10 + i))
        b = q.get_batch(4)
        assert b.copied and q.stats()["batch_copies"] == 1
        assert np.asarray(b)[:, 0, 0].tolist() == [10, 11, 12, 13]
        assert q.stats()["outstanding"] == 0               # a copied batch gave its slots back at once
        del b


def test_last_batch_is_short_at_end_of_stream():
    with typed_queue(capacity=8) as q:
        for i in range(6):
            q.put(row(i))
        q.close()
        sizes = []
        while True:
            try:
                b = q.get_batch(4)
            except rdq.Closed:
                break
            sizes.append(len(b))
            b.release()
        assert sizes == [4, 2]


def test_batch_timeout_consumes_nothing():
    with typed_queue(capacity=8) as q:
        for i in range(3):
            q.put(row(i))
        with pytest.raises(rdq.Empty, match="fewer than 4 messages"):
            q.get_batch(4, timeout=0.05)
        assert [float(np.asarray(q.get())[0, 0]) for _ in range(3)] == [0, 1, 2]


def test_torch_from_batch_shares_memory():
    torch = pytest.importorskip("torch")
    with typed_queue(capacity=8) as q:
        for i in range(4):
            q.put(row(i))
        b = q.get_batch(4)
        t = torch.from_dlpack(b)
        assert t.shape == (4, *SHAPE) and t.data_ptr() == np.asarray(b).ctypes.data
        assert t[:, 0, 0].tolist() == [0, 1, 2, 3]
        del b, t
        gc.collect()
        assert q.stats()["outstanding"] == 0


@pytest.mark.parametrize("k, error, words", [(0, ValueError, "1 <= k"), (-1, ValueError, "1 <= k"),
                                             (9, ValueError, "capacity"), (2.0, TypeError, "integer")])
def test_bad_batch_sizes(k, error, words):
    with typed_queue(capacity=8) as q:
        with pytest.raises(error, match=words):
            q.get_batch(k)


def test_batch_that_would_wait_forever_is_refused():
    with typed_queue(capacity=4) as q:
        q.put(row(0))
        held = q.get()
        with pytest.raises(ValueError, match="wait forever"):
            q.get_batch(4)
        del held


def test_raw_batches_need_one_size_and_lose_nothing():
    with rdq.Queue(MPI.COMM_SELF, capacity=4, slot_bytes=16) as q:
        for payload in (b"abcd", b"efgh"):
            q.put(payload)
        b = q.get_batch(2)
        assert np.asarray(b).tolist() == [list(b"abcd"), list(b"efgh")]
        b.release()
        q.put(b"ab")
        q.put(b"abc")
        with pytest.raises(ValueError, match="different sizes"):
            q.get_batch(2)
        assert [bytes(q.get()) for _ in range(2)] == [b"ab", b"abc"]


# --- sampling -------------------------------------------------------------------

def test_bernoulli_keeps_its_share_within_a_safe_bound():
    n, p = 20000, 0.1
    with rdq.Queue(MPI.COMM_SELF, capacity=4, slot_bytes=8, sample=Bernoulli(p, seed=7)) as q:
        sent = 0
        for _ in range(n):
            if q.put(b"x"):
                sent += 1
                q.get().release()
        # 6 standard deviations: a false alarm once in about 10^9 runs
        assert abs(sent - n * p) < 6 * (n * p * (1 - p)) ** 0.5
        assert q.stats()["sampled_out"] == n - sent and q.stats()["puts"] == sent


def test_seeded_bernoulli_is_reproducible():
    a, b = Bernoulli(0.5, seed=3), Bernoulli(0.5, seed=3)
    assert [a(None) for _ in range(100)] == [b(None) for _ in range(100)]


def test_every_nth_and_rate_limit():
    every = EveryNth(3)
    assert [every(None) for _ in range(7)] == [True, False, False, True, False, False, True]
    limit = RateLimit(1e-3)   # one token to start with, then one every 1000 s
    assert [limit(None) for _ in range(3)] == [True, False, False]


def test_callable_policy_errors_reach_the_caller_and_send_nothing():
    def picky(x):
        if np.asarray(x).max() > 5:
            raise RuntimeError("bad field")
        return np.asarray(x).var() > 0                     # importance: only fields that vary
    with typed_queue(capacity=4, sample=picky) as q:
        assert q.put(np.arange(6.0).reshape(SHAPE) / 10) is True
        assert q.put(row(1)) is False
        with pytest.raises(RuntimeError, match="bad field"):
            q.put(row(9))
        assert q.stats()["puts"] == 1 and q.stats()["sampled_out"] == 1
        with pytest.raises(ValueError, match="expected shape"):   # bad input is caught before sampling
            q.put(np.zeros((3, 2)))


@pytest.mark.parametrize("policy, words", [
    (lambda: Bernoulli(1.5), "probability"), (lambda: Bernoulli(-0.1), "probability"),
    (lambda: EveryNth(0), "n must be"), (lambda: RateLimit(0), "messages_per_second"),
    (lambda: typed_queue(sample=0.5), "callable"),
])
def test_bad_sampling_arguments(policy, words):
    with pytest.raises((ValueError, TypeError), match=words):
        policy()


# --- PyTorch streaming ----------------------------------------------------------------

def test_dataset_streams_batches_zero_copy_until_end_of_stream():
    torch = pytest.importorskip("torch")
    from rdq.torch import QueueDataset
    with typed_queue(capacity=8) as q:
        for i in range(6):
            q.put(row(i))
        q.close()
        loader = torch.utils.data.DataLoader(QueueDataset(q, batch_size=4), batch_size=None)
        got = [t[:, 0, 0].tolist() for t in loader]
        assert got == [[0, 1, 2, 3], [4, 5]]
        gc.collect()
        assert q.stats()["outstanding"] == 0 and q.stats()["batch_copies"] == 0


def test_dataset_in_a_collating_dataloader_warns():
    """DataLoader's default batch_size=1 copies every tensor: say so, and say the zero-copy way."""
    import warnings
    torch = pytest.importorskip("torch")
    from rdq.torch import QueueDataset
    with typed_queue(capacity=8) as q:
        for i in range(4):
            q.put(row(i))
        with pytest.warns(UserWarning, match=r"DataLoader\(ds, batch_size=None\)"):
            first = next(iter(torch.utils.data.DataLoader(QueueDataset(q))))
        assert first.shape == (1, *SHAPE)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert next(iter(torch.utils.data.DataLoader(QueueDataset(q, batch_size=2), batch_size=None))).shape == (2, *SHAPE)
        del first
        gc.collect()


def test_dataset_refuses_workers_and_bad_arguments():
    torch = pytest.importorskip("torch")
    from rdq.torch import QueueDataset
    with typed_queue(capacity=8) as q:
        with pytest.raises(ValueError, match="batch_size"):
            QueueDataset(q, batch_size=9)
        q.put(row(0))
        q.close()
        loader = torch.utils.data.DataLoader(QueueDataset(q), batch_size=None, num_workers=1,
                                             multiprocessing_context="fork")
        with pytest.raises(Exception, match="num_workers=0"):
            list(loader)


def test_keyed_routing_is_the_same_in_every_process():
    """A key must reach the same trainer from every producer, whatever PYTHONHASHSEED each has."""
    code = "from rdq.group import owner_index; print([owner_index(k, 4) for k in ('a', 'field-7', (1, 2), 9)])"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed, "MPI4PY_RC_INITIALIZE": "0"}).stdout
            for seed in ("1", "2")}
    assert len(outs) == 1 and outs.pop().strip().endswith(", 1]")

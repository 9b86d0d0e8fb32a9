"""`cimport rdq` from a downstream extension compiled at test time (tests/downstream)."""
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

import rdq
from mpirun import run_scenario
from test_mpi import TRANSPORTS

HERE = Path(__file__).resolve().parent


def mpicc():
    local = Path(sys.executable).with_name("mpicc")
    return str(local) if local.exists() else shutil.which("mpicc")


@pytest.fixture(scope="module")
def downstream(tmp_path_factory):
    """Build tests/downstream outside the rdq package, as a user's project would be."""
    build = tmp_path_factory.mktemp("downstream")
    shutil.copytree(HERE / "downstream", build, dirs_exist_ok=True)
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=build,
                          env={**os.environ, "CC": mpicc()}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sys.path.insert(0, str(build))
    import rdq_downstream
    yield build, rdq_downstream
    sys.path.remove(str(build))


def test_nogil_puts_arrive_intact(downstream):
    _, ds = downstream
    with rdq.Queue(MPI.COMM_SELF, capacity=8, shape=(4, 8), dtype=np.int64) as q:
        assert ds.put_fields(q, 5, 0) == 5
        got = [(m.source, m.seq, np.asarray(m)[0, :2].tolist()) for m in q]
        assert got == [(0, s, [0, s]) for s in range(5)]
        assert q.stats()["puts"] == 5


def test_nogil_bad_input_raises_the_python_exceptions(downstream):
    _, ds = downstream
    with rdq.Queue(MPI.COMM_SELF, capacity=2, shape=(4, 8), dtype=np.int64, name="typed") as q:
        with pytest.raises(ValueError, match="NULL pointer"):
            ds.put_null(q)
        with pytest.raises(ValueError, match="messages are 256 bytes"):
            ds.put_bytes(q, np.zeros(100, np.uint8), -1)
        with pytest.raises(TypeError, match="expected dtype int64"):
            ds.put_floats(q, np.zeros((4, 8)))
        with pytest.raises(ValueError, match=r"expected shape \(4, 8\)"):
            ds.put_ints_1d(q, np.zeros(32, np.int64))
        assert q.stats()["puts"] == 0
    with pytest.raises(rdq.RDQError, match="outside the queue's communicator"):
        ds.put_on_none(np.zeros(3, np.int64))
    with pytest.raises(rdq.Closed, match="freed"):
        ds.put_fields(q, 1, 0)


def test_nogil_non_blocking_and_raw(downstream):
    _, ds = downstream
    with rdq.Queue(MPI.COMM_SELF, capacity=1, slot_bytes=8) as q:
        assert ds.put_bytes(q, np.frombuffer(b"abc", np.uint8), 0) == 1
        assert ds.put_bytes(q, np.frombuffer(b"def", np.uint8), 0) == 0      # full: not sent
        assert ds.put_bytes(q, np.frombuffer(b"def", np.uint8), 0.05) == 0   # full until the timeout
        assert bytes(q.get()) == b"abc"
        with pytest.raises(ValueError, match="up to 8 bytes"):
            ds.put_bytes(q, np.zeros(9, np.uint8), 0)


def test_nogil_puts_into_a_replay_buffer(downstream):
    _, mod = downstream
    rb = rdq.ReplayBuffer(MPI.COMM_SELF, capacity=4, shape=3, dtype=np.int64, seed=5)
    codes = mod.put_replay(rb, np.zeros(3, np.int64), 100)   # never waits: 25 x the capacity
    assert list(codes[:4]) == [1] * 4 and set(codes) == {1, 2}   # 2: the reservoir skipped it
    assert rb.stats()["inserted"] == (codes == 1).sum()
    b = rb.sample(4)
    assert list(np.asarray(b)[:, 0]) == list(b.seqs)
    rb.free()


def test_second_thread_putting_on_one_queue_is_refused(downstream):
    """One thread per queue and rank: a concurrent nogil put gets a clear error, not a race."""
    _, ds = downstream
    with rdq.Queue(MPI.COMM_SELF, capacity=1, slot_bytes=8) as q:
        ds.put_bytes(q, np.frombuffer(b"full", np.uint8), 0)
        blocked = threading.Thread(target=ds.put_bytes, args=(q, np.frombuffer(b"wait", np.uint8), 1.0))
        blocked.start()
        time.sleep(0.2)                                   # that thread waits inside put_nogil, GIL released
        with pytest.raises(rdq.RDQError, match="another thread"):
            ds.put_bytes(q, np.frombuffer(b"race", np.uint8), 0)
        blocked.join()
        assert bytes(q.get()) == b"full"


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_nogil_puts_under_mpiexec(downstream, n, transport):
    build, _ = downstream
    run_scenario("cython", n, env={**TRANSPORTS[transport], "RDQ_DOWNSTREAM_DIR": str(build)})

"""Single-process tests on MPI.COMM_SELF: arguments, zero-copy exports, release rules."""
import os
import ctypes
import gc
import math
import threading
import time

import numpy as np
import pytest
from mpi4py import MPI

import rdq

SHAPE = (3, 5)


@pytest.fixture
def q():
    queue = rdq.Queue(MPI.COMM_SELF, capacity=4, shape=SHAPE, dtype="float32", name="fields")
    yield queue
    gc.collect()
    queue.free()


def field(value):
    return np.full(SHAPE, value, np.float32)


def capsule_name(capsule):
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    return get_name(capsule).decode()


def test_put_get_roundtrip_and_metadata(q):
    q.put(field(1.5))
    with q.get() as m:
        a = np.asarray(m)
        assert a.shape == SHAPE and a.dtype == np.float32 and (a == 1.5).all()
        assert (m.source, m.seq, m.nbytes, m.shape, m.dtype) == (0, 0, a.nbytes, SHAPE, np.float32)
        assert "seq=0" in repr(m) and "fields" in repr(m)
        del a
    s = q.stats()
    assert (s["puts"], s["gets"], s["bytes_put"], s["bytes_got"]) == (1, 1, 60, 60)
    assert s["outstanding"] == 0 and s["live_exports"] == 0


def test_numpy_view_shares_the_window_and_pins_the_slot(q):
    q.put(field(1))
    m = q.get()
    a = np.asarray(m)
    b = np.asarray(m)
    assert a.ctypes.data == b.ctypes.data                 # both views of the same slot
    m.release()                                           # deferred: views alive
    assert m.released and q.stats()["outstanding"] == 1
    for v in range(2, 5):                                 # the other 3 slots still cycle
        q.put(field(v))
        with q.get() as other:
            assert np.asarray(other).ctypes.data != a.ctypes.data
    for v in range(5, 8):
        q.put(field(v))
    with pytest.raises(rdq.Full):                         # the pinned slot is never reused
        q.put(field(99), block=False)
    assert (a == 1).all()
    del a, b
    assert q.stats()["outstanding"] == 0                  # slot returned once the last view died
    q.put(field(8), block=False)


def test_released_message_refuses_new_exports(q):
    q.put(field(1))
    m = q.get()
    m.release()
    with pytest.raises(ValueError, match="released"):
        np.asarray(m)
    with pytest.raises(ValueError, match="released"):
        m.__dlpack__()


def test_garbage_collection_returns_slots(q):
    for i in range(20):
        q.put(field(i))
        q.get()                                           # dropped at once
    assert q.stats()["outstanding"] == 0


def test_release_out_of_order(q):
    for i in range(4):
        q.put(field(i))
    msgs = [q.get() for _ in range(4)]
    with pytest.raises(rdq.Full):
        q.put(field(9), block=False)
    msgs[2].release()
    q.put(field(10), block=False)                         # the freed slot is reused at once
    for i in (3, 0, 1):
        msgs[i].release()
    for i in range(3):
        q.put(field(11 + i), block=False)
    assert [float(np.asarray(q.get())[0, 0]) for _ in range(4)] == [10, 11, 12, 13]


def test_dlpack_versioned_and_legacy_capsules(q):
    q.put(field(2))
    m = q.get()
    assert m.__dlpack_device__() == (1, 0)
    assert capsule_name(m.__dlpack__(max_version=(1, 0))) == "dltensor_versioned"
    assert capsule_name(m.__dlpack__()) == "dltensor"
    gc.collect()
    assert q.stats()["live_exports"] == 0                 # unconsumed capsules gave their exports back
    x = np.from_dlpack(m)
    assert x.ctypes.data == np.asarray(m).ctypes.data and (x == 2).all()
    with pytest.raises(BufferError, match="host memory"):
        m.__dlpack__(dl_device=(2, 0))


def test_dlpack_copy_follows_the_standard(q):
    """copy=True: the producer copies; copy=False and None: rdq shares (it never needs to copy)."""
    torch = pytest.importorskip("torch")
    q.put(field(3))
    m = q.get()
    shared = np.asarray(m).ctypes.data
    for copied in (np.from_dlpack(m, copy=True), torch.from_dlpack(m, copy=True).numpy()):
        assert copied.ctypes.data != shared and (copied == 3).all()
    assert np.from_dlpack(m, copy=False).ctypes.data == shared
    assert torch.from_dlpack(m, copy=False).data_ptr() == shared
    assert np.from_dlpack(m, device="cpu").ctypes.data == shared
    gc.collect()
    m.release()
    assert q.stats()["outstanding"] == 0                  # the copies pinned nothing


def test_torch_from_dlpack_shares_memory_and_pins(q):
    torch = pytest.importorskip("torch")
    q.put(torch.arange(15, dtype=torch.float32).reshape(SHAPE))   # DLPack input
    m = q.get()
    t = torch.from_dlpack(m)
    assert t.data_ptr() == np.asarray(m).ctypes.data
    assert t.tolist() == np.arange(15, dtype=np.float32).reshape(SHAPE).tolist()
    del m
    assert q.stats()["outstanding"] == 1                  # the tensor alone keeps the slot
    t.add_(1)                                             # writable, in place, in the window
    del t
    gc.collect()
    assert q.stats()["outstanding"] == 0 and q.stats()["live_exports"] == 0


def test_torch_input_errors(q):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="expected dtype float32"):
        q.put(torch.zeros(SHAPE, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"expected shape \(3, 5\)"):
        q.put(torch.zeros((5, 3)))
    with pytest.raises(ValueError, match="C-contiguous"):
        q.put(torch.zeros((5, 3)).t())
    assert q.stats()["puts"] == 0


def test_raw_bytes_queue_keeps_each_length():
    with rdq.Queue(MPI.COMM_SELF, capacity=3, slot_bytes=32) as raw:
        for payload in (b"", b"a", b"x" * 32):
            raw.put(payload)
        got = []
        for _ in range(3):
            with raw.get() as m:
                got.append(bytes(m))
                assert m.shape == (m.nbytes,) and m.dtype == np.uint8
        assert got == [b"", b"a", b"x" * 32]
        with pytest.raises(ValueError, match="exceeds slot_bytes=32"):
            raw.put(b"x" * 33)


def test_iteration_ends_at_end_of_stream(q):
    for i in range(3):
        q.put(field(i))
    q.close()
    assert [float(np.asarray(m)[0, 0]) for m in q] == [0, 1, 2]
    with pytest.raises(rdq.Closed, match="end of stream"):
        q.get()
    with pytest.raises(rdq.Closed, match="after close"):
        q.put(field(0))


@pytest.mark.parametrize("kwargs, error, words", [
    ({"capacity": 0, "slot_bytes": 8}, ValueError, "capacity"),
    ({"capacity": -3, "slot_bytes": 8}, ValueError, "capacity"),
    ({"capacity": 4, "slot_bytes": 0}, ValueError, "slot_bytes"),
    ({"capacity": 4}, ValueError, "needs shape and dtype"),
    ({"capacity": 4, "shape": (2,), "dtype": "f4", "slot_bytes": 8}, ValueError, "not both"),
    ({"capacity": 4, "shape": (2, 0), "dtype": "f4"}, ValueError, "shape"),
    ({"capacity": 4, "shape": (2,), "dtype": object}, TypeError, "not supported"),
    ({"capacity": 4, "shape": (2,), "dtype": [("a", "f4")]}, TypeError, "not supported"),
    ({"capacity": 4, "shape": (2,), "dtype": ">f4"}, TypeError, "byte order"),
    ({"owner": 1, "capacity": 4, "slot_bytes": 8}, ValueError, "owner"),
    ({"capacity": 4, "slot_bytes": 8, "producers": [3]}, ValueError, "producers"),
    ({"capacity": 4, "slot_bytes": 8, "transport": "tcp"}, ValueError, "transport"),
    ({"capacity": 1 << 40, "slot_bytes": 1 << 30}, ValueError, "overflows"),
    ({"capacity": 1 << 30, "slot_bytes": 1 << 20}, ValueError, "memory available"),
])
def test_bad_arguments_name_rank_and_queue(kwargs, error, words):
    with pytest.raises(error, match=words) as info:
        rdq.Queue(MPI.COMM_SELF, name="bad", **kwargs)
    assert "rank 0" in str(info.value) and "'bad'" in str(info.value)


def test_bad_communicator():
    with pytest.raises(TypeError, match="intracommunicator"):
        rdq.Queue(MPI.COMM_NULL, capacity=4, slot_bytes=8)
    with pytest.raises(TypeError, match="intracommunicator"):
        rdq.Queue("world", capacity=4, slot_bytes=8)


@pytest.mark.parametrize("timeout", [-1, math.nan, "soon"])
def test_bad_timeouts(q, timeout):
    with pytest.raises(ValueError):
        q.put(field(0), timeout=timeout)
    with pytest.raises(ValueError):
        q.get(timeout=timeout)


def test_empty_times_out(q):
    with pytest.raises(rdq.Empty, match="within 0.05 s"):
        q.get(timeout=0.05)
    with pytest.raises(rdq.Empty):
        q.get(block=False)


def test_views_outlive_free():
    """free() with live views: the window goes, the views stay valid until they die."""
    queue = rdq.Queue(MPI.COMM_SELF, capacity=2, slot_bytes=8)
    queue.put(b"12345678")
    m = queue.get()
    view, array = memoryview(m), np.asarray(m)
    queue.free()
    assert bytes(view) == b"12345678" and bytes(array) == b"12345678"
    with pytest.raises(rdq.Closed, match="freed"):
        queue.put(b"x")
    with pytest.raises(rdq.Closed, match="freed"):
        np.asarray(m)                                     # no new export of a freed queue's message
    assert "freed" in repr(queue)
    m.release()                                           # does nothing, does not crash
    del view, array, m
    gc.collect()
    assert queue.stats()["live_exports"] == 0


def test_every_call_after_free_raises_or_does_nothing():
    """F4: nothing of Message, Batch or Queue crashes after free()."""
    torch = pytest.importorskip("torch")
    queue = rdq.Queue(MPI.COMM_SELF, capacity=4, shape=(2,), dtype="float32")
    for i in range(4):
        queue.put(np.full(2, i, np.float32))
    m, b = queue.get(), queue.get_batch(2)
    held = torch.from_dlpack(b)
    queue.free()
    for view in (m, b):
        for export in (np.asarray, memoryview, torch.from_dlpack, np.from_dlpack,
                       lambda v: v.__dlpack__(max_version=(1, 0)), lambda v: v.__dlpack__(copy=True)):
            with pytest.raises(rdq.Closed, match="freed"):
                export(view)
        assert view.shape[-1] == 2 and view.dtype == np.float32 and view.nbytes > 0 and "of queue" in repr(view)
        view.release()
        with view:
            pass
    assert m.source == 0 and m.seq == 0 and list(b.seqs) == [1, 2] and len(b) == 2 and not b.copied
    assert held.tolist() == [[1, 1], [2, 2]]              # a tensor alive across free() still reads its rows
    for call in (lambda: queue.put(np.zeros(2, np.float32)), lambda: queue.put_nowait(np.zeros(2, np.float32)),
                 queue.get, queue.get_nowait, lambda: queue.get_batch(1), queue.close, lambda: next(iter(queue))):
        with pytest.raises(rdq.Closed, match="freed"):
            call()
    assert queue.stats()["gets"] == 3
    queue.free()                                          # a second free does nothing
    del held, m, b
    gc.collect()


def test_error_tree():
    for exc in (rdq.Full, rdq.Empty, rdq.Closed, rdq.MPIError):
        assert issubclass(exc, rdq.RDQError)
    err = rdq.MPIError(13, "MPI_ERR_RMA_SYNC: wrong synchronization", "MPI_Put")
    assert err.error_code == 13 and "MPI_Put" in str(err)


def test_second_thread_on_a_busy_queue_is_refused(q):
    waiting = threading.Thread(target=lambda: pytest.raises(rdq.Empty, q.get, timeout=1.0))
    waiting.start()
    time.sleep(0.2)                                       # the thread is inside get(), GIL released
    with pytest.raises(rdq.RDQError, match="another thread"):
        q.get(block=False)
    with pytest.raises(rdq.RDQError, match="another thread"):
        q.put(field(0))
    waiting.join()
    q.put(field(0))                                       # usable again once the other call returned
    assert float(np.asarray(q.get())[0, 0]) == 0


def test_no_reference_leaks_through_messages_and_capsules(q):
    """Every message, view and capsule gives back its reference to the queue and its export."""
    import sys
    torch = pytest.importorskip("torch")
    gc.collect()
    baseline = sys.getrefcount(q)
    for i in range(200):
        q.put(field(i))
        m = q.get()
        a, mv, t = np.asarray(m), memoryview(m), torch.from_dlpack(m)
        unused = (m.__dlpack__(), m.__dlpack__(max_version=(1, 0)))
        del a, mv, t, unused
        m.release()
        del m
    gc.collect()
    assert sys.getrefcount(q) == baseline
    s = q.stats()
    assert s["outstanding"] == 0 and s["live_exports"] == 0 and s["gets"] == 200


class CudaLookalike:
    """A DLPack producer whose tensor says it lives on a CUDA device (rdq has no GPU path)."""

    def __dlpack__(self, **kwargs):
        import torch
        return _capsule_on_device(torch.zeros(SHAPE), device_type=2)

    def __dlpack_device__(self):
        return (2, 0)


def test_gpu_tensor_is_refused_clearly(q):
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"host \(CPU\) memory"):
        q.put(CudaLookalike())
    assert q.stats()["puts"] == 0


def _capsule_on_device(tensor, device_type):
    """A legacy DLPack capsule of tensor whose DLTensor says device_type (the data stays on the CPU)."""
    capsule = tensor.__dlpack__()
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    managed = get_pointer(capsule, b"dltensor")
    # DLTensor: void *data; then DLDevice {int32 device_type; int32 device_id}
    ctypes.c_int32.from_address(managed + ctypes.sizeof(ctypes.c_void_p)).value = device_type
    return capsule


@pytest.mark.parametrize("shape", [(1 << 31, 1 << 31, 1 << 20), (1 << 62,)])
def test_absurd_shapes_are_refused_before_anything_is_allocated(shape):
    with pytest.raises(ValueError, match="overflows|memory available"):
        rdq.Queue(MPI.COMM_SELF, capacity=4, shape=shape, dtype="float64")


def test_calls_after_free_are_closed():
    queue = rdq.Queue(MPI.COMM_SELF, capacity=2, slot_bytes=8)
    queue.free()
    for call in (lambda: queue.put(b"x"), queue.get, lambda: queue.get_batch(1), queue.close):
        with pytest.raises(rdq.Closed, match="freed"):
            call()
    queue.free()


def test_arguments_take_any_integer_and_torch_dtypes():
    torch = pytest.importorskip("torch")
    queue = rdq.Queue(MPI.COMM_SELF, owner=np.int64(0), capacity=np.int32(3), shape=(np.int64(2), 3),
                      dtype=torch.float32)
    assert queue.dtype == np.float32 and queue.shape == (2, 3) and queue.capacity == 3
    queue.put(torch.ones(2, 3))
    assert queue.get_batch(np.int64(1)).shape == (1, 2, 3)
    queue.free()
    assert rdq.Queue(MPI.COMM_SELF, capacity=2, shape=4, dtype=torch.int16).dtype == np.int16
    with pytest.raises(TypeError, match="bfloat16 has no numpy equivalent"):
        rdq.Queue(MPI.COMM_SELF, capacity=2, shape=4, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="capacity must be an integer"):
        rdq.Queue(MPI.COMM_SELF, capacity=2.5, shape=4, dtype="f4")
    with pytest.raises(TypeError, match="dimension of shape must be an integer"):
        rdq.Queue(MPI.COMM_SELF, capacity=2, shape=(4.0,), dtype="f4")


def test_dlpack_input_errors_speak_dtype_names(q):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="expected dtype float32, got float64"):
        q.put(torch.zeros(SHAPE, dtype=torch.float64))
    with pytest.raises(TypeError, match="got bfloat16"):
        q.put(torch.zeros(SHAPE, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="this tensor is on cuda"):
        q.put(CudaLookalike())


def test_full_and_empty_are_the_queue_module_exceptions(q):
    import queue as stdlib_queue
    assert issubclass(rdq.Full, stdlib_queue.Full) and issubclass(rdq.Empty, stdlib_queue.Empty)
    with pytest.raises(stdlib_queue.Empty):
        q.get_nowait()
    for i in range(q.capacity):
        assert q.put_nowait(field(i)) is True
    with pytest.raises(stdlib_queue.Full):
        q.put_nowait(field(0))
    assert float(np.asarray(q.get_nowait())[0, 0]) == 0


def test_owner_put_into_its_own_full_ring_is_refused_not_a_hang(q):
    for i in range(q.capacity):
        q.put(field(i))
    started = time.monotonic()
    with pytest.raises(rdq.Full, match="would wait forever"):
        q.put(field(9))                                   # block=True, no timeout: only the owner could free a slot
    assert time.monotonic() - started < 1
    with pytest.raises(rdq.Full, match="within 0.1 s"):
        q.put(field(9), timeout=0.1)                      # with a timeout it waits (another thread might release)
    q.get().release()
    q.put(field(9))


def test_every_slot_is_64_byte_aligned():
    """On a one-rank queue too, so that JAX and SIMD code take messages without copying."""
    for nbytes in (1, 24, 100, 4096):
        queue = rdq.Queue(MPI.COMM_SELF, capacity=5, slot_bytes=nbytes)
        for i in range(5):
            queue.put(bytes(nbytes))
        addresses = [np.asarray(m).ctypes.data for m in [queue.get() for _ in range(5)]]
        assert all(a % 64 == 0 for a in addresses), (nbytes, [a % 64 for a in addresses])
        gc.collect()
        queue.free()


def test_messages_refuse_pickle_and_copy_with_a_remedy(q):
    import copy
    import pickle
    q.put(field(1))
    m = q.get()
    for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match=r"numpy.array\(m\)"):
            attempt(m)
    assert (pickle.loads(pickle.dumps(np.array(m))) == 1).all()


def test_signatures_and_docstrings_tell_the_truth():
    import inspect
    params = inspect.signature(rdq.Queue).parameters
    assert list(params)[:5] == ["comm", "owner", "capacity", "shape", "dtype"]
    assert all(params[p].kind is inspect.Parameter.KEYWORD_ONLY
               for p in ("slot_bytes", "producers", "sample", "name", "transport"))
    assert "put_nowait" in dir(rdq.Queue) and inspect.signature(rdq.Queue.get_batch)
    for cls, names in ((rdq.Queue, ("comm", "name", "owner", "rank", "capacity", "slot_bytes", "shape", "dtype",
                                    "producers", "transport", "is_producer", "sample")),
                       (rdq.Message, ("source", "seq", "nbytes", "shape", "dtype", "released")),
                       (rdq.Batch, ("sources", "seqs", "copied", "nbytes", "shape", "dtype"))):
        for name in names:
            assert getattr(cls, name).__doc__, f"{cls.__name__}.{name} has no docstring"


FINALIZE_FIRST = """
import numpy as np, rdq
from mpi4py import MPI
q = rdq.Queue(MPI.COMM_SELF, capacity=4, shape=(8,), dtype="float32")
q.put(np.ones(8, np.float32)); q.put(np.ones(8, np.float32))
m, kept = q.get(), q.get()
x = np.asarray(kept)                     # a view alive at interpreter exit
MPI.Finalize()
for call in (lambda: q.put(np.ones(8, np.float32)), q.get, q.close, lambda: q.get_batch(1)):
    try:
        call()
    except rdq.Closed as exc:
        assert "MPI_Finalize" in str(exc), exc
    else:
        raise SystemExit("a call after MPI_Finalize did not raise rdq.Closed")
m.release()                              # touches only the owner's memory: harmless
assert float(x.sum()) == 8
q.free()                                 # no MPI call any more: marks the queue freed
print("finalize ok", q.transport)
"""


@pytest.mark.parametrize("transport", ["shm", "rma"])
def test_mpi_finalize_before_the_last_view_dies(transport):
    """F5: after MPI_Finalize, rdq raises instead of calling MPI, and views alive at exit are harmless."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", FINALIZE_FIRST], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "RDQ_TRANSPORT": transport})
    assert proc.returncode == 0 and f"finalize ok {transport}" in proc.stdout, proc.stdout + proc.stderr


def test_get_with_every_slot_held_raises_at_once_or_waits_for_another_threads_release(q):
    """F9: with no timeout only the owner could release, so get() and get_batch() raise at once;
    with a timeout they wait, since a data-loader thread may release (and then they succeed)."""
    for i in range(q.capacity):
        q.put(field(i))
    held = [q.get() for _ in range(q.capacity)]
    for call in (q.get, lambda: q.get_batch(1)):
        started = time.monotonic()
        with pytest.raises(ValueError, match="pass a timeout if another thread"):
            call()
        assert time.monotonic() - started < 0.5
    with pytest.raises(rdq.Empty, match="within 0.1 s"):
        q.get(timeout=0.1)                                # nobody releases: an ordinary timeout
    releaser = threading.Timer(0.2, held[0].release)
    releaser.start()
    with pytest.raises(rdq.Empty):
        q.get(timeout=1.0)                                # released, but nothing new was put
    releaser.join()
    assert q.stats()["outstanding"] == q.capacity - 1
    for m in held[1:]:
        m.release()

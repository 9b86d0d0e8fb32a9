"""Single-process tests on MPI.COMM_SELF: arguments, zero-copy exports, release rules."""
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
    with pytest.raises(BufferError):
        m.__dlpack__(copy=True)
    with pytest.raises(BufferError):
        m.__dlpack__(dl_device=(2, 0))


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


def test_free_with_live_view_is_a_buffer_error_then_frees():
    queue = rdq.Queue(MPI.COMM_SELF, capacity=2, slot_bytes=8)
    queue.put(b"12345678")
    view = memoryview(queue.get())
    with pytest.raises(BufferError, match="live view"):
        queue.free()
    assert bytes(view) == b"12345678"
    view.release()
    queue.free()
    with pytest.raises(rdq.Closed, match="freed"):
        queue.put(b"x")
    assert "freed" in repr(queue)


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

# cython: boundscheck=False, wraparound=False
# A simulation-style user of rdq's C-level API: puts from nogil code.
cimport rdq
from libc.stdint cimport int64_t, uint8_t
from rdq cimport Queue, ReplayBuffer

import numpy as np


cdef void fill_field(int64_t[:, ::1] field, int64_t src, int64_t seq) noexcept nogil:
    """The payload tests/scenarios.py checks: rank, sequence, checksum, then a known ramp."""
    cdef int64_t *flat = &field[0, 0]
    cdef Py_ssize_t i, n = field.shape[0] * field.shape[1]
    cdef int64_t total = 0
    for i in range(3, n):
        flat[i] = (i - 3) * (src + 1) + seq * 7919
        total += flat[i]
    flat[0] = src
    flat[1] = seq
    flat[2] = total ^ 0x5A5A


def put_fields(Queue q, Py_ssize_t count, int64_t rank):
    """count typed puts from a nogil time loop, in runs of ten (nine say more follow),
    then close; returns how many were sent."""
    cdef int64_t[:, ::1] field = np.empty(q.shape, np.int64)
    cdef Py_ssize_t seq, sent = 0
    with nogil:
        for seq in range(count):
            fill_field(field, rank, seq)
            sent += rdq.put_2d(q, field, -1.0, seq % 10 != 9)
        q.close_nogil()
    return sent


def put_bytes(Queue q, const uint8_t[::1] data, double timeout):
    cdef int sent
    with nogil:
        sent = q.put_nogil(&data[0], data.shape[0], timeout)
    return sent


def put_null(Queue q):
    with nogil:
        q.put_nogil(NULL, 8, -1.0)


def put_floats(Queue q, double[:, ::1] field):
    with nogil:
        rdq.put_2d(q, field, -1.0)


def put_ints_1d(Queue q, int64_t[::1] field):
    with nogil:
        rdq.put_1d(q, field, -1.0)


def put_on_none(int64_t[::1] field):
    with nogil:
        rdq.put_1d(<Queue>None, field, -1.0)


def put_replay(ReplayBuffer rb, int64_t[::1] field, Py_ssize_t count):
    """count puts of [seq, ...] into a replay buffer from a nogil loop; the calls' return codes."""
    codes = np.empty(count, np.int32)
    cdef int[::1] out = codes
    cdef Py_ssize_t seq
    with nogil:
        for seq in range(count):
            field[0] = seq
            out[seq] = rdq.put_1d(rb, field, -1.0)
    return codes


def put_many(Queue q, const uint8_t[::1] message, Py_ssize_t count, bint more=False):
    """count back-to-back puts from a nogil loop (bench/cython_put.py); with more, each
    says more follow and a flush completes the run."""
    cdef Py_ssize_t i
    with nogil:
        for i in range(count):
            q.put_nogil(&message[0], message.shape[0], -1.0, more)
        q.flush_nogil()


def put_latencies(Queue q, const uint8_t[::1] message, Py_ssize_t count, double step_seconds):
    """Seconds each of count puts took, each after a simulated compute step of
    step_seconds (bench/cython_put.py)."""
    latencies = np.empty(count, np.float64)
    cdef double[::1] out = latencies
    cdef Py_ssize_t i
    cdef double t0
    with nogil:
        for i in range(count):
            t0 = rdq.rdq_now()
            while rdq.rdq_now() - t0 < step_seconds:
                pass
            t0 = rdq.rdq_now()
            q.put_nogil(&message[0], message.shape[0], -1.0)
            out[i] = rdq.rdq_now() - t0
    return latencies

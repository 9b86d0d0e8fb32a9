# Declarations of rdq's extension types, so that other Cython code can `cimport rdq`.
from libc.stdint cimport int64_t, uint8_t
from mpi4py.libmpi cimport MPI_Aint, MPI_Comm, MPI_Win


cdef extern from "rdq_sys.h" nogil:
    int64_t rdq_load_acquire(const void *p)
    void rdq_store_release(void *p, int64_t v)
    int64_t rdq_cas(void *p, int64_t expected, int64_t desired)
    int64_t rdq_fetch_add(void *p, int64_t v)
    double rdq_now()
    void rdq_backoff(int64_t round)


# What the owner's window holds and what each rank knows about it (see ring.pxi).
ctypedef struct Ring:
    MPI_Win win
    MPI_Comm comm             # private duplicate of the user's communicator
    int owner
    int rank
    bint shm                  # base maps the owner's segment on this rank: load/store + CPU atomics
    char *base                # owner's segment (shm: every rank; rma: the owner only; else NULL)
    int64_t capacity
    int64_t slot_bytes
    MPI_Aint free_off
    MPI_Aint payload_off
    int64_t nproducers
    # producer-local
    int64_t tail_guess        # last tail seen; a compare-and-swap corrects it
    int64_t head_cache        # last head seen; refreshed only when no ticket looks free
    int64_t next_seq          # this producer's sequence number of its next message
    # consumer-local (owner only)
    int64_t next_ticket       # next ticket to deliver
    int64_t head              # free-list entries written
    int64_t head_published    # the head producers can see


cdef class Queue:
    cdef Ring ring
    cdef readonly object comm
    cdef readonly str name
    cdef readonly int owner
    cdef readonly int rank
    cdef readonly int64_t capacity
    cdef readonly int64_t slot_bytes
    cdef readonly tuple shape
    cdef readonly object dtype
    cdef readonly tuple producers
    cdef readonly str transport
    cdef readonly bint is_producer
    cdef readonly object sample       # put-side sampling policy (x -> bool), or None
    cdef bint closed
    cdef bint freed
    cdef bint end_of_stream
    cdef bint busy            # a put or get of this rank is in progress (GIL released inside)
    # typed-queue layout, exported by messages through the buffer protocol and DLPack
    cdef int ndim
    cdef Py_ssize_t *c_shape
    cdef Py_ssize_t *c_strides
    cdef Py_ssize_t itemsize
    cdef bytes format
    cdef uint8_t dl_code
    cdef uint8_t dl_bits
    cdef dict format_ok
    # this rank's counters
    cdef int64_t n_puts, n_gets, bytes_put, bytes_got, full_waits, empty_waits, batch_copies, sampled_out
    cdef int64_t outstanding  # messages delivered and not yet returned
    cdef int64_t exports      # live buffer/DLPack exports of those messages

    cdef int c_close(self) except -1 nogil

    cdef _init_layout(self)
    cdef _create_window(self, comm, str transport, MPI_Aint free_off, MPI_Aint payload_off, int64_t total)
    cdef str _where(self)
    cdef int _check_usable(self, str call) except -1
    cdef int _enter(self, str call) except -1
    cdef int _wait_messages(self, str call, int64_t k, double timeout, int64_t *count) except -1
    cdef int _check_put(self, str call) except -1
    cdef bint _sampled(self, x) except -1
    cdef bint _format_matches(self, const char *fmt, object x) except -1
    cdef int _check_view(self, Py_buffer *view, object x) except -1
    cdef int _put_bytes(self, const char *data, int64_t nbytes, double timeout) except -1


cdef class _SlotView:
    cdef Queue queue
    cdef char *data
    cdef Py_ssize_t nbytes
    cdef int ndim
    cdef Py_ssize_t *c_shape          # ndim sizes; c_strides: ndim strides in bytes
    cdef Py_ssize_t *c_strides
    cdef Py_ssize_t raw_dims[2]       # a raw message's shape and stride
    cdef Py_ssize_t *own_dims         # a batch's shape and strides (PyMem)
    cdef int exports
    cdef bint release_requested
    cdef bint returned

    cdef void _give_back(self) noexcept
    cdef void _return_slots(self) noexcept
    cdef void _add_export(self) noexcept
    cdef void _drop_export(self) noexcept
    cdef int _check_exportable(self) except -1


cdef class Message(_SlotView):
    cdef int64_t slot
    cdef readonly int source
    cdef readonly int64_t seq


cdef class Batch(_SlotView):
    cdef int64_t first_slot
    cdef int64_t pinned               # slots pinned: k when zero-copy, 0 when copied
    cdef object rows                  # the copied rows, when not zero-copy
    cdef readonly object sources
    cdef readonly object seqs

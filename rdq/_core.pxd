# Declarations of rdq's extension types, so that other Cython code can `cimport rdq`.
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from mpi4py.libmpi cimport MPI_Aint, MPI_Comm, MPI_Win


cdef extern from "rdq_sys.h" nogil:
    int64_t rdq_load_acquire(const void *p)
    int64_t rdq_load_relaxed(const void *p)
    void rdq_store_release(void *p, int64_t v)
    void rdq_store_relaxed(void *p, int64_t v)
    void rdq_fence_acquire()
    void rdq_fence_release()
    int64_t rdq_cas(void *p, int64_t expected, int64_t desired)
    uint64_t rdq_hash(const void *data, int64_t n, uint64_t seed)
    int64_t rdq_check(int64_t value, int64_t where)
    int64_t rdq_thread_id()
    double rdq_now()
    void rdq_backoff(int64_t round)


# The owner's view of one producer's ring (see ring.pxi).
ctypedef struct RingOwner:
    int64_t delivered         # next ticket to hand to the user
    int64_t verified          # tickets below this are known complete
    int64_t returned          # slots handed back (free-list records written)
    int64_t closed            # n + 1 once the producer closed after n messages, else 0
    bint passed               # another ring delivered while this one had a message waiting
    int64_t seen              # verified at the last delivery, and when it last changed
    double seen_time


# MPI calls this rank made on the queue's window (stats(); bench/RESULTS.md).
ctypedef struct RingCalls:
    int64_t puts
    int64_t gets
    int64_t flushes
    int64_t syncs


# What the owner's window holds and what each rank knows about it (layout.pxi, ring.pxi).
ctypedef struct Ring:
    MPI_Win win
    MPI_Comm comm             # the user's communicator (collectives at creation and free, progress)
    int owner
    int rank
    bint shm                  # base maps the owner's segment on this rank: load/store
    char *base                # owner's memory (shm: every rank; rma: the owner only; else NULL)
    MPI_Aint disp0            # rma: where base is in the window (64-byte alignment)
    int64_t nrings            # one ring per producer
    int64_t capacity          # slots per ring
    int64_t slot_bytes        # the largest message
    int64_t slot_stride       # slot_bytes rounded up to 64 (layout.pxi)
    MPI_Aint meta_base
    MPI_Aint free_base
    MPI_Aint payload_base
    RingCalls calls
    # producer-local: this rank's ring
    int64_t ring              # its index, or -1 on a rank that is not a producer
    int64_t next_seq          # its next ticket (= the message's seq)
    int64_t credit_upto       # tickets below this have a slot, in slots[ticket % capacity]
    int64_t *slots
    int64_t *fetched          # free-list records read by the last refresh
    bint unsure               # an MPI error struck a put after its meta record went out
    char *stage               # rma put(more=True): staged messages, then their meta records
    int64_t stage_max         # how many messages the stage holds
    int64_t staged            # tickets next_seq - staged .. next_seq - 1 are staged, not yet put
    # owner-local
    RingOwner *rings          # nrings of them
    int64_t next_ring         # where the round robin starts
    int64_t arrivals          # complete tickets seen so far, and when that last changed
    double arrival_time
    int64_t return_lock       # serializes releases from several threads


# What Queue and ReplayBuffer share: the window, its creation and teardown, put and close.
cdef class _Window:
    cdef Ring ring
    cdef readonly object comm
    """The mpi4py communicator the queue was made on."""
    cdef readonly str name
    """The queue's name in messages (name=, or queue0, queue1, ...)."""
    cdef readonly int owner
    """The rank whose window holds the queue: the only one that gets."""
    cdef readonly int rank
    """This rank in the communicator."""
    cdef readonly int64_t capacity
    """Slots per producer: the messages one producer can have in flight."""
    cdef readonly int64_t slot_bytes
    """The largest message, in bytes (a typed queue: the size of one array)."""
    cdef readonly tuple shape
    """Each message's shape (a typed queue), or None (raw bytes)."""
    cdef readonly object dtype
    """Each message's numpy dtype (a typed queue), or None (raw bytes)."""
    cdef readonly tuple producers
    """The ranks that may put, sorted."""
    cdef readonly str transport
    """"shm" (load/store into a shared segment) or "rma" (MPI one-sided calls)."""
    cdef readonly bint is_producer
    """Whether this rank may put."""
    cdef object put_sample    # Queue's put-side sampling policy (x -> bool), or None
    cdef bint closed
    cdef bint closing         # a close() of this rank has started (a put meeting it waits, then sees closed)
    cdef bint freed
    cdef bint end_of_stream
    cdef int64_t busy         # the thread inside a put, get or close of this rank, else 0 (atomic)
    cdef char kind            # dtype.kind of a typed queue ('f', 'i', 'u', 'b', 'c'); 'u' for raw bytes
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
    cdef char *mapping        # shm: the segment this rank mapped (memory.pxi), else NULL
    cdef size_t mapping_bytes

    # C-level API for Cython simulations: callable without the GIL (see README, "Cython API").
    # Returns 1 when sent, 0 when no slot freed up within timeout (< 0: wait forever, 0: do not wait);
    # a ReplayBuffer never waits and returns 2 when its reservoir skipped the message.
    # more: more puts follow at once, so on the network path this message may stay staged on
    # this rank until a put without more, flush_nogil() or close_nogil() (see Queue.put).
    cdef int put_nogil(self, const void *data, Py_ssize_t nbytes, double timeout, bint more=*) except -1 nogil
    cdef int put_typed(self, const void *data, char kind, Py_ssize_t itemsize, int ndim,
                       const Py_ssize_t *shape, double timeout, bint more=*) except -1 nogil
    cdef int flush_nogil(self) except -1 nogil
    cdef int close_nogil(self) except -1 nogil

    cdef _setup(self, comm, owner, capacity, shape, dtype, slot_bytes, producers, sample, name, transport,
                tuple extra)
    cdef tuple _layout(self, int64_t nrings, int64_t capacity, int64_t slot_bytes)
    cdef void _init_memory(self) noexcept nogil
    cdef int _send(self, const char *data, int64_t nbytes, double timeout, bint *waited, bint more) except -1 nogil
    cdef int _complete(self) except -1 nogil
    cdef int _close_ring(self) except -1 nogil
    cdef _init_layout(self)
    cdef _set_message_kind(self, str where, shape, dtype, slot_bytes)
    cdef _init_ring(self, tuple layout)
    cdef _create_window(self, comm, str transport, int64_t total)
    cdef _map_segment(self, comm, int64_t total)
    cdef _map_window(self, comm, int64_t total, int node_size)
    cdef _raise_problems(self, list gathered)
    cdef _free_windows(self)
    cdef void _unmap(self) noexcept
    cdef str _where(self)
    cdef int _check_usable(self, str call) except -1
    cdef int _enter(self, const char *call, bint wait) except -1 nogil
    cdef void _leave(self) noexcept nogil
    cdef Batch _new_batch(self, int64_t count, int64_t nb, sources, seqs)
    cdef int _check_put(self, str call) except -1
    cdef int _check_sure(self, str call) except -1
    cdef double _own_put_timeout(self, double timeout) noexcept nogil
    cdef int _refuse_own_full_put(self, str call) except -1
    cdef bint _sampled(self, x) except -1
    cdef bint _format_matches(self, const char *fmt, object x) except -1
    cdef int _check_view(self, Py_buffer *view, object x) except -1
    cdef int _put_bytes(self, const char *data, int64_t nbytes, double timeout, bint more) except -1
    cdef void _count_put(self, int sent, bint waited, int64_t nbytes) noexcept nogil
    cdef int _check_owner(self, str call) except -1


cdef class Queue(_Window):
    cdef int _wait_messages(self, str call, int64_t k, double timeout, int64_t *ring, int64_t *count) except -1
    cdef int64_t _take_ticket(self, int64_t ring, int64_t *nbytes) except -1
    cdef int _check_sizes(self, int64_t nb, int64_t other) except -1
    cdef Batch _ring_batch(self, int64_t ring, int64_t count)
    cdef Batch _mixed_batch(self, int64_t lead, int64_t count)
    cdef int _copy_rows(self, Batch batch, int64_t *rings, int64_t *takes, int64_t n) except -1


# sample()'s rows being filled (replay.pxi): row j copies resident message where[j] (an index
# into the rings' resident slots, ring i's from starts[i]); pending: rows still to copy; table:
# an open-addressing set of the indices drawn (mask + 1 entries).
ctypedef struct ReplayRows:
    int64_t *where
    int64_t *pending
    int64_t *table
    int64_t mask
    int64_t *starts
    int64_t *ranks            # producers[i]
    int32_t *sources          # the batch's .sources and .seqs
    int64_t *seqs


# A replay buffer's owner-side state (replay.pxi).
cdef class ReplayBuffer(_Window):
    cdef readonly str policy
    """"reservoir" (a uniform sample of each producer's stream) or "window" (its newest messages)."""
    cdef bint window_policy
    cdef uint64_t rng_state   # producer: the policy's random choices (splitmix64)
    cdef int64_t inserted     # producer: messages written into a slot (the rest were skipped)
    cdef uint64_t draw_state  # owner: sample()'s random draws (splitmix64)
    cdef int64_t *filled      # owner: slots of each ring written at least once (they fill in order)
    cdef int64_t *starts      # owner: where each ring's resident slots start among all (sample())
    cdef int64_t *ranks       # owner: producers[i]
    cdef int64_t *seen_stamp  # owner: per slot, the message last drawn from it, and how often
    cdef int64_t *draws
    cdef int64_t drawn, distinct, redrawn
    cdef int64_t _resident(self) except -1 nogil
    cdef bint _ended(self) noexcept nogil
    cdef int64_t _wait_resident(self, int64_t k, double timeout, bint *ended) except -1 nogil
    cdef int _fill_rows(self, Batch batch, int64_t count, int64_t resident, double timeout) except -1
    cdef int64_t _draw_and_copy(self, Batch batch, ReplayRows *rows, int64_t count, int64_t resident,
                                double timeout) except? -3 nogil
    cdef int64_t _read_rows(self, Batch batch, ReplayRows *rows, int64_t npending) except -1 nogil
    cdef _drop_rows(self, Batch batch, list rows)
    cdef dict _buffer_stats(self)


cdef class _SlotView:
    cdef _Window queue
    cdef char *data
    cdef Py_ssize_t nbytes
    cdef int ndim
    cdef Py_ssize_t *c_shape          # ndim sizes; c_strides: ndim strides in bytes
    cdef Py_ssize_t *c_strides
    cdef Py_ssize_t raw_dims[2]       # a raw message's shape and stride
    cdef Py_ssize_t *own_dims         # a batch's shape and strides (PyMem)
    cdef int exports
    cdef bint own_copy                # data is a copy the view owns (Batch.rows), not the window
    cdef bint release_requested
    cdef bint returned

    cdef void _give_back(self) noexcept
    cdef void _return_slots(self) noexcept
    cdef void _add_export(self) noexcept
    cdef void _drop_export(self) noexcept
    cdef int _check_exportable(self) except -1
    cdef bint _contiguous(self) noexcept


cdef class Message(_SlotView):
    cdef int64_t ring
    cdef int64_t slot
    cdef readonly int source
    """The rank that put the message."""
    cdef readonly int64_t seq
    """The message's number among its producer's messages, from 0."""


cdef class Batch(_SlotView):
    cdef int64_t ring
    cdef int64_t first_slot
    cdef int64_t pinned               # slots pinned: k when zero-copy, 0 when copied
    cdef object rows                  # the copied rows, when not zero-copy
    cdef readonly object sources
    """Each row's producing rank (a numpy int32 array)."""
    cdef readonly object seqs
    """Each row's number among its producer's messages (a numpy int64 array)."""


# Typed puts from Cython memoryviews, checked against the queue's dtype and shape:
#     cdef double[:, ::1] u = ...
#     with nogil:
#         rdq.put_2d(q, u, -1)
ctypedef fused rdq_number:
    float
    double
    int8_t
    int16_t
    int32_t
    int64_t
    uint8_t
    uint16_t
    uint32_t
    uint64_t


cdef inline char rdq_kind(rdq_number *p) noexcept nogil:
    """numpy's dtype.kind of the element type (chosen at compile time)."""
    cdef char kind = b'u'
    if rdq_number is float or rdq_number is double:
        kind = b'f'
    elif rdq_number is int8_t or rdq_number is int16_t or rdq_number is int32_t or rdq_number is int64_t:
        kind = b'i'
    return kind


cdef inline int put_1d(_Window q, const rdq_number[::1] a, double timeout, bint more=False) except -1 nogil:
    rdq_check_queue(q)
    return q.put_typed(&a[0] if a.shape[0] else NULL, rdq_kind(<rdq_number *>NULL), sizeof(rdq_number),
                       1, a.shape, timeout, more)


cdef inline int put_2d(_Window q, const rdq_number[:, ::1] a, double timeout, bint more=False) except -1 nogil:
    rdq_check_queue(q)
    return q.put_typed(&a[0, 0] if a.shape[0] and a.shape[1] else NULL, rdq_kind(<rdq_number *>NULL),
                       sizeof(rdq_number), 2, a.shape, timeout, more)


cdef inline int put_3d(_Window q, const rdq_number[:, :, ::1] a, double timeout, bint more=False) except -1 nogil:
    rdq_check_queue(q)
    return q.put_typed(&a[0, 0, 0] if a.shape[0] and a.shape[1] and a.shape[2] else NULL,
                       rdq_kind(<rdq_number *>NULL), sizeof(rdq_number), 3, a.shape, timeout, more)


cdef inline int rdq_check_queue(_Window q) except -1 nogil:
    # A rank outside the queue's communicator has no queue object: say so instead of crashing.
    if q is None:
        with gil:
            from rdq.errors import RDQError
            raise RDQError("rdq put on None: this rank has no queue (is it outside the queue's communicator?)")
    return 0

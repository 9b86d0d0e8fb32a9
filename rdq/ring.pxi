# The ring protocol: what the owner's window holds and how producers and the
# consumer move through it.
#
# Window layout (bytes, all words int64; counters each on its own cache line):
#   0         tail     tickets handed out; producers take one with compare-and-swap
#   64        head     entries ever written to the free list; written by the consumer only
#   128       closed   producers that have closed; each producer adds 1 once
#   192       meta     capacity records of META_BYTES, by ticket % capacity: ready
#                      (ticket + 1 once published), nbytes, source rank, sequence number
#   free_off  free     capacity slot numbers, by ticket % capacity: ticket t writes
#                      into slot free[t % capacity]
#   ...       payload  capacity dense slots of slot_bytes, so consecutive slots are
#                      one (k, *shape) array
#
# Tickets order the messages; the free list maps each ticket to a slot.  A
# producer takes ticket t only when t < head, so its slot is free the moment the
# ticket is taken and nothing after the swap can block: a non-blocking put or a
# timeout never leaves a hole.  It writes metadata and payload, completes them
# (flush), then publishes ready = t + 1.  The consumer delivers tickets in order;
# a slot goes back by appending it to the free list, in any order, so a view
# held for a long time pins its own slot and nothing else.  Released in order,
# slots come back in order, and consecutive tickets get consecutive slots.
#
# Two ways to touch the owner's memory, chosen once per queue (collectively):
#   shm: every rank shares the owner's node; the window comes from
#        MPI_Win_allocate_shared and all ranks use load/store and CPU atomics.
#   rma: MPI_Win_allocate; every access by every rank, the owner's own included,
#        goes through MPI (Compare_and_swap, Fetch_and_op, Accumulate, Put).
# The two are never mixed on one queue, because an MPI atomic need not be
# atomic with respect to a CPU atomic on the same word.

cdef enum:
    OFF_TAIL = 0
    OFF_HEAD = 64
    OFF_CLOSED = 128
    OFF_META = 192
    META_BYTES = 32
    META_READY = 0
    META_NBYTES = 8
    MAX_PUT_CHUNK = 1 << 30   # MPI_Put counts are C ints


cdef inline MPI_Aint meta_off(Ring *r, int64_t ticket) noexcept nogil:
    return OFF_META + (ticket % r.capacity) * META_BYTES


cdef inline MPI_Aint free_off(Ring *r, int64_t ticket) noexcept nogil:
    return r.free_off + (ticket % r.capacity) * 8


cdef inline char *slot_ptr(Ring *r, int64_t slot) noexcept nogil:
    """Address of a slot on the owner."""
    return r.base + r.payload_off + slot * r.slot_bytes


cdef int ring_read(Ring *r, MPI_Aint off, int64_t *out) except -1 nogil:
    cdef int64_t dummy = 0
    if r.shm:
        out[0] = rdq_load_acquire(r.base + off)
        return 0
    CHKERR(MPI_Fetch_and_op(&dummy, out, MPI_INT64_T, r.owner, off, MPI_NO_OP, r.win))
    return CHKERR(MPI_Win_flush(r.owner, r.win))


cdef int ring_write(Ring *r, MPI_Aint off, int64_t value) except -1 nogil:
    if r.shm:
        rdq_store_release(r.base + off, value)
        return 0
    CHKERR(MPI_Accumulate(&value, 1, MPI_INT64_T, r.owner, off, 1, MPI_INT64_T, MPI_REPLACE, r.win))
    return CHKERR(MPI_Win_flush(r.owner, r.win))


cdef int ring_cas(Ring *r, MPI_Aint off, int64_t expected, int64_t desired, int64_t *found) except -1 nogil:
    if r.shm:
        found[0] = rdq_cas(r.base + off, expected, desired)
        return 0
    CHKERR(MPI_Compare_and_swap(&desired, &expected, found, MPI_INT64_T, r.owner, off, r.win))
    return CHKERR(MPI_Win_flush(r.owner, r.win))


cdef int ring_add(Ring *r, MPI_Aint off, int64_t value) except -1 nogil:
    cdef int64_t old = 0
    if r.shm:
        rdq_fetch_add(r.base + off, value)
        return 0
    CHKERR(MPI_Fetch_and_op(&value, &old, MPI_INT64_T, r.owner, off, MPI_SUM, r.win))
    return CHKERR(MPI_Win_flush(r.owner, r.win))


cdef int ring_copy_in(Ring *r, MPI_Aint off, const char *src, int64_t n) except -1 nogil:
    """Write n bytes at off; complete only after ring_flush (rma)."""
    cdef int64_t done = 0, chunk
    if r.shm:
        memcpy(r.base + off, src, <size_t>n)
        return 0
    while done < n:
        chunk = min(n - done, <int64_t>MAX_PUT_CHUNK)
        CHKERR(MPI_Put(<void *>(src + done), <int>chunk, MPI_BYTE, r.owner, off + done,
                       <int>chunk, MPI_BYTE, r.win))
        done += chunk
    return 0


cdef int ring_publish_head(Ring *r) except -1 nogil:
    """Let producers see the slots the consumer has returned (owner only)."""
    if r.head != r.head_published:
        CHKERR(MPI_Win_sync(r.win))   # the free-list entries, stored locally, before the head
        ring_write(r, OFF_HEAD, r.head)
        r.head_published = r.head
    return 0


cdef int ring_wait(Ring *r, int64_t round) except -1 nogil:
    """One step of waiting: drive MPI progress (rma), back off, and let Ctrl-C through."""
    cdef int flag = 0
    if not r.shm:
        # Passive-target RMA may progress only while the target is inside MPI.
        CHKERR(MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, r.comm, &flag, MPI_STATUS_IGNORE))
    if round > 0 and round % 2048 == 0:   # about every 100 ms once napping
        with gil:
            PyErr_CheckSignals()
    rdq_backoff(round)
    return 0


cdef inline bint past_deadline(double timeout, double *deadline) noexcept nogil:
    """timeout < 0 waits forever; the first call starts the clock."""
    if timeout < 0:
        return False
    if timeout == 0:
        return True
    if deadline[0] == 0:
        deadline[0] = rdq_now() + timeout
        return False
    return rdq_now() >= deadline[0]


cdef int ring_put(Ring *r, const char *src, int64_t nbytes, double timeout, bint *waited) except -1 nogil:
    """Send one message. Returns 1 when sent, 0 when no slot freed up in time."""
    cdef int64_t t = r.tail_guess, found, slot, round = 0
    cdef int64_t meta[3]
    cdef double deadline = 0
    while True:
        if t >= r.head_cache:
            if r.rank == r.owner:
                ring_publish_head(r)
            ring_read(r, OFF_HEAD, &r.head_cache)
            if t >= r.head_cache:
                waited[0] = True
                if past_deadline(timeout, &deadline):
                    return 0
                ring_wait(r, round)
                round += 1
                continue
        ring_cas(r, OFF_TAIL, t, t + 1, &found)
        if found == t:
            break
        t = found
    r.tail_guess = t + 1
    ring_read(r, free_off(r, t), &slot)
    meta[0] = nbytes
    meta[1] = r.rank
    meta[2] = r.next_seq
    ring_copy_in(r, meta_off(r, t) + META_NBYTES, <const char *>meta, sizeof(meta))
    ring_copy_in(r, r.payload_off + slot * r.slot_bytes, src, nbytes)
    if not r.shm:
        CHKERR(MPI_Win_flush(r.owner, r.win))   # data complete at the owner before it is published
    ring_write(r, meta_off(r, t) + META_READY, t + 1)
    r.next_seq += 1
    return 1


cdef int ring_wait_ready(Ring *r, int64_t t, double timeout, double *deadline, bint *waited) except -1 nogil:
    """Wait until ticket t is published (owner only). Returns 1 when it is, 0 when
    the deadline passed first, 2 when it never will be (every producer closed)."""
    cdef int64_t ready, closed, tail, round = 0
    while True:
        ring_read(r, meta_off(r, t) + META_READY, &ready)
        if ready == t + 1:
            return 1
        # closed first: once every producer has closed, tail is final
        ring_read(r, OFF_CLOSED, &closed)
        if closed >= r.nproducers:
            ring_read(r, OFF_TAIL, &tail)
            if tail <= t:
                return 2
        waited[0] = True
        if past_deadline(timeout, deadline):
            return 0
        ring_wait(r, round)
        round += 1


cdef int ring_get(Ring *r, int64_t k, double timeout, bint *waited, int64_t *count) except -1 nogil:
    """Wait for the next k tickets (owner only); does not deliver them yet.
    Returns 1 with count = k, or fewer when the stream ended after them; 0 when
    not all k came in time (nothing consumed); 2 at end of stream."""
    cdef double deadline = 0
    cdef int64_t i
    cdef int rc = 1
    ring_publish_head(r)
    for i in range(k):
        rc = ring_wait_ready(r, r.next_ticket + i, timeout, &deadline, waited)
        if rc != 1:
            break
    else:
        i = k
    if rc == 0:
        return 0
    if i == 0:
        return 2
    if not r.shm:
        CHKERR(MPI_Win_sync(r.win))   # the payload written by MPI_Put is visible to loads
    count[0] = i
    return 1


cdef void ring_return(Ring *r, int64_t slot) noexcept nogil:
    """Give a delivered slot back (owner only). Makes no MPI call, so it is safe
    from buffer and DLPack deleters; on the rma path the new head is published
    by the owner's next rdq call."""
    (<int64_t *>(r.base + free_off(r, r.head)))[0] = slot
    r.head += 1
    if r.shm:
        rdq_store_release(r.base + OFF_HEAD, r.head)
        r.head_published = r.head

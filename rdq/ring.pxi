# The multi-ring protocol: how producers and the owner move through the window
# (layout.pxi says where everything is; docs/protocol.md argues why it is correct,
# and tests/model/multiring_model.py checks it by exhaustive interleaving).
#
# Each producer writes only into its own ring; the owner writes only the free
# lists.  No word has two writers, so there is no read-modify-write and no MPI
# atomic anywhere: on the rma transport a put is MPI_Put + MPI_Win_flush, which
# MPICH and Open MPI complete without the owner's help, and a producer reads the
# owner's free list (MPI_Get) only when its cached credit is used up.
#
# The same steps run on two memory backends, chosen once per queue:
#   shm: every rank maps the owner's shared-memory segment (memory.pxi): memcpy,
#        loads and stores, a release store of the stamp publishes a message.
#   rma: MPI_Put / MPI_Get / MPI_Win_flush into MPI_Win_allocate memory.  Puts
#        land in any order and byte by byte, so every record another rank reads
#        carries its own check (docs/protocol.md, "What rdq relies on").

cdef enum:
    CHECKED_MAX = 16384     # rma messages up to this size are hashed, not flushed twice
    FETCH_MAX = 256         # free-list records read per credit refresh
    STAGE_MESSAGES = 64     # put(more=True): at most this many messages staged at a time,
    STAGE_BYTES = 65536     #   and at most this many bytes of them
    MAX_PUT_CHUNK = 1 << 30 # MPI counts are C ints

cdef double BATCH_GRACE_S = 0.02    # quiet time after which a batch mixes producers (ring_select)

cdef enum Selection:
    SELECT_NONE = 0         # nothing to deliver yet
    SELECT_RING = 1         # count tickets of one ring
    SELECT_MIXED = 2        # count tickets across rings, to be copied
    SELECT_END = 3          # every producer closed and everything was delivered
    SELECT_STUCK = 4        # cannot be met until the owner releases views


# --- the window at creation ----------------------------------------------------

cdef void init_free_lists(Ring *r) noexcept nogil:
    """The owner's memory before anyone may read it: nothing sent, nothing closed,
    and free-list record j of every ring hands slot j to ticket j."""
    cdef int64_t i, entry
    cdef int64_t *word
    memset(r.base, 0, <size_t>r.free_base)
    for i in range(r.nrings * r.capacity):
        word = owner_word(r, free_off(r, i // r.capacity, i % r.capacity))
        entry = free_entry(r, i % r.capacity, i % r.capacity)
        word[0] = entry
        word[1] = free_check(r, i // r.capacity, i % r.capacity, entry)


# --- moving bytes ---------------------------------------------------------

cdef int rma_put(Ring *r, MPI_Aint off, const char *src, int64_t n) except -1 nogil:
    """Start writing n bytes at off in the owner's window; complete after rma_flush."""
    cdef int64_t done = 0, chunk
    while done < n:
        chunk = min(n - done, <int64_t>MAX_PUT_CHUNK)
        CHKERR(MPI_Put(<void *>(src + done), <int>chunk, MPI_BYTE, r.owner, r.disp0 + off + done,
                       <int>chunk, MPI_BYTE, r.win))
        r.calls.puts += 1
        done += chunk
    return 0


cdef int rma_get(Ring *r, MPI_Aint off, char *dst, int64_t n) except -1 nogil:
    CHKERR(MPI_Get(dst, <int>n, MPI_BYTE, r.owner, r.disp0 + off, <int>n, MPI_BYTE, r.win))
    r.calls.gets += 1
    return 0


cdef int rma_flush(Ring *r) except -1 nogil:
    CHKERR(MPI_Win_flush(r.owner, r.win))
    r.calls.flushes += 1
    return 0


cdef inline uint64_t header_check(int64_t ring, const int64_t *meta) noexcept nogil:
    return rdq_hash(meta, 3 * 8, <uint64_t>ring)


# --- producer ---------------------------------------------------------------

cdef int64_t ring_fetch_start(Ring *r, int64_t sent) except -1 nogil:
    """Start reading the free-list records of the tickets past credit_upto into r.fetched
    (rma: complete at the next flush).  Returns how many: those of tickets below
    sent + capacity, at most FETCH_MAX; later ones cannot be valid yet."""
    cdef int64_t first = r.credit_upto, n, at, head, i
    cdef int64_t *word
    n = min(sent + r.capacity - first, <int64_t>FETCH_MAX)
    if n <= 0:
        return 0
    if r.shm:
        for i in range(n):
            word = owner_word(r, free_off(r, r.ring, first + i))
            r.fetched[2 * i] = rdq_load_acquire(word)
            r.fetched[2 * i + 1] = rdq_load_acquire(word + 1)
        return n
    at = first % r.capacity
    head = min(n, r.capacity - at)
    rma_get(r, free_off(r, r.ring, first), <char *>r.fetched, head * FREE_BYTES)
    if n > head:
        rma_get(r, free_off(r, r.ring, 0), <char *>(r.fetched + 2 * head), (n - head) * FREE_BYTES)
    return n


cdef void ring_fetch_finish(Ring *r, int64_t n) noexcept nogil:
    """Take the valid prefix of the n fetched records: their slots are this producer's credit."""
    cdef int64_t first = r.credit_upto, i, slot
    for i in range(n):
        slot = free_slot(r, r.ring, first + i, r.fetched[2 * i], r.fetched[2 * i + 1])
        if slot < 0:
            break
        r.slots[(first + i) % r.capacity] = slot
        r.credit_upto = first + i + 1


cdef int ring_refresh(Ring *r) except -1 nogil:
    """Learn the slots the owner has handed back since the last look."""
    cdef int64_t n = ring_fetch_start(r, r.next_seq)
    if n and not r.shm:
        rma_flush(r)
    ring_fetch_finish(r, n)
    return 0


cdef int ring_write(Ring *r, int64_t t, const char *src, int64_t nbytes) except -1 nogil:
    """Write ticket t (credit known) into its slot and publish it, completing what is staged."""
    cdef int64_t slot = r.slots[t % r.capacity]
    cdef int64_t meta[4]
    cdef int64_t *owner_meta
    cdef bint checked = nbytes <= CHECKED_MAX
    if r.shm:
        owner_meta = owner_word(r, meta_off(r, r.ring, t))
        memcpy(slot_ptr(r, r.ring, slot), src, <size_t>nbytes)
        owner_meta[META_NBYTES] = nbytes
        rdq_store_release(owner_meta + META_STAMP, t + 1)
        return 0
    meta_record(r, t, src, nbytes, meta)
    # From here an MPI error leaves messages maybe delivered: the queue stops taking puts
    # on this rank (a retry would reuse a ticket) until a flush has completed them.
    r.unsure = True
    put_staged(r)
    rma_put(r, slot_off(r, r.ring, slot), src, nbytes)
    if not checked:
        rma_flush(r)   # a large payload is complete before its meta record is sent
    rma_put(r, meta_off(r, r.ring, t), <const char *>meta, META_BYTES)
    return flush_with_credit(r, t + 1)


cdef void meta_record(Ring *r, int64_t t, const char *payload, int64_t nbytes, int64_t *meta) noexcept nogil:
    """The rma meta record of ticket t: a large payload is not hashed (its flush orders it)."""
    meta[META_STAMP] = t + 1
    meta[META_NBYTES] = nbytes
    meta[META_PAYLOAD_CHECK] = <int64_t>rdq_hash(payload, nbytes, <uint64_t>r.ring) if nbytes <= CHECKED_MAX else 0
    meta[META_HEADER_CHECK] = <int64_t>header_check(r.ring, meta)


cdef int flush_with_credit(Ring *r, int64_t sent) except -1 nogil:
    """Complete every put of this rank (r.unsure set by the caller).  When the next ticket
    needs new credit, read it now and let this flush complete it too, so that a producer
    the owner keeps up with makes one flush per message (or per staged run)."""
    cdef int64_t fetching = 0
    if sent >= r.credit_upto:
        fetching = ring_fetch_start(r, sent)
    rma_flush(r)
    ring_fetch_finish(r, fetching)
    r.staged = 0
    r.unsure = False
    return 0


# --- producer: put(more=True) on rma --------------------------------------------
#
# A put that says more messages follow may leave its message staged in this rank's
# memory; the staged run is put (consecutive slots and meta records coalesced into one
# MPI_Put each) and completed by one flush at the next put without more, a put that
# fills the stage or needs credit, flush() or close().  Nothing else changes: the owner
# checks each message's hashes as it always does, so the run may land in any order.

cdef bint ring_can_stage(Ring *r) noexcept nogil:
    """Whether this rank's puts may be staged: rma, not the owner (its get() could wait
    for its own staged messages), and messages small enough to be hashed."""
    cdef int64_t n
    if r.stage != NULL:
        return True
    if r.shm or r.rank == r.owner or r.slot_bytes > CHECKED_MAX:
        return False
    n = max(1, min(min(r.capacity, <int64_t>STAGE_MESSAGES), <int64_t>STAGE_BYTES // r.slot_stride))
    r.stage = <char *>malloc(<size_t>(n * (r.slot_stride + META_BYTES)))
    if r.stage == NULL:
        return False
    r.stage_max = n
    return True


cdef int ring_stage(Ring *r, int64_t t, const char *src, int64_t nbytes) except -1 nogil:
    """Stage ticket t (credit known); complete the run when the stage is full."""
    cdef char *payload = r.stage + r.staged * r.slot_stride
    memcpy(payload, src, <size_t>nbytes)
    meta_record(r, t, payload, nbytes, <int64_t *>(r.stage + r.stage_max * r.slot_stride) + 4 * r.staged)
    r.staged += 1
    if r.staged == r.stage_max:
        r.unsure = True
        put_staged(r)
        flush_with_credit(r, t + 1)
    return 0


cdef int put_staged(Ring *r) except -1 nogil:
    """Start the puts of the staged run (tickets next_seq - staged ..): payloads of
    consecutive slots in one MPI_Put, meta records up to the ring's wrap in one."""
    cdef int64_t first = r.next_seq - r.staged, i = 0, j, slot
    cdef int64_t *metas = <int64_t *>(r.stage + r.stage_max * r.slot_stride)
    while i < r.staged:
        slot = r.slots[(first + i) % r.capacity]
        j = i + 1
        while j < r.staged and r.slots[(first + j) % r.capacity] == slot + j - i:
            j += 1
        rma_put(r, slot_off(r, r.ring, slot), r.stage + i * r.slot_stride,
                (j - 1 - i) * r.slot_stride + metas[4 * (j - 1) + META_NBYTES])
        i = j
    i = 0
    while i < r.staged:
        j = min(r.staged, i + r.capacity - (first + i) % r.capacity)
        rma_put(r, meta_off(r, r.ring, first + i), <const char *>(metas + 4 * i), (j - i) * META_BYTES)
        i = j
    return 0


cdef int ring_complete(Ring *r) except -1 nogil:
    """Put and complete the staged run, if any (flush(), close(), before waiting for credit)."""
    if r.staged:
        r.unsure = True
        put_staged(r)
        flush_with_credit(r, r.next_seq)
    return 0


cdef int ring_put(Ring *r, const char *src, int64_t nbytes, double timeout, bint *waited,
                  bint more) except -1 nogil:
    """Send one message. Returns 1 when sent (or staged: more), 0 when no slot came back
    in time (then nothing was written: a timeout leaves no trace)."""
    cdef int64_t t = r.next_seq, round = 0
    cdef double deadline = 0
    if t >= r.credit_upto:
        ring_complete(r)   # the owner cannot return slots of messages it cannot see yet
    while t >= r.credit_upto:
        ring_refresh(r)
        if t < r.credit_upto:
            break
        waited[0] = True
        if past_deadline(timeout, &deadline):
            return 0
        ring_wait(r, round)
        round += 1
    if more and ring_can_stage(r):
        r.next_seq = t + 1
        ring_stage(r, t, src, nbytes)
    else:
        ring_write(r, t, src, nbytes)
        r.next_seq = t + 1
    return 1


cdef int ring_close(Ring *r) except -1 nogil:
    """Tell the owner this producer sent next_seq messages (after the last one completed)."""
    cdef int64_t record[2]
    cdef int64_t *word
    record[0] = r.next_seq + 1
    record[1] = closed_check(r.ring, record[0])
    if r.shm:
        word = owner_word(r, ctrl_off(r, r.ring))
        rdq_store_release(word + 1, record[1])
        rdq_store_release(word, record[0])
        return 0
    r.unsure = True
    put_staged(r)
    rma_put(r, ctrl_off(r, r.ring), <const char *>record, sizeof(record))
    rma_flush(r)
    r.staged = 0
    r.unsure = False
    return 0


# --- owner --------------------------------------------------------------------

cdef int64_t ring_slot(Ring *r, int64_t ring, int64_t t) noexcept nogil:
    """The slot the owner handed to ticket t of a ring, or -1 when it has not yet."""
    cdef int64_t *word = owner_word(r, free_off(r, ring, t))
    return free_slot(r, ring, t, rdq_load_acquire(word), rdq_load_acquire(word + 1))


cdef bint ring_ready(Ring *r, int64_t ring, int64_t t) noexcept nogil:
    """Whether ticket t of a ring is complete in the window (owner)."""
    cdef int64_t *word = owner_word(r, meta_off(r, ring, t))
    cdef int64_t meta[4]
    cdef int64_t slot
    cdef int i
    if r.shm:
        return rdq_load_acquire(word + META_STAMP) == t + 1
    if rdq_load_relaxed(word + META_STAMP) != t + 1:
        return False
    for i in range(4):
        meta[i] = rdq_load_relaxed(word + i)
    if (meta[META_STAMP] != t + 1 or <uint64_t>meta[META_HEADER_CHECK] != header_check(ring, meta)
            or meta[META_NBYTES] < 0 or meta[META_NBYTES] > r.slot_bytes):
        return False
    if meta[META_NBYTES] > CHECKED_MAX:
        return True
    slot = ring_slot(r, ring, t)
    return slot >= 0 and <uint64_t>meta[META_PAYLOAD_CHECK] == rdq_hash(
        slot_ptr(r, ring, slot), meta[META_NBYTES], <uint64_t>ring)


cdef int64_t ring_count_ready(Ring *r, int64_t ring, int64_t limit) noexcept nogil:
    """Complete tickets of a ring from the next one to deliver on, up to limit (owner)."""
    cdef RingOwner *o = &r.rings[ring]
    while o.verified - o.delivered < limit and ring_ready(r, ring, o.verified):
        o.verified += 1
    return min(o.verified - o.delivered, limit)


cdef int64_t ring_closed_count(Ring *r, int64_t ring) noexcept nogil:
    """How many messages the ring's producer sent before it closed, or -1 while it has not."""
    cdef RingOwner *o = &r.rings[ring]
    cdef int64_t *word
    cdef int64_t closed
    if o.closed == 0:
        word = owner_word(r, ctrl_off(r, ring))
        closed = rdq_load_acquire(word)
        if closed > 0 and rdq_load_acquire(word + 1) == closed_check(ring, closed):
            o.closed = closed
    return o.closed - 1


cdef Selection ring_select(Ring *r, int64_t k, bint patient, int64_t *ring_out, int64_t *count) noexcept nogil:
    """What to deliver next, for k messages (owner); docs/protocol.md says why.

    Rings are visited round robin from r.next_ring.  A ring leads when it has k
    complete tickets, or its producer closed and all it has left is complete (a
    shorter last batch), or it was passed over with a message waiting and nothing
    new arrived in it for BATCH_GRACE_S: it gives its
    own (zero-copy) when it can.  Otherwise k complete tickets are taken from
    it and the rings after it and copied: by a ring that was passed over, or
    when k are there and none arrived for BATCH_GRACE_S (or the caller does not
    wait), so that a batch does not wait forever for one producer."""
    cdef int64_t j, ring, ready, left, held, total = 0, reachable = 0, arrivals = 0, lead = -1
    cdef bint closed_limits_all = True
    cdef double now = 0
    cdef RingOwner *o
    for j in range(r.nrings):
        ring = (r.next_ring + j) % r.nrings
        o = &r.rings[ring]
        ready = ring_count_ready(r, ring, k)
        left = ring_closed_count(r, ring)
        left = left - o.delivered if left >= 0 else INT64_MAX
        if ready and lead < 0 and o.passed and now == 0:
            now = rdq_now()
        if ready and lead < 0 and (ready >= k or ready == left or
                                   (o.passed and now - o.seen_time >= BATCH_GRACE_S)):
            lead = ring
            if ready >= k or ready == left:
                ring_out[0] = ring
                count[0] = min(ready, k)
                return SELECT_RING
        total += ready
        arrivals += o.verified
        held = o.delivered - rdq_load_relaxed(&o.returned)
        reachable += min(left, r.capacity - held)   # without a release by the owner
        closed_limits_all = closed_limits_all and left <= r.capacity - held
    if total < k and total < reachable:
        return SELECT_NONE      # more will come (also: a ring closed after its ready count was read)
    if total == 0 and closed_limits_all:
        return SELECT_END
    if total < k:
        return SELECT_STUCK     # only a release by the owner can let more in
    if lead < 0 and patient:
        now = rdq_now()
        if arrivals != r.arrivals:
            r.arrivals = arrivals
            r.arrival_time = now
            return SELECT_NONE
        if now - r.arrival_time < BATCH_GRACE_S:
            return SELECT_NONE
    ring_out[0] = lead          # where the copy starts (-1: the round robin's place)
    count[0] = k
    return SELECT_MIXED


cdef void ring_delivered(Ring *r, int64_t ring) noexcept nogil:
    """After a delivery from ring: the round robin moves past it, and every other ring with a
    message waiting notes that it was passed over, and when a message last arrived in it (a ring
    whose producer still sends is not stuck: it will have k)."""
    cdef int64_t j
    cdef double now = 0
    cdef RingOwner *o
    for j in range(r.nrings):
        o = &r.rings[j]
        o.passed = j != ring and o.verified > o.delivered
        if o.verified != o.seen:
            if now == 0:
                now = rdq_now()
            o.seen = o.verified
            o.seen_time = now
    r.next_ring = (ring + 1) % r.nrings


cdef void ring_return(Ring *r, int64_t ring, int64_t slot) noexcept nogil:
    """Hand a delivered slot back to its ring's producer (owner; any thread).

    No MPI call, so it is safe from buffer and DLPack deleters: producers read the
    free list with MPI_Get (rma) or loads (shm).  The lock serializes threads that
    release at once; each record is written check first, so a reader that sees the
    new entry with the old check rejects it."""
    cdef RingOwner *o = &r.rings[ring]
    cdef int64_t entry, round = 0
    cdef int64_t *word
    while rdq_cas(&r.return_lock, 0, 1) != 0:
        rdq_backoff(round)
        round += 1
    entry = free_entry(r, o.returned + r.capacity, slot)
    word = owner_word(r, free_off(r, ring, o.returned))
    rdq_store_release(word + 1, free_check(r, ring, o.returned, entry))
    rdq_store_release(word, entry)
    rdq_store_release(&o.returned, o.returned + 1)   # read without the lock by ring_select
    rdq_store_release(&r.return_lock, 0)


# --- waiting --------------------------------------------------------------------

cdef int ring_wait(Ring *r, int64_t round) except -1 nogil:
    """One step of waiting: serve MPI progress (rma), back off, let Ctrl-C through."""
    cdef int flag = 0
    if not r.shm:
        # Other queues of this rank may need it: an MPI that completes some operations
        # only with the target's help progresses them while the target is inside MPI.
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


cdef int ring_wait_select(Ring *r, int64_t k, double timeout, bint *waited,
                          int64_t *ring_out, int64_t *count) except -1 nogil:
    """ring_select until it finds something or the timeout passes (owner)."""
    cdef double deadline = 0
    cdef int64_t round = 0
    cdef int what
    while True:
        what = ring_select(r, k, timeout != 0, ring_out, count)
        # Stuck on the owner's own unreleased messages: with no timeout that is forever (the
        # caller raises at once); with a timeout, another thread of the owner may release them.
        if what != SELECT_NONE and not (what == SELECT_STUCK and timeout > 0):
            break
        waited[0] = True
        if past_deadline(timeout, &deadline):
            if what == SELECT_STUCK:
                what = SELECT_NONE
            break
        ring_wait(r, round)
        round += 1
    if what == SELECT_RING or what == SELECT_MIXED:
        # The payload loads come after the loads that found the tickets ready.  No MPI_Win_sync:
        # the unified model makes puts visible to loads without RMA calls, and on Open MPI's
        # osc/rdma it progresses every connection (one per get made fan-in 20x slower).
        rdq_fence_acquire()
    return what

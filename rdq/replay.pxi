# The replay protocol: producers write into slots of their own ring and never wait; the
# owner samples resident rows (layout.pxi says where; docs/replay.md argues why it is
# correct, and tests/model/replay_model.py checks it by exhaustive interleaving).
#
# A producer picks the slot of its message n by itself (reservoir: Algorithm R over its
# own stream; window: n % capacity), so nothing of the owner is needed and no word has
# two writers.  The owner may be reading a slot while its producer overwrites it, so a
# read is accepted only when it can tell the copy is whole, a seqlock:
#   shm:           stamp := -(n+1) (busy), payload, header, stamp := n+1 (release);
#   rma, checked:  payload and header (with the payload's hash) in one epoch, one flush;
#                  the owner checks the hash of what it copied;
#   rma, large:    busy header, flush, payload, flush, header, flush (no hash: a copy of
#                  more than CHECKED_MAX bytes is not hashed twice).
# The owner reads the header, copies, reads the header again: equal, stable and (rma,
# checked) matching the hash, the copy is message stamp - 1; else the row is drawn again.

_POLICIES = ("reservoir", "window")
cdef double ROW_RETRY_S = 0.1   # a bounded sample() waits at least this long for a half-written row



cdef inline uint64_t splitmix64(uint64_t *state) noexcept nogil:
    cdef uint64_t z
    state[0] += 0x9E3779B97F4A7C15ULL
    z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline int64_t uniform_below(uint64_t *state, int64_t n) noexcept nogil:
    """Uniform in [0, n): draws below 2^64 mod n would favour small values, so they are redrawn."""
    cdef uint64_t threshold = (<uint64_t>0 - <uint64_t>n) % <uint64_t>n, x
    while True:
        x = splitmix64(state)
        if x >= threshold:
            return <int64_t>(x % <uint64_t>n)


cdef inline bint set_add(int64_t *table, int64_t mask, int64_t x) noexcept nogil:
    """Add x >= 0 to an open-addressing set of mask + 1 entries (-1: empty); False when it was in."""
    cdef int64_t i = <int64_t>((<uint64_t>x * 0x9E3779B97F4A7C15ULL) >> 32) & mask
    while table[i] != -1:
        if table[i] == x:
            return False
        i = (i + 1) & mask
    table[i] = x
    return True


cdef void draw_distinct(uint64_t *rng, int64_t n, int64_t k, int64_t *out, int64_t *table,
                        int64_t mask) noexcept nogil:
    """k distinct integers of [0, n), every k-subset equally likely (Floyd's algorithm), in random
    order (a Fisher-Yates shuffle); they are added to the set in table."""
    cdef int64_t j, t, at = 0
    for j in range(n - k, n):
        t = uniform_below(rng, j + 1)
        if not set_add(table, mask, t):
            t = j
            set_add(table, mask, j)
        out[at] = t
        at += 1
    for j in range(k - 1, 0, -1):
        t = uniform_below(rng, j + 1)
        out[j], out[t] = out[t], out[j]


cdef inline int64_t replay_choose(bint window, int64_t n, int64_t capacity, uint64_t *rng) noexcept nogil:
    """The slot a producer's message n goes to, or -1 when the reservoir skips it.
    Reservoir (Algorithm R): after N messages, each of them is resident with
    probability min(1, capacity / N), independently of the others' order."""
    cdef int64_t j
    if window:
        return n % capacity
    if n < capacity:
        return n
    j = uniform_below(rng, n + 1)
    return j if j < capacity else -1


cdef int replay_write(Ring *r, int64_t slot, int64_t seq, int64_t ins, const char *src,
                      int64_t nbytes) except -1 nogil:
    """Write message seq (the producer's insert number ins) into a slot of its ring."""
    cdef int64_t header[4]
    cdef int64_t busy[4]
    cdef int64_t *word
    cdef bint checked = nbytes <= CHECKED_MAX
    header[HEADER_STAMP] = seq + 1
    header[HEADER_INSERT] = ins
    header[HEADER_PAYLOAD_CHECK] = <int64_t>rdq_hash(src, nbytes, <uint64_t>r.ring) if checked and not r.shm else 0
    header[HEADER_CHECK] = <int64_t>slot_header_check(r, r.ring, slot, header)
    if r.shm:
        word = owner_word(r, header_off(r, r.ring, slot))
        rdq_store_relaxed(word + HEADER_STAMP, -(seq + 1))
        rdq_fence_release()   # the busy stamp is visible before any byte of the payload changes
        memcpy(slot_ptr(r, r.ring, slot), src, <size_t>nbytes)
        rdq_store_relaxed(word + HEADER_INSERT, header[HEADER_INSERT])
        rdq_store_relaxed(word + HEADER_PAYLOAD_CHECK, header[HEADER_PAYLOAD_CHECK])
        rdq_store_relaxed(word + HEADER_CHECK, header[HEADER_CHECK])
        rdq_store_release(word + HEADER_STAMP, seq + 1)
        return 0
    # An MPI error from here on may leave the slot half written (never readable: its header
    # does not match) or whole: the rank puts no more (Queue's unsure).
    r.unsure = True
    if not checked:
        memcpy(busy, header, sizeof(busy))
        busy[HEADER_STAMP] = -(seq + 1)
        busy[HEADER_CHECK] = <int64_t>slot_header_check(r, r.ring, slot, busy)
        rma_put(r, header_off(r, r.ring, slot), <const char *>busy, HEADER_BYTES)
        rma_flush(r)
    rma_put(r, slot_off(r, r.ring, slot), src, nbytes)
    if not checked:
        rma_flush(r)
    rma_put(r, header_off(r, r.ring, slot), <const char *>header, HEADER_BYTES)
    rma_flush(r)
    r.unsure = False
    return 0


cdef int replay_close(Ring *r, int64_t offered, int64_t inserted) except -1 nogil:
    """Tell the owner this producer offered and inserted its last (after the last write completed)."""
    cdef int64_t record[3]
    cdef int64_t *word
    record[0] = offered + 1
    record[1] = inserted
    record[2] = <int64_t>replay_close_check(r.ring, record)
    if r.shm:
        word = owner_word(r, ctrl_off(r, r.ring))
        rdq_store_relaxed(word + 1, record[1])
        rdq_store_relaxed(word + 2, record[2])
        rdq_store_release(word, record[0])
        return 0
    rma_put(r, ctrl_off(r, r.ring), <const char *>record, sizeof(record))
    return rma_flush(r)


cdef bint replay_closed(Ring *r, int64_t ring, int64_t *record) noexcept nogil:
    """Whether the ring's producer has closed; record gets (offered + 1, inserted) (owner)."""
    cdef int64_t *word = owner_word(r, ctrl_off(r, ring))
    record[0] = rdq_load_acquire(word)
    if record[0] == 0:
        return False
    record[1] = rdq_load_relaxed(word + 1)
    return <uint64_t>rdq_load_relaxed(word + 2) == replay_close_check(ring, record)


cdef inline void load_header(int64_t *word, int64_t *header) noexcept nogil:
    header[HEADER_STAMP] = rdq_load_acquire(word + HEADER_STAMP)
    header[HEADER_INSERT] = rdq_load_relaxed(word + HEADER_INSERT)
    header[HEADER_PAYLOAD_CHECK] = rdq_load_relaxed(word + HEADER_PAYLOAD_CHECK)
    header[HEADER_CHECK] = rdq_load_relaxed(word + HEADER_CHECK)


cdef inline bint header_valid(Ring *r, int64_t ring, int64_t slot, const int64_t *header) noexcept nogil:
    return <uint64_t>header[HEADER_CHECK] == slot_header_check(r, ring, slot, header)


cdef bint replay_read(Ring *r, int64_t ring, int64_t slot, char *dst, int64_t nbytes,
                      int64_t *header) noexcept nogil:
    """Copy a slot's message to dst; False when it was not whole (owner; draw again)."""
    cdef int64_t *word = owner_word(r, header_off(r, ring, slot))
    cdef int64_t after[4]
    load_header(word, header)
    if header[HEADER_STAMP] <= 0 or not header_valid(r, ring, slot, header):
        return False
    memcpy(dst, slot_ptr(r, ring, slot), <size_t>nbytes)
    rdq_fence_acquire()   # the copy's loads happen before the header is read again
    load_header(word, after)
    if memcmp(header, after, sizeof(after)) != 0:
        return False
    return r.shm or nbytes > CHECKED_MAX or <uint64_t>header[HEADER_PAYLOAD_CHECK] == rdq_hash(
        dst, nbytes, <uint64_t>ring)


cdef int64_t replay_filled(Ring *r, int64_t ring, int64_t known) noexcept nogil:
    """Slots of a ring written at least once (both policies fill slots 0, 1, ... first)."""
    while known < r.capacity and rdq_load_acquire(owner_word(r, header_off(r, ring, known))) != 0:
        known += 1
    return known


cdef class ReplayBuffer(_Window):
    """ReplayBuffer(comm, owner=0, capacity=1024, shape=None, dtype=None, *, policy="reservoir", producers=None, seed=None, name=None, transport=None)
--

    A training buffer in an MPI-3 RMA window on one rank (the owner): producers
    put and never wait, the owner draws random batches of what is resident.

    Collective over ``comm``, with the same arguments on every rank.  Each
    producer (default: all but the owner) owns ``capacity`` slots of
    ``shape``/``dtype`` arrays, and decides by itself where a message goes:
    ``policy="reservoir"`` keeps a uniform sample of everything it has put
    (Algorithm R: after N puts each of them is resident with probability
    capacity / N), ``policy="window"`` keeps its newest ``capacity`` messages.
    ``seed`` makes the producers' choices and the owner's draws repeatable.
    ``transport`` is as for rdq.Queue.
    """
    _noun = "replay buffer"

    @cython.embedsignature(False)
    def __init__(self, comm, owner=0, capacity=1024, shape=None, dtype=None, *,
                 policy="reservoir", producers=None, seed=None, name=None, transport=None):
        if policy not in _POLICIES:
            raise ValueError(f"rdq.ReplayBuffer: policy must be one of {_POLICIES}, got {policy!r}")
        if shape is None or dtype is None:
            raise ValueError("rdq.ReplayBuffer: needs shape and dtype (its rows are sampled as one array)")
        if seed is not None:
            seed = _as_index(seed, "seed", "rdq.ReplayBuffer")
            if seed < 0:
                raise ValueError(f"rdq.ReplayBuffer: seed must be None or an integer >= 0, got {seed!r}")
        self.policy = policy
        self.window_policy = policy == "window"
        self._setup(comm, owner, capacity, shape, dtype, None, producers, None, name, transport,
                    (("policy", policy), ("seed", seed)))
        # every rank its own stream: the same seed gives each producer different choices
        entropy = [seed, self.rank] if seed is not None else None
        seeds = np.random.SeedSequence(entropy)
        self.rng_state = <uint64_t>seeds.generate_state(1, np.uint64)[0]
        self.draw_state = <uint64_t>seeds.spawn(1)[0].generate_state(1, np.uint64)[0]

    cdef tuple _layout(self, int64_t nrings, int64_t capacity, int64_t slot_bytes):
        return replay_layout(nrings, capacity, slot_bytes)

    cdef void _init_memory(self) noexcept nogil:
        memset(self.ring.base, 0, <size_t>self.ring.payload_base)   # never written, nobody closed

    cdef _init_ring(self, tuple layout):
        cdef int64_t p = len(self.producers), slots = p * self.capacity, words = 3 * p + 1 + 2 * slots, i
        _Window._init_ring(self, layout)
        if self.rank == self.owner:
            self.filled = <int64_t *>PyMem_Malloc(words * sizeof(int64_t))
            if self.filled == NULL:
                raise MemoryError()
            memset(self.filled, 0, words * sizeof(int64_t))
            self.starts = self.filled + p
            self.ranks = self.starts + p + 1
            self.seen_stamp = self.ranks + p
            self.draws = self.seen_stamp + slots
            for i in range(p):
                self.ranks[i] = self.producers[i]

    def __dealloc__(self):
        PyMem_Free(self.filled)

    cdef int _send(self, const char *data, int64_t nbytes, double timeout, bint *waited, bint more) except -1 nogil:
        cdef Ring *r = &self.ring
        cdef int64_t n = r.next_seq
        cdef int64_t slot = replay_choose(self.window_policy, n, r.capacity, &self.rng_state)
        if slot >= 0:
            replay_write(r, slot, n, self.inserted, data, nbytes)
            self.inserted += 1
        r.next_seq = n + 1
        return 1 if slot >= 0 else 2

    cdef int _close_ring(self) except -1 nogil:
        return replay_close(&self.ring, self.ring.next_seq, self.inserted)

    # --- owner -----------------------------------------------------------------

    cdef int64_t _resident(self) except -1 nogil:
        """Messages in the buffer now (owner): every slot written at least once holds one."""
        cdef int64_t ring, total = 0
        if not self.ring.shm:
            CHKERR(MPI_Win_sync(self.ring.win))   # what MPI_Put wrote is visible to the owner's loads
            self.ring.calls.syncs += 1
        for ring in range(self.ring.nrings):
            self.filled[ring] = replay_filled(&self.ring, ring, self.filled[ring])
            total += self.filled[ring]
        return total

    cdef bint _ended(self) noexcept nogil:
        cdef int64_t ring
        cdef int64_t record[2]
        for ring in range(self.ring.nrings):
            if not replay_closed(&self.ring, ring, record):
                return False
        return True

    @property
    def resident(self):
        """Messages in the buffer now (owner only)."""
        self._check_usable("resident")
        self._check_owner("resident")
        return self._resident()

    @property
    def ended(self):
        """Whether every producer has closed (owner only): from then on the buffer does not change."""
        self._check_usable("ended")
        self._check_owner("ended")
        return self._ended()

    def sample(self, k, block=True, timeout=None):
        """k distinct resident messages drawn uniformly at random (owner only), copied
        into one rdq.Batch of shape (k, *shape) with .sources and .seqs.

        Waits until k messages are resident (rdq.Empty when block=False or the timeout
        passes first).  Once every producer has closed, returns all that are resident
        when fewer than k are (a short batch), and raises rdq.Closed when none ever was.
        A row a producer was overwriting while it was copied is drawn again
        (stats()["redrawn"]); no row of a batch is ever torn.
        """
        cdef double c_timeout = _as_timeout(block, timeout, "sample")
        cdef int64_t total = self.ring.nrings * self.capacity, resident = 0, want
        cdef bint ended = False
        if type(k) is not int:
            k = _as_index(k, "sample(k)", self._where())
        if k < 1 or k > total:
            raise ValueError(f"{self._where()}: sample(k) needs 1 <= k <= {total} (producers x capacity), got {k!r}")
        want = k
        self._check_usable("sample()")
        self._check_owner("sample()")
        self._enter(b"sample()", False)
        try:
            with nogil:
                resident = self._wait_resident(want, c_timeout, &ended)
            if resident < k and not ended:
                self.empty_waits += 1
                raise Empty(f"{self._where()}: {resident} messages resident, fewer than {k}" +
                            ("" if c_timeout == 0 else f" within {c_timeout} s"))
            if resident == 0:
                raise Closed(f"{self._where()}: end of stream: all {self.ring.nrings} producers closed "
                             f"without putting anything")
            count = min(k, resident)
            batch = self._new_batch(count, self.slot_bytes, np.empty(count, np.int32), np.empty(count, np.int64))
            batch.rows = PyByteArray_FromStringAndSize(NULL, batch.nbytes)   # cheaper than numpy's
            batch.data = PyByteArray_AS_STRING(batch.rows)
            batch.c_strides[0] = self.slot_bytes
            batch.own_copy = True
            self._fill_rows(batch, count, resident, c_timeout)
        finally:
            self._leave()
        self.n_gets += count
        self.bytes_got += batch.nbytes
        return batch

    cdef int64_t _wait_resident(self, int64_t k, double timeout, bint *ended) except -1 nogil:
        cdef double deadline = 0
        cdef int64_t round = 0, resident
        while True:
            resident = self._resident()
            if resident >= k:
                return resident
            if self._ended():
                ended[0] = True
                return self._resident()   # final: every write completed before its producer closed
            if past_deadline(timeout, &deadline):
                return resident
            ring_wait(&self.ring, round)
            round += 1

    cdef int64_t _read_rows(self, Batch batch, ReplayRows *rows, int64_t npending) except -1 nogil:
        """Copy the pending rows (where[row]: an index among the resident messages); the rows that
        were not whole are moved to the front of pending, and their number returned."""
        cdef Ring *r = &self.ring
        cdef int64_t nfailed = 0, i, row, ring, slot, at
        cdef int64_t header[4]
        if not r.shm:
            CHKERR(MPI_Win_sync(r.win))   # what MPI_Put wrote is visible to the owner's loads
            r.calls.syncs += 1
        for i in range(npending):
            row = rows.pending[i]
            ring = bisect_right(rows.starts, r.nrings + 1, rows.where[row]) - 1
            slot = rows.where[row] - rows.starts[ring]
            if not replay_read(r, ring, slot, batch.data + row * r.slot_bytes, r.slot_bytes, header):
                rows.pending[nfailed] = row
                nfailed += 1
                continue
            rows.sources[row] = rows.ranks[ring]
            rows.seqs[row] = header[HEADER_STAMP] - 1
            at = ring * r.capacity + slot
            if self.seen_stamp[at] != header[HEADER_STAMP]:   # its first draw: stamps are unique per ring
                self.seen_stamp[at] = header[HEADER_STAMP]
                self.draws[at] = 0
                self.distinct += 1
            self.draws[at] += 1
        return nfailed

    cdef int _fill_rows(self, Batch batch, int64_t count, int64_t resident, double timeout) except -1:
        """Copy count distinct resident messages, drawn uniformly, into the batch's rows."""
        cdef int64_t tsize = 8, dropped, i
        cdef int32_t[::1] sources = batch.sources
        cdef int64_t[::1] seqs = batch.seqs
        cdef ReplayRows rows
        while tsize < 4 * count:
            tsize *= 2
        rows.where = <int64_t *>PyMem_Malloc((2 * count + tsize) * sizeof(int64_t))
        if rows.where == NULL:
            raise MemoryError()
        rows.pending = rows.where + count
        rows.table = rows.pending + count
        rows.mask = tsize - 1
        rows.starts, rows.ranks, rows.sources, rows.seqs = self.starts, self.ranks, &sources[0], &seqs[0]
        try:
            with nogil:
                dropped = self._draw_and_copy(batch, &rows, count, resident, timeout)
            if dropped < 0:
                raise Empty(f"{self._where()}: a row stayed half-written for {max(timeout, ROW_RETRY_S)} s "
                            f"(did its producer fail in the middle of a put?)")
            if dropped:
                self._drop_rows(batch, [i for i in range(count) if rows.where[i] < 0])
        finally:
            PyMem_Free(rows.where)
        self.drawn += batch.c_shape[0]
        return 0

    cdef int64_t _draw_and_copy(self, Batch batch, ReplayRows *rows, int64_t count, int64_t resident,
                                double timeout) except? -3 nogil:
        """Draw, copy, and draw again for a row caught half-written: another message not yet in
        the batch, or the same one once all are.  A slot still not whole after its producer
        closed never will be (an MPI error struck its write): its row is dropped (where < 0) when
        no other message is left.  Returns the rows dropped, or -1 when the timeout passed."""
        cdef int64_t i, row, t, nfailed, npending = count, chosen = count, dropped = 0, round = 0
        cdef double deadline = 0
        cdef bint ended
        memset(rows.table, 0xFF, (rows.mask + 1) * sizeof(int64_t))   # every entry -1: empty
        rows.starts[0] = 0
        for i in range(self.ring.nrings):
            rows.starts[i + 1] = rows.starts[i] + self.filled[i]
        draw_distinct(&self.draw_state, resident, count, rows.where, rows.table, rows.mask)
        for i in range(count):
            rows.pending[i] = i
        while npending:
            nfailed = self._read_rows(batch, rows, npending)
            self.redrawn += nfailed
            ended = nfailed and self._ended()
            if nfailed and not ended:
                if timeout >= 0 and past_deadline(max(timeout, ROW_RETRY_S), &deadline):
                    return -1
                ring_wait(&self.ring, round)   # a write is usually whole again in microseconds
                round += 1
            npending = 0
            for i in range(nfailed):
                row = rows.pending[i]
                if chosen < resident and chosen <= rows.mask // 2:
                    t = uniform_below(&self.draw_state, resident)
                    while not set_add(rows.table, rows.mask, t):
                        t = uniform_below(&self.draw_state, resident)
                    rows.where[row] = t
                    chosen += 1
                elif ended:
                    rows.where[row] = -1
                    dropped += 1
                    continue
                rows.pending[npending] = row
                npending += 1
        return dropped

    cdef _drop_rows(self, Batch batch, list rows):
        keep = np.ones(batch.c_shape[0], bool)
        keep[rows] = False
        batch.rows = np.frombuffer(batch.rows, np.uint8).reshape(batch.c_shape[0], -1)[keep].reshape(-1)
        batch.sources, batch.seqs = batch.sources[keep], batch.seqs[keep]
        batch.data = <char *><size_t>batch.rows.ctypes.data
        batch.c_shape[0] = keep.sum()
        batch.nbytes = batch.c_shape[0] * self.slot_bytes

    def stats(self):
        """This rank's counters.  On the owner, of the whole buffer: resident, inserted,
        evicted (overwritten), skipped (left out by the reservoir), drawn (rows sampled),
        distinct (messages drawn at least once, since the start), redrawn (rows drawn again because a producer was overwriting them) and reuse (how
        often each resident message was drawn, on average).  The owner learns what a producer
        skipped from its next insert (exactly once it closed).  On another producer, its own
        inserted, evicted and skipped."""
        stats = _Window.stats(self)
        if self.is_producer:
            stats.update(inserted=self.inserted, evicted=max(0, self.inserted - self.capacity),
                         skipped=self.ring.next_seq - self.inserted)
        if self.rank == self.owner and not self.freed and not _mpi_finalized:
            stats.update(self._buffer_stats())
        return stats

    cdef dict _buffer_stats(self):
        cdef Ring *r = &self.ring
        cdef int64_t ring, slot, offered, inserted, resident = self._resident(), reused = 0
        cdef int64_t totals[3]
        cdef int64_t header[4]
        cdef int64_t record[2]
        totals[0] = totals[1] = totals[2] = 0
        for ring in range(r.nrings):
            offered = inserted = 0
            for slot in range(self.filled[ring]):
                load_header(owner_word(r, header_off(r, ring, slot)), header)
                if header_valid(r, ring, slot, header):
                    offered = max(offered, abs(header[HEADER_STAMP]))
                    inserted = max(inserted, header[HEADER_INSERT] + 1)
                    if header[HEADER_STAMP] == self.seen_stamp[ring * r.capacity + slot]:
                        reused += self.draws[ring * r.capacity + slot]
            if replay_closed(r, ring, record):
                offered, inserted = record[0] - 1, record[1]
            elif ring == r.ring:
                offered, inserted = r.next_seq, self.inserted   # the owner's own puts: known here
            totals[0] += inserted
            totals[1] += max(0, inserted - r.capacity)
            totals[2] += offered - inserted
        return {"resident": resident, "inserted": totals[0], "evicted": totals[1], "skipped": totals[2],
                "drawn": self.drawn, "distinct": self.distinct, "redrawn": self.redrawn,
                "reuse": <double>reused / resident if resident else 0.0}


cdef inline int64_t bisect_right(const int64_t *a, int64_t n, int64_t x) noexcept nogil:
    """The first index of the sorted a[0:n] whose value is > x."""
    cdef int64_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo

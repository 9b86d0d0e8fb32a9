# The owner's window: every region and offset in one place (docs/protocol.md).
#
#   control   nrings records of CTRL_BYTES: closed = n + 1, closed_check
#   meta      nrings x capacity records of META_BYTES, by ticket % capacity:
#             stamp = ticket + 1, nbytes, payload_check, header_check
#   free      nrings x capacity records of FREE_BYTES, by ticket % capacity:
#             entry = lapbase(ticket) + slot + 1, entry_check
#             (a check is rdq_check(value, where the record is): a torn record fails it)
#   payload   nrings x capacity slots of slot_stride bytes: slot_bytes rounded up to 64,
#             so every slot starts 64-byte aligned (what JAX and SIMD code want), and
#             consecutive slots of one ring are one (k, *shape) array (dense when
#             slot_bytes is a multiple of 64, else with a row stride of slot_stride)
#
# Ring i belongs to producers[i]; each word above has one writer (the ring's producer,
# or the owner for the free list).

cdef enum:
    CTRL_BYTES = 64
    META_BYTES = 32
    FREE_BYTES = 16
    META_STAMP = 0          # word indices in a meta record
    META_NBYTES = 1
    META_PAYLOAD_CHECK = 2
    META_HEADER_CHECK = 3


def window_layout(nrings, capacity, slot_bytes):
    """(meta_base, free_base, payload_base, slot_stride, total bytes) of a queue's window."""
    records = nrings * capacity
    meta_base = nrings * CTRL_BYTES
    free_base = meta_base + records * META_BYTES
    payload_base = (free_base + records * FREE_BYTES + 63) // 64 * 64
    slot_stride = (slot_bytes + 63) // 64 * 64
    return meta_base, free_base, payload_base, slot_stride, payload_base + records * slot_stride


cdef inline MPI_Aint ctrl_off(Ring *r, int64_t ring) noexcept nogil:
    return ring * CTRL_BYTES


cdef inline MPI_Aint meta_off(Ring *r, int64_t ring, int64_t ticket) noexcept nogil:
    return r.meta_base + (ring * r.capacity + ticket % r.capacity) * META_BYTES


cdef inline MPI_Aint free_off(Ring *r, int64_t ring, int64_t ticket) noexcept nogil:
    return r.free_base + (ring * r.capacity + ticket % r.capacity) * FREE_BYTES


cdef inline MPI_Aint slot_off(Ring *r, int64_t ring, int64_t slot) noexcept nogil:
    return r.payload_base + (ring * r.capacity + slot) * r.slot_stride


cdef inline char *slot_ptr(Ring *r, int64_t ring, int64_t slot) noexcept nogil:
    """Address of a slot in the owner's own memory (owner only)."""
    return r.base + slot_off(r, ring, slot)


cdef inline int64_t *owner_word(Ring *r, MPI_Aint off) noexcept nogil:
    return <int64_t *>(r.base + off)


cdef inline int64_t free_entry(Ring *r, int64_t ticket, int64_t slot) noexcept nogil:
    """The free-list word that hands slot to ticket: the lap makes last lap's entry invalid."""
    return ticket - ticket % r.capacity + slot + 1


cdef inline int64_t free_check(Ring *r, int64_t ring, int64_t ticket, int64_t entry) noexcept nogil:
    return rdq_check(entry, 2 * (ring * r.capacity + ticket % r.capacity) + 1)


cdef inline int64_t closed_check(int64_t ring, int64_t closed) noexcept nogil:
    return rdq_check(closed, 2 * ring)


cdef inline int64_t free_slot(Ring *r, int64_t ring, int64_t ticket, int64_t entry, int64_t check) noexcept nogil:
    """The slot a free-list record hands to ticket, or -1 when it does not (yet, or torn)."""
    cdef int64_t slot = entry - 1 - (ticket - ticket % r.capacity)
    if slot < 0 or slot >= r.capacity or check != free_check(r, ring, ticket, entry):
        return -1
    return slot


# A replay buffer's window (replay.pxi), in the same terms:
#
#   control   nrings records of CTRL_BYTES: closed = offered + 1, inserted, check
#   headers   nrings x capacity records of HEADER_BYTES, by slot:
#             stamp, insert number, payload_check, header_check
#             stamp: 0 never written, seq + 1 holds message seq whole, -(seq + 1) being overwritten
#   payload   nrings x capacity slots of slot_stride bytes, as a queue's
#
# Ring i belongs to producers[i], and it alone writes its records: the owner only reads.

cdef enum:
    HEADER_BYTES = 32
    HEADER_STAMP = 0        # word indices in a header
    HEADER_INSERT = 1
    HEADER_PAYLOAD_CHECK = 2
    HEADER_CHECK = 3


def replay_layout(nrings, capacity, slot_bytes):
    """(header_base, headers_end, payload_base, slot_stride, total bytes) of a replay buffer's window."""
    records = nrings * capacity
    header_base = nrings * CTRL_BYTES
    headers_end = header_base + records * HEADER_BYTES
    payload_base = (headers_end + 63) // 64 * 64
    slot_stride = (slot_bytes + 63) // 64 * 64
    return header_base, headers_end, payload_base, slot_stride, payload_base + records * slot_stride


cdef inline MPI_Aint header_off(Ring *r, int64_t ring, int64_t slot) noexcept nogil:
    return r.meta_base + (ring * r.capacity + slot) * HEADER_BYTES


cdef inline uint64_t slot_header_check(Ring *r, int64_t ring, int64_t slot, const int64_t *header) noexcept nogil:
    return rdq_hash(header, 3 * 8, <uint64_t>(ring * r.capacity + slot))


cdef inline uint64_t replay_close_check(int64_t ring, const int64_t *record) noexcept nogil:
    return rdq_hash(record, 2 * 8, <uint64_t>ring)

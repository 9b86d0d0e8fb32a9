# Queue: collective construction and teardown, put, get, close, stats.

import itertools
import math
import os

import numpy as np

_UINT8 = np.dtype(np.uint8)
_queue_numbers = itertools.count()   # same on every rank when queues are made in the same order
_TRANSPORTS = ("auto", "shm", "rma")
cdef enum:
    SMALL_PUT = 65536   # bytes; smaller puts first try without releasing the GIL


cdef double _as_timeout(block, timeout, str what) except? -2:
    """-1: wait forever, 0: do not wait, > 0: seconds."""
    if not block:
        return 0.0
    if timeout is None:
        return -1.0
    cdef double t = float(timeout)
    if math.isnan(t) or t < 0:
        raise ValueError(f"{what}: timeout must be None or a number >= 0, got {timeout!r}")
    return t


def _available_memory():
    """Bytes the owner can still allocate (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _network_path_forced():
    # MPICH's switch that disables shared memory between ranks of one node.
    return any(os.environ.get(v, "0") not in ("", "0")
               for v in ("MPIR_CVAR_NOLOCAL", "MPIR_CVAR_CH4_NOLOCAL", "MPICH_NOLOCAL"))


cdef int _check_dlpack(Queue self, _DLPackInput dl) except -1:
    cdef DLTensor *t = dl.tensor
    if t.device.device_type != kDLCPU:
        raise ValueError(f"{self._where()}: put() takes host (CPU) memory; this tensor is on DLPack device "
                         f"type {t.device.device_type} (move it with .cpu() first)")
    if not dl.c_contiguous():
        raise ValueError(f"{self._where()}: put() needs a C-contiguous tensor (.contiguous() makes one)")
    if self.dtype is None:
        if dl.nbytes() > self.slot_bytes:
            raise ValueError(f"{self._where()}: message of {dl.nbytes()} bytes exceeds slot_bytes={self.slot_bytes}")
        return 0
    if t.dtype.code != self.dl_code or t.dtype.bits != self.dl_bits or t.dtype.lanes != 1:
        raise TypeError(f"{self._where()}: expected dtype {self.dtype}, got DLPack type "
                        f"(code {t.dtype.code}, bits {t.dtype.bits}, lanes {t.dtype.lanes})")
    if dl.shape() != self.shape:
        raise ValueError(f"{self._where()}: expected shape {self.shape}, got {dl.shape()}")
    return 0


cdef class Queue:
    """A queue in an MPI-3 RMA window on one rank (the owner) of a communicator.

    Collective over ``comm``: every rank calls it with the same arguments.

    Typed queues carry arrays of one ``shape`` and ``dtype``; raw-bytes queues
    (``slot_bytes=``) carry byte strings of up to ``slot_bytes``, each message
    with its own length.  Every rank in ``producers`` (default: all) may put;
    only the owner gets.  ``transport`` (default ``$RDQ_TRANSPORT`` or "auto")
    picks "shm" (all ranks on one node: load/store into a shared window) or
    "rma" (MPI one-sided calls for every access); "auto" takes shm when every
    rank shares the owner's node and MPICH's NOLOCAL switch is off.
    """

    def __cinit__(self):
        self.ring.win = MPI_WIN_NULL
        self.ring.comm = MPI_COMM_NULL
        self.freed = True   # until __init__ has built the window

    def __init__(self, comm, owner=0, capacity=1024, shape=None, dtype=None, *,
                 slot_bytes=None, producers=None, sample=None, name=None, transport=None):
        if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
            raise TypeError(f"rdq.Queue needs an mpi4py intracommunicator, got {comm!r}")
        size = comm.Get_size()
        self.rank = comm.Get_rank()
        self.name = str(name) if name is not None else f"queue{next(_queue_numbers)}"
        where = f"rank {self.rank}: rdq.Queue {self.name!r}"

        if not isinstance(owner, int) or not 0 <= owner < size:
            raise ValueError(f"{where}: owner must be a rank of the communicator (0..{size - 1}), got {owner!r}")
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"{where}: capacity must be an integer >= 1, got {capacity!r}")
        if slot_bytes is not None:
            if shape is not None or dtype is not None:
                raise ValueError(f"{where}: give either shape and dtype (typed queue) or slot_bytes (raw bytes), not both")
            if not isinstance(slot_bytes, int) or slot_bytes < 1:
                raise ValueError(f"{where}: slot_bytes must be an integer >= 1, got {slot_bytes!r}")
            self.shape = None
            self.dtype = None
            self.slot_bytes = slot_bytes
            self.itemsize = 1
            self.format = b"B"
            self.dl_code, self.dl_bits = kDLUInt, 8
            self.kind = b'u'
        else:
            if shape is None or dtype is None:
                raise ValueError(f"{where}: a typed queue needs shape and dtype; a raw-bytes queue needs slot_bytes")
            shape = (shape,) if isinstance(shape, int) else tuple(shape)
            if not shape or not all(isinstance(d, int) and d >= 1 for d in shape):
                raise ValueError(f"{where}: shape must be a non-empty tuple of integers >= 1, got {shape!r}")
            dt = np.dtype(dtype)
            if not dt.isnative:
                raise TypeError(f"{where}: dtype {dt} is not in native byte order")
            try:
                self.dl_code, self.dl_bits = _dtype_to_dl(dt)
            except TypeError as exc:
                raise TypeError(f"{where}: {exc}") from None
            if math.prod(shape) * dt.itemsize >= 1 << 62:
                raise ValueError(f"{where}: shape {shape} of {dt} overflows the window size")
            self.shape = shape
            self.dtype = dt
            self.kind = ord(dt.kind)
            self.slot_bytes = math.prod(shape) * dt.itemsize
        if producers is None:
            producers = range(size)
        producers = tuple(sorted(set(int(p) for p in producers)))
        if not producers or min(producers) < 0 or max(producers) >= size:
            raise ValueError(f"{where}: producers must be a non-empty list of ranks in 0..{size - 1}")
        if sample is not None and not callable(sample):
            raise TypeError(f"{where}: sample must be a callable x -> bool (see rdq.sampling), got {sample!r}")
        if transport is None:
            transport = os.environ.get("RDQ_TRANSPORT") or "auto"
        if transport not in _TRANSPORTS:
            raise ValueError(f"{where}: transport must be one of {_TRANSPORTS}, got {transport!r}")

        free_off = OFF_META + capacity * META_BYTES
        payload_off = (free_off + capacity * 8 + 63) // 64 * 64
        total = payload_off + capacity * self.slot_bytes
        problem = None
        if total >= 1 << 62:
            problem = f"capacity {capacity} x {self.slot_bytes} bytes overflows the window size"
        elif self.rank == owner:
            avail = _available_memory()
            if avail is not None and total > avail:
                problem = (f"needs {total} bytes on owner rank {owner}, "
                           f"which has only {avail} bytes of memory available")

        # Every rank must agree on the queue, and learn about the owner's problem, before anything collective.
        spec = (owner, capacity, self.slot_bytes, self.shape, None if self.dtype is None else self.dtype.str,
                producers, transport)
        gathered = comm.allgather((spec, problem))
        problems = [f"rank {r}: {p}" for r, (_, p) in enumerate(gathered) if p]
        if problems:
            raise ValueError(f"{where}: cannot create the queue: " + "; ".join(problems))
        for r, (other, _) in enumerate(gathered):
            if other != spec:
                raise ValueError(f"{where}: rdq.Queue is collective and needs the same arguments on every rank; "
                                 f"rank {r} passed (owner, capacity, slot_bytes, shape, dtype, producers, transport)="
                                 f"{other}, this rank {spec}")

        self.comm = comm
        self.owner = owner
        self.capacity = capacity
        self.producers = producers
        self.is_producer = self.rank in producers
        self.sample = sample
        self.format_ok = {}
        if self.dtype is not None:
            self._init_layout()
        self._create_window(comm, transport, free_off, payload_off, total)
        self.freed = False

    cdef _init_layout(self):
        cdef int i
        self.ndim = len(self.shape)
        self.itemsize = self.dtype.itemsize
        self.c_shape = <Py_ssize_t *>PyMem_Malloc(2 * self.ndim * sizeof(Py_ssize_t))
        if self.c_shape == NULL:
            raise MemoryError()
        self.c_strides = self.c_shape + self.ndim
        stride = self.itemsize
        for i in range(self.ndim - 1, -1, -1):
            self.c_shape[i] = self.shape[i]
            self.c_strides[i] = stride
            stride *= self.shape[i]
        self.format = memoryview(np.empty(1, self.dtype)).format.encode()
        self.format_ok[self.format.decode()] = True

    cdef _create_window(self, comm, str transport, MPI_Aint free_off, MPI_Aint payload_off, int64_t total):
        cdef Ring *r = &self.ring
        cdef MPI_Comm user_comm = (<MPI.Comm>comm).ob_mpi
        cdef MPI_Comm node = MPI_COMM_NULL
        cdef MPI_Aint local_bytes = total if self.rank == self.owner else 0
        cdef MPI_Aint seg_bytes = 0
        cdef int node_size = 0, size = comm.Get_size(), disp_unit = 1, one_node = 0, all_one_node = 0
        cdef int model_flag = 0
        cdef int *model = NULL
        cdef void *base = NULL
        cdef int64_t i
        r.owner = self.owner
        r.rank = self.rank
        r.capacity = self.capacity
        r.slot_bytes = self.slot_bytes
        r.free_off = free_off
        r.payload_off = payload_off
        r.nproducers = len(self.producers)
        with nogil:
            # The user's communicator, not a duplicate: MPI has a few thousand context ids per
            # process, and the window already takes one.  It must outlive the queue.
            r.comm = user_comm
            CHKERR(MPI_Comm_split_type(r.comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node))
            CHKERR(MPI_Comm_size(node, &node_size))
            CHKERR(MPI_Comm_free(&node))
            one_node = node_size == size
            CHKERR(MPI_Allreduce(&one_node, &all_one_node, 1, MPI_INT, MPI_MIN, r.comm))
        if transport == "shm" and not all_one_node:
            raise ValueError(f"rank {self.rank}: rdq.Queue {self.name!r}: transport='shm' needs every rank "
                             f"on the owner's node; use 'rma' or 'auto'")
        r.shm = transport == "shm" or (transport == "auto" and all_one_node and not _network_path_forced())
        self.transport = "shm" if r.shm else "rma"
        with nogil:
            if r.shm:
                CHKERR(MPI_Win_allocate_shared(local_bytes, disp_unit, MPI_INFO_NULL, r.comm, &base, &r.win))
                CHKERR(MPI_Win_set_errhandler(r.win, MPI_ERRORS_RETURN))
                CHKERR(MPI_Win_shared_query(r.win, r.owner, &seg_bytes, &disp_unit, &r.base))
            else:
                CHKERR(MPI_Win_allocate(local_bytes, disp_unit, MPI_INFO_NULL, r.comm, &base, &r.win))
                CHKERR(MPI_Win_set_errhandler(r.win, MPI_ERRORS_RETURN))
                CHKERR(MPI_Win_get_attr(r.win, MPI_WIN_MODEL, &model, &model_flag))
                r.base = <char *>base if r.rank == r.owner else NULL
            if r.rank == r.owner:
                # counters and ready words start at zero, every slot on the free list;
                # the payload needs no clearing
                memset(r.base, 0, <size_t>free_off)
                for i in range(r.capacity):
                    (<int64_t *>(r.base + free_off))[i] = i
                r.head = r.head_published = r.capacity
                (<int64_t *>(r.base + OFF_HEAD))[0] = r.capacity
            CHKERR(MPI_Win_lock_all(MPI_MODE_NOCHECK, r.win))
            CHKERR(MPI_Win_sync(r.win))
            CHKERR(MPI_Barrier(r.comm))
            CHKERR(MPI_Win_sync(r.win))
        if not r.shm and model_flag and model[0] != MPI_WIN_UNIFIED:
            # The owner reads delivered payloads with loads; that needs the unified memory model.
            self.free()
            raise RDQError(f"rank {self.rank}: rdq.Queue {self.name!r}: this MPI offers only the "
                           f"separate RMA memory model; rdq needs MPI_WIN_UNIFIED")

    def __dealloc__(self):
        # No collective call here: a queue that was never freed leaks its window
        # until MPI_Finalize rather than risking a hang.
        PyMem_Free(self.c_shape)

    def __repr__(self):
        kind = (f"slot_bytes={self.slot_bytes}" if self.dtype is None
                else f"shape={self.shape}, dtype={self.dtype}")
        state = "freed" if self.freed else self.transport
        return f"<rdq.Queue {self.name!r} owner={self.owner} capacity={self.capacity} {kind} ({state})>"

    cdef str _where(self):
        return f"rank {self.rank}: {self.name!r}"

    cdef int _check_usable(self, str call) except -1:
        if self.freed:
            raise Closed(f"rank {self.rank}: {call} on queue {self.name!r}, which was freed")
        return 0

    cdef int _enter(self, const char *call) except -1 nogil:
        # put and get release the GIL; a second thread of this rank must not
        # interleave with them (their per-rank state is not shared-safe).
        if rdq_cas(&self.busy, 0, 1) != 0:
            with gil:
                raise RDQError(f"{self._where()}: {call.decode()} while another thread of this rank is inside "
                               f"a put or get on this queue; use one thread per queue and rank")
        return 0

    cdef void _leave(self) noexcept nogil:
        rdq_store_release(&self.busy, 0)

    # --- producer side ---------------------------------------------------

    cdef void _count_put(self, int sent, bint waited, int64_t nbytes) noexcept nogil:
        if waited:
            self.full_waits += 1
        if sent:
            self.n_puts += 1
            self.bytes_put += nbytes

    cdef int _put_bytes(self, const char *data, int64_t nbytes, double timeout) except -1:
        cdef bint waited = False
        cdef int sent = 0
        self._enter("put()")
        try:
            if self.ring.shm and nbytes <= SMALL_PUT:
                # No MPI call and no wait on this try: for a small message it is
                # cheaper than the GIL hand-over around it.
                sent = ring_put(&self.ring, data, nbytes, 0, &waited)
                if not sent and timeout != 0:
                    with nogil:
                        sent = ring_put(&self.ring, data, nbytes, timeout, &waited)
            else:
                with nogil:
                    sent = ring_put(&self.ring, data, nbytes, timeout, &waited)
        finally:
            self._leave()
        self._count_put(sent, waited, nbytes)
        return sent

    cdef int put_nogil(self, const void *data, Py_ssize_t nbytes, double timeout) except -1 nogil:
        """Copy nbytes at data into the next slot, without the GIL. The queue's
        sampling policy, a Python callable, is not applied here."""
        cdef bint waited = False
        cdef int sent
        if self.freed or self.closed or not self.is_producer:
            with gil:
                self._check_put("put_nogil()")
        if data == NULL or nbytes < 0:
            with gil:
                raise ValueError(f"{self._where()}: put_nogil() got a NULL pointer or a negative size")
        if nbytes > self.slot_bytes or (self.dtype is not None and nbytes != self.slot_bytes):
            with gil:
                raise ValueError(f"{self._where()}: put_nogil() of {nbytes} bytes; this queue's messages are "
                                 f"{'up to ' if self.dtype is None else ''}{self.slot_bytes} bytes")
        if timeout != timeout:
            with gil:
                raise ValueError(f"{self._where()}: put_nogil() timeout is NaN")
        self._enter("put_nogil()")
        try:
            sent = ring_put(&self.ring, <const char *>data, nbytes, -1.0 if timeout < 0 else timeout, &waited)
        finally:
            self._leave()
        self._count_put(sent, waited, nbytes)
        return sent

    cdef int put_typed(self, const void *data, char kind, Py_ssize_t itemsize, int ndim,
                       const Py_ssize_t *shape, double timeout) except -1 nogil:
        """put_nogil of an array: its element kind, size and shape must match a typed queue."""
        cdef Py_ssize_t nbytes = itemsize
        cdef int i
        for i in range(ndim):
            nbytes *= shape[i]
        if self.dtype is not None:
            if kind != self.kind or itemsize != self.itemsize:
                with gil:
                    raise TypeError(f"{self._where()}: expected dtype {self.dtype}, got a "
                                    f"{itemsize}-byte {chr(kind)!r}-kind array")
            if ndim != self.ndim or memcmp(shape, self.c_shape, ndim * sizeof(Py_ssize_t)) != 0:
                with gil:
                    raise ValueError(f"{self._where()}: expected shape {self.shape}, got "
                                     f"{tuple(shape[i] for i in range(ndim))}")
        return self.put_nogil(data, nbytes, timeout)

    cdef bint _sampled(self, x) except -1:
        if self.sample(x):
            return True
        self.sampled_out += 1
        return False

    cdef int _check_put(self, str call) except -1:
        self._check_usable(call)
        if not self.is_producer:
            raise RDQError(f"rank {self.rank}: {call} on queue {self.name!r}: this rank is not one of its "
                           f"producers {self.producers}")
        if self.closed:
            raise Closed(f"rank {self.rank}: {call} on queue {self.name!r} after close()")
        return 0

    cdef bint _format_matches(self, const char *fmt, object x) except -1:
        if fmt != NULL and strcmp(fmt, self.format) == 0:
            return True
        key = "B" if fmt == NULL else fmt.decode()
        ok = self.format_ok.get(key)
        if ok is None:
            ok = self.format_ok[key] = np.asarray(x).dtype == self.dtype
        return ok

    def put(self, x, block=True, timeout=None):
        """Copy x into the owner's window; returns True once sent, False when
        the queue's sampling policy left it out.

        x is a C-contiguous buffer-protocol or DLPack (CPU) object matching the
        queue's shape and dtype, or, for a raw-bytes queue, any contiguous
        buffer of at most slot_bytes.  Waits while the ring is full (forever by
        default); raises rdq.Full when block=False or the timeout passes first.
        """
        cdef Py_buffer view
        cdef double c_timeout = _as_timeout(block, timeout, "put")
        cdef int sent
        cdef _DLPackInput dl
        self._check_put("put()")
        if PyObject_CheckBuffer(x):
            try:
                PyObject_GetBuffer(x, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
            except (BufferError, ValueError) as exc:
                raise ValueError(f"{self._where()}: put() needs a C-contiguous array "
                                 f"(numpy.ascontiguousarray(x) makes one): {exc}") from None
            try:
                self._check_view(&view, x)
                if self.sample is not None and not self._sampled(x):
                    return False
                sent = self._put_bytes(<const char *>view.buf, view.len, c_timeout)
            finally:
                PyBuffer_Release(&view)
        elif hasattr(x, "__dlpack__"):
            dl = _DLPackInput(x)
            _check_dlpack(self, dl)
            if self.sample is not None and not self._sampled(x):
                return False
            sent = self._put_bytes(dl.data(), dl.nbytes(), c_timeout)
        else:
            raise TypeError(f"{self._where()}: put() needs a buffer-protocol or DLPack object, "
                            f"got {type(x).__name__}")
        if not sent:
            raise Full(f"{self._where()}: no free slot" +
                       ("" if c_timeout == 0 else f" within {c_timeout} s") +
                       f" (capacity {self.capacity}; is the owner rank {self.owner} consuming?)")
        return True

    cdef int _check_view(self, Py_buffer *view, object x) except -1:
        cdef int i
        if self.dtype is None:
            if view.len > self.slot_bytes:
                raise ValueError(f"{self._where()}: message of {view.len} bytes exceeds slot_bytes={self.slot_bytes}")
            return 0
        if not self._format_matches(view.format, x):
            raise TypeError(f"{self._where()}: expected dtype {self.dtype}, got "
                            f"{np.asarray(x).dtype} (buffer format {view.format.decode() if view.format else 'B'!r})")
        if view.ndim == self.ndim:
            for i in range(self.ndim):
                if view.shape[i] != self.c_shape[i]:
                    break
            else:
                return 0
        got = tuple(view.shape[i] for i in range(view.ndim))
        raise ValueError(f"{self._where()}: expected shape {self.shape}, got {got}")

    cdef int close_nogil(self) except -1 nogil:
        if self.freed:
            with gil:
                self._check_usable("close_nogil()")
        if self.is_producer and not self.closed:
            ring_add(&self.ring, OFF_CLOSED, 1)
            self.closed = True
        return 0

    def close(self):
        """This rank puts no more. When every producer has closed, the owner sees end of stream.
        Does nothing on a rank that is not a producer, or the second time."""
        self._check_usable("close()")
        with nogil:
            self.close_nogil()

    # --- consumer side ---------------------------------------------------

    cdef int _wait_messages(self, str call, int64_t k, double timeout, int64_t *count) except -1:
        cdef int rc
        cdef bint waited = False
        self._check_usable(call)
        if self.rank != self.owner:
            raise RDQError(f"rank {self.rank}: {call} on queue {self.name!r}: only its owner, rank "
                           f"{self.owner}, can get")
        if self.end_of_stream:
            raise Closed(f"{self._where()}: {call} after end of stream")
        self._enter(call.encode())
        try:
            with nogil:
                rc = ring_get(&self.ring, k, timeout, &waited, count)
        finally:
            self._leave()
        if waited:
            self.empty_waits += 1
        if rc == 0:
            raise Empty(f"{self._where()}: {'no message' if k == 1 else f'fewer than {k} messages'}" +
                        ("" if timeout == 0 else f" within {timeout} s"))
        if rc == 2:
            self.end_of_stream = True
            raise Closed(f"{self._where()}: end of stream (all {self.ring.nproducers} producers closed)")
        return 0

    def get(self, block=True, timeout=None):
        """Next message (owner only), as a zero-copy rdq.Message.

        Raises rdq.Empty when block=False or the timeout passes first, and
        rdq.Closed at end of stream (every producer closed, all delivered).
        """
        cdef Ring *r = &self.ring
        cdef int64_t count, t
        cdef int64_t *meta
        cdef Message msg
        self._wait_messages("get()", 1, _as_timeout(block, timeout, "get"), &count)
        t = r.next_ticket
        r.next_ticket += 1
        meta = <int64_t *>(r.base + meta_off(r, t))
        msg = Message.__new__(Message)
        msg.queue = self
        msg.slot = (<int64_t *>(r.base + free_off(r, t)))[0]
        msg.data = slot_ptr(r, msg.slot)
        msg.nbytes = meta[1]
        msg.source = <int>meta[2]
        msg.seq = meta[3]
        if self.dtype is None:
            msg.ndim = 1
            msg.raw_dims[0] = msg.nbytes
            msg.raw_dims[1] = 1
            msg.c_shape = msg.raw_dims
            msg.c_strides = msg.raw_dims + 1
        else:
            msg.ndim = self.ndim
            msg.c_shape = self.c_shape
            msg.c_strides = self.c_strides
        self.outstanding += 1
        self.n_gets += 1
        self.bytes_got += msg.nbytes
        return msg

    def get_batch(self, k, block=True, timeout=None):
        """The next k messages (owner only) as one rdq.Batch of shape (k, *shape).

        Zero-copy when their slots are consecutive in the window, which is always
        the case when the owner takes only batches of k and k divides the
        capacity; otherwise the rows are copied once (stats()["batch_copies"]).
        At end of stream the last batch may be shorter; after it, rdq.Closed.
        Raw-bytes queues batch messages of one size only (ValueError otherwise,
        and the messages stay queued for get()).
        """
        cdef Ring *r = &self.ring
        cdef int64_t count, t, i, nb, first, row_bytes
        cdef int64_t *meta
        cdef bint contiguous = True
        cdef Batch batch
        cdef int ndim_row = 1 if self.dtype is None else self.ndim
        if not isinstance(k, int) or k < 1 or k > self.capacity:
            raise ValueError(f"{self._where()}: get_batch(k) needs 1 <= k <= capacity ({self.capacity}), got {k!r}")
        if k > self.capacity - self.outstanding:
            raise ValueError(f"{self._where()}: get_batch({k}) would wait forever: {self.outstanding} of "
                             f"{self.capacity} slots are held by unreleased messages or views")
        self._wait_messages("get_batch()", k, _as_timeout(block, timeout, "get_batch"), &count)
        t = r.next_ticket
        nb = (<int64_t *>(r.base + meta_off(r, t)))[1]
        first = (<int64_t *>(r.base + free_off(r, t)))[0]
        sources = np.empty(count, np.int32)
        seqs = np.empty(count, np.int64)
        cdef int32_t[::1] src_view = sources
        cdef int64_t[::1] seq_view = seqs
        for i in range(count):
            meta = <int64_t *>(r.base + meta_off(r, t + i))
            if meta[1] != nb:
                raise ValueError(f"{self._where()}: get_batch() on raw messages of different sizes "
                                 f"({nb} and {meta[1]} bytes); they stay queued: take them with get()")
            src_view[i] = <int32_t>meta[2]
            seq_view[i] = meta[3]
            contiguous = contiguous and (<int64_t *>(r.base + free_off(r, t + i)))[0] == first + i
        batch = Batch.__new__(Batch)
        batch.queue = self
        batch.sources = sources
        batch.seqs = seqs
        batch.ndim = ndim_row + 1
        batch.own_dims = <Py_ssize_t *>PyMem_Malloc(2 * batch.ndim * sizeof(Py_ssize_t))
        if batch.own_dims == NULL:
            raise MemoryError()
        batch.c_shape = batch.own_dims
        batch.c_strides = batch.own_dims + batch.ndim
        batch.c_shape[0] = count
        if self.dtype is None:
            batch.c_shape[1] = nb
            batch.c_strides[1] = 1
        else:
            for i in range(self.ndim):
                batch.c_shape[i + 1] = self.c_shape[i]
                batch.c_strides[i + 1] = self.c_strides[i]
        batch.nbytes = count * nb
        if contiguous:
            row_bytes = r.slot_bytes
            batch.data = slot_ptr(r, first)
            batch.first_slot = first
            batch.pinned = count
            self.outstanding += count
        else:
            row_bytes = nb
            batch.rows = np.empty(count * nb, np.uint8)
            batch.data = <char *><size_t>batch.rows.ctypes.data
            for i in range(count):
                slot = (<int64_t *>(r.base + free_off(r, t + i)))[0]
                memcpy(batch.data + i * nb, slot_ptr(r, slot), <size_t>nb)
                ring_return(r, slot)
            self.batch_copies += 1
        batch.c_strides[0] = row_bytes
        r.next_ticket += count
        self.n_gets += count
        self.bytes_got += count * nb
        return batch

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self.get()
        except Closed:
            if self.end_of_stream:
                raise StopIteration from None
            raise

    # --- both ------------------------------------------------------------

    def stats(self):
        """This rank's counters for this queue."""
        return {
            "puts": self.n_puts, "gets": self.n_gets,
            "bytes_put": self.bytes_put, "bytes_got": self.bytes_got,
            "full_waits": self.full_waits, "empty_waits": self.empty_waits,
            "sampled_out": self.sampled_out, "batch_copies": self.batch_copies,
            "outstanding": self.outstanding, "live_exports": self.exports,
        }

    def free(self):
        """Collective teardown of the window. Raises BufferError on every rank while
        the owner still has live exports of received messages."""
        cdef Ring *r = &self.ring
        cdef int64_t live = self.exports, max_live = 0
        if self.freed:
            return
        with nogil:
            CHKERR(MPI_Allreduce(&live, &max_live, 1, MPI_INT64_T, MPI_MAX, r.comm))
        if max_live:
            raise BufferError(f"rank {self.rank}: cannot free queue {self.name!r}: owner rank {self.owner} "
                              f"still has {max_live} live view(s) of its messages (arrays, memoryviews or "
                              f"tensors); delete them first")
        self.freed = True
        with nogil:
            CHKERR(MPI_Win_unlock_all(r.win))
            CHKERR(MPI_Win_free(&r.win))
        r.base = NULL

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # free() is collective: on the way out of an exception the other ranks
        # are not there to meet it, so leave the window to MPI_Abort/Finalize.
        if exc_type is None:
            self.free()

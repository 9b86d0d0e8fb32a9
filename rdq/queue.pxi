# Queue: collective construction and teardown, put, get, close, stats.

_UINT8 = np.dtype(np.uint8)
_retired = []                      # freed rma queues whose windows wait for the owner's views to die
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


def _as_index(value, str what, str where):
    """An integer argument; anything with __index__ (numpy and torch integers too) will do."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{where}: {what} must be an integer, got {value!r}") from None


def _as_dtype(dtype, str where):
    """A numpy dtype from anything numpy understands, or a torch dtype (torch.float32)."""
    if type(dtype).__module__ == "torch" and type(dtype).__name__ == "dtype":
        name = str(dtype).rpartition(".")[2]
        if name == "bfloat16":
            raise TypeError(f"{where}: dtype torch.bfloat16 has no numpy equivalent; put float32 (or "
                            f".view(torch.int16) into an int16 queue and view it back)")
        dtype = name
    try:
        return np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{where}: dtype {dtype!r} is not a dtype: {exc}") from None


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


def _window_problem(nrings, capacity, slot_bytes, total, is_owner, owner):
    """Why the window cannot be made (size overflow, not enough memory on the owner), or None."""
    if total >= 1 << 62:
        return f"{nrings} producers x capacity {capacity} x {slot_bytes} bytes overflows the window size"
    avail = _available_memory() if is_owner else None
    if avail is not None and total > avail:
        return (f"needs {total} bytes on owner rank {owner} ({nrings} producers x capacity {capacity} x "
                f"{slot_bytes} bytes), which has only {avail} bytes of memory available")
    return None


def _agree(comm, str where, str kind, str noun, dict spec, problem):
    """Raise on every rank when any rank has a problem or passed different arguments (spec: name -> value)."""
    gathered = comm.allgather((spec, problem))
    problems = [f"rank {r}: {p}" for r, (_, p) in enumerate(gathered) if p]
    if problems:
        raise ValueError(f"{where}: cannot create the {noun}: " + "; ".join(problems))
    for r, (other, _) in enumerate(gathered):
        differ = [f"{n}={other.get(n)!r} on rank {r}, {m!r} on this rank" for n, m in spec.items() if other.get(n) != m]
        if differ:
            raise ValueError(f"{where}: rdq.{kind} is collective and needs the same arguments on every rank: "
                             + "; ".join(differ))


cdef int _check_dlpack(_Window self, _DLPackInput dl) except -1:
    cdef DLTensor *t = dl.tensor
    if t.device.device_type != kDLCPU:
        raise ValueError(f"{self._where()}: put() takes host (CPU) memory; this tensor is on "
                         f"{_dl_device_name(t.device.device_type)} (move it with .cpu() first)")
    if not dl.c_contiguous():
        raise ValueError(f"{self._where()}: put() needs a C-contiguous tensor (.contiguous() makes one)")
    if self.dtype is None:
        if dl.nbytes() > self.slot_bytes:
            raise ValueError(f"{self._where()}: message of {dl.nbytes()} bytes exceeds slot_bytes={self.slot_bytes}")
        return 0
    if t.dtype.code != self.dl_code or t.dtype.bits != self.dl_bits or t.dtype.lanes != 1:
        raise TypeError(f"{self._where()}: expected dtype {self.dtype}, got "
                        f"{_dl_dtype_name(t.dtype.code, t.dtype.bits, t.dtype.lanes)}")
    if dl.shape() != self.shape:
        raise ValueError(f"{self._where()}: expected shape {self.shape}, got {dl.shape()}")
    return 0


@cython.embedsignature(False)
cdef class _Window:
    """What rdq.Queue and rdq.ReplayBuffer share: the owner's window, put and close."""

    def __cinit__(self):
        self.ring.win = MPI_WIN_NULL
        self.ring.comm = MPI_COMM_NULL
        self.freed = True   # until __init__ has built the window

    def __init__(self):
        raise TypeError("rdq._Window is the base of rdq.Queue and rdq.ReplayBuffer; make one of those")

    cdef _setup(self, comm, owner, capacity, shape, dtype, slot_bytes, producers, sample, name, transport,
                tuple extra):
        """The collective construction both kinds share; extra: (name, value) pairs of the
        subclass's own arguments, which every rank must pass alike."""
        kind = type(self).__name__
        if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
            raise TypeError(f"rdq.{kind} needs an mpi4py intracommunicator, got {comm!r}")
        size = comm.Get_size()
        self.rank = comm.Get_rank()
        self.name = str(name) if name is not None else f"{kind.lower()}{next(_queue_numbers)}"
        where = f"rank {self.rank}: rdq.{kind} {self.name!r}"

        owner = _as_index(owner, "owner", where)
        if not 0 <= owner < size:
            raise ValueError(f"{where}: owner must be a rank of the communicator (0..{size - 1}), got {owner!r}")
        capacity = _as_index(capacity, "capacity", where)
        if capacity < 1:
            raise ValueError(f"{where}: capacity must be an integer >= 1, got {capacity!r}")
        self._set_message_kind(where, shape, dtype, slot_bytes)
        if producers is None:
            # The owner consumes: `for m in q` on it ends once the others closed.
            producers = [r for r in range(size) if r != owner] or [owner]
        producers = tuple(sorted(set(_as_index(p, "a producer rank", where) for p in producers)))
        if not producers or min(producers) < 0 or max(producers) >= size:
            raise ValueError(f"{where}: producers must be a non-empty list of ranks in 0..{size - 1}")
        if sample is not None and not callable(sample):
            raise TypeError(f"{where}: sample must be a callable x -> bool (see rdq.sampling), got {sample!r}")
        if transport is None:
            transport = os.environ.get("RDQ_TRANSPORT") or "auto"
        if transport not in _TRANSPORTS:
            raise ValueError(f"{where}: transport must be one of {_TRANSPORTS}, got {transport!r}")

        layout = self._layout(len(producers), capacity, self.slot_bytes)
        problem = _window_problem(len(producers), capacity, self.slot_bytes, layout[4], self.rank == owner, owner)
        # Every rank must agree on the queue, and learn about the owner's problem, before anything collective.
        spec = dict(owner=owner, capacity=capacity, slot_bytes=self.slot_bytes, shape=self.shape,
                    dtype=None if self.dtype is None else self.dtype.str, producers=producers, transport=transport)
        spec.update(extra)
        _agree(comm, where, kind, self._noun, spec, problem)

        _watch_finalize()
        self.comm = comm
        self.owner = owner
        self.capacity = capacity
        self.producers = producers
        self.is_producer = self.rank in producers
        self.put_sample = sample
        self.format_ok = {}
        if self.dtype is not None:
            self._init_layout()
        self._init_ring(layout)
        self._create_window(comm, transport, layout[4])

    cdef _set_message_kind(self, str where, shape, dtype, slot_bytes):
        """A typed queue's shape and dtype, or a raw-bytes queue's slot_bytes, checked."""
        if slot_bytes is not None:
            if shape is not None or dtype is not None:
                raise ValueError(f"{where}: give either shape and dtype (typed queue) or slot_bytes (raw bytes), not both")
            slot_bytes = _as_index(slot_bytes, "slot_bytes", where)
            if slot_bytes < 1:
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
            shape = (shape,) if hasattr(shape, "__index__") else tuple(shape)
            shape = tuple(_as_index(d, "every dimension of shape", where) for d in shape)
            if not shape or not all(d >= 1 for d in shape):
                raise ValueError(f"{where}: shape must be a non-empty tuple of integers >= 1, got {shape!r}")
            dt = _as_dtype(dtype, where)
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

    # What each kind defines (Queue: ring.pxi; ReplayBuffer: replay.pxi): the window's layout and
    # first contents, a put's steps, close's record.  _Window itself is never made (__init__).
    cdef tuple _layout(self, int64_t nrings, int64_t capacity, int64_t slot_bytes):
        raise NotImplementedError

    cdef void _init_memory(self) noexcept nogil:
        pass

    cdef int _send(self, const char *data, int64_t nbytes, double timeout, bint *waited, bint more) except -1 nogil:
        return 0

    cdef int _complete(self) except -1 nogil:
        return 0

    cdef int _close_ring(self) except -1 nogil:
        return 0

    cdef _init_ring(self, tuple layout):
        """The window's geometry, as every kind has it (ring.pxi)."""
        cdef Ring *r = &self.ring
        r.owner = self.owner
        r.rank = self.rank
        r.nrings = len(self.producers)
        r.capacity = self.capacity
        r.slot_bytes = self.slot_bytes
        r.meta_base, r.free_base, r.payload_base, r.slot_stride = layout[:4]
        r.ring = self.producers.index(self.rank) if self.is_producer else -1

    def __repr__(self):
        kind = (f"slot_bytes={self.slot_bytes}" if self.dtype is None
                else f"shape={self.shape}, dtype={self.dtype}")
        state = "freed" if self.freed else self.transport
        return (f"<rdq.{type(self).__name__} {self.name!r} owner={self.owner} capacity={self.capacity} "
                f"{kind} ({state})>")

    cdef _create_window(self, comm, str transport, int64_t total):
        cdef Ring *r = &self.ring
        cdef MPI_Comm node = MPI_COMM_NULL
        cdef int node_size = 0, size = comm.Get_size(), one_node = 0, all_one_node = 0
        with nogil:
            # The user's communicator, not a duplicate: MPI has a few thousand context ids per
            # process, and the window already takes one.  It must outlive the queue.
            r.comm = (<MPI.Comm>comm).ob_mpi
            CHKERR(MPI_Comm_split_type(r.comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node))
            CHKERR(MPI_Comm_size(node, &node_size))
            CHKERR(MPI_Comm_free(&node))
            one_node = node_size == size
            CHKERR(MPI_Allreduce(&one_node, &all_one_node, 1, MPI_INT, MPI_MIN, r.comm))
        if transport == "shm" and not all_one_node:
            raise ValueError(f"rank {self.rank}: rdq.{type(self).__name__} {self.name!r}: transport='shm' needs every rank "
                             f"on the owner's node; use 'rma' or 'auto'")
        r.shm = transport == "shm" or (transport == "auto" and all_one_node and not _network_path_forced())
        self.transport = "shm" if r.shm else "rma"
        if r.shm:
            self._map_segment(comm, total)
        else:
            self._map_window(comm, total, node_size)

    cdef _map_segment(self, comm, int64_t total):
        """shm: the owner's segment, mapped on every rank (memory.pxi)."""
        cdef Ring *r = &self.ring
        problems, names = [], []
        if self.rank == self.owner:
            self.mapping = create_segment(total, problems, names)
            self.mapping_bytes = total
            if self.mapping != NULL:
                r.base = self.mapping
                self._init_memory()
        name, owner_problem = comm.bcast((names[0] if names else None, problems[0] if problems else None),
                                         root=self.owner)
        if owner_problem is None and self.rank != self.owner:
            self.mapping = map_segment(name, total, False, problems)
            self.mapping_bytes = total
            r.base = self.mapping
        gathered = comm.allgather(problems[0] if problems else None)   # every rank has mapped it, or failed
        if self.rank == self.owner and owner_problem is None:
            unlink_segment(name)
        self._raise_problems(gathered)
        self.freed = False

    cdef _map_window(self, comm, int64_t total, int node_size):
        """rma: MPI_Win_allocate memory (MPICH and Open MPI put it in shared memory for the
        owner's node, so producers there write it directly), locked for the queue's life."""
        cdef Ring *r = &self.ring
        cdef MPI_Aint local_bytes = total + 64 if self.rank == self.owner else 0
        cdef int model_flag = 0
        cdef int *model = NULL
        cdef void *base = NULL
        problem = None
        if self.rank == self.owner and node_size > 1 and not _network_path_forced():
            # with other ranks on its node the MPI backs the window with /dev/shm (MPICH: a SIGBUS
            # at the first put when it does not fit; Open MPI: MPI_ERR_WIN)
            shm = os.statvfs("/dev/shm")
            if shm.f_bavail * shm.f_frsize < total + 64:
                problem = (f"/dev/shm has {shm.f_bavail * shm.f_frsize} bytes free and the MPI keeps this "
                           f"queue's {total} bytes there (other ranks share the owner's node); in a "
                           f"container, give it more with docker run --shm-size")
        self._raise_problems(comm.allgather(problem))
        with nogil:
            CHKERR(MPI_Win_allocate(local_bytes, 1, MPI_INFO_NULL, r.comm, &base, &r.win))
            CHKERR(MPI_Win_set_errhandler(r.win, MPI_ERRORS_RETURN))
            CHKERR(MPI_Win_get_attr(r.win, MPI_WIN_MODEL, &model, &model_flag))
            if r.rank == r.owner:
                r.disp0 = (64 - <size_t>base % 64) % 64   # every slot 64-byte aligned
                r.base = <char *>base + r.disp0
                self._init_memory()
            CHKERR(MPI_Bcast(&r.disp0, 1, MPI_AINT, r.owner, r.comm))
            CHKERR(MPI_Win_lock_all(MPI_MODE_NOCHECK, r.win))
            CHKERR(MPI_Win_sync(r.win))
            CHKERR(MPI_Barrier(r.comm))
            CHKERR(MPI_Win_sync(r.win))
        self.freed = False
        if model_flag and model[0] != MPI_WIN_UNIFIED:
            # The owner reads delivered payloads with loads; that needs the unified memory model.
            self.free()
            raise RDQError(f"rank {self.rank}: rdq.{type(self).__name__} {self.name!r}: this MPI offers only the "
                           f"separate RMA memory model; rdq needs MPI_WIN_UNIFIED")

    cdef _raise_problems(self, list gathered):
        """Every rank raises the same ValueError when any rank could not map its memory."""
        problems = [f"rank {rank}: {p}" for rank, p in enumerate(gathered) if p]
        if problems:
            self._unmap()
            raise ValueError(f"rank {self.rank}: rdq.{type(self).__name__} {self.name!r}: cannot create it: "
                             + "; ".join(problems))

    cdef void _unmap(self) noexcept:
        if self.mapping != NULL:
            unmap(self.mapping, self.mapping_bytes)
            self.mapping = NULL
            self.ring.base = NULL

    def __dealloc__(self):
        # No collective call here: a queue that was never freed leaks its window (and
        # the memory behind it, which MPI may still write) until the process ends.
        if self.freed:
            self._unmap()
        PyMem_Free(self.c_shape)
        PyMem_Free(self.ring.slots)
        free(self.ring.stage)
        PyMem_Free(self.ring.rings)

    cdef int _check_owner(self, str call) except -1:
        if self.rank != self.owner:
            raise RDQError(f"rank {self.rank}: {call} on {self.name!r}: only its owner, rank "
                           f"{self.owner}, can read it")
        return 0

    cdef str _where(self):
        return f"rank {self.rank}: {self.name!r}"

    cdef int _check_usable(self, str call) except -1:
        if self.freed:
            raise Closed(f"rank {self.rank}: {call} on {self._noun} {self.name!r}, which was freed")
        if _mpi_finalized:
            raise Closed(f"rank {self.rank}: {call} on {self._noun} {self.name!r} after MPI_Finalize")
        return 0

    cdef int _enter(self, const char *call, bint wait) except -1 nogil:
        # put, get and close hold the queue for their whole duration, consumption of
        # tickets and close's count included: a second thread of this rank that
        # overlaps a put or get is refused, and a close waits for a put in progress.
        cdef int64_t me = rdq_thread_id(), found, round = 0
        while True:
            found = rdq_cas(&self.busy, 0, me)
            if found == 0:
                return 0
            # a put that meets a close() of another thread waits for it, then finds the queue closed
            if found == me or not (wait or self.closing):
                with gil:
                    raise RDQError(f"{self._where()}: {call.decode()} while "
                                   f"{'this thread (a signal handler?)' if found == me else 'another thread of this rank'}"
                                   f" is inside a put or get on this queue; use one thread per queue and rank")
            rdq_backoff(round)
            round += 1

    cdef void _leave(self) noexcept nogil:
        rdq_store_release(&self.busy, 0)

    # --- producer side ---------------------------------------------------

    cdef void _count_put(self, int sent, bint waited, int64_t nbytes) noexcept nogil:
        if waited:
            self.full_waits += 1
        if sent == 1:
            self.n_puts += 1
            self.bytes_put += nbytes

    cdef int _put_bytes(self, const char *data, int64_t nbytes, double timeout, bint more) except -1:
        cdef bint waited = False
        cdef int sent = 0
        self._enter("put()", False)
        try:
            self._check_put("put()")   # again, now that no close() of another thread can overlap
            self._check_sure("put()")
            if self.ring.shm and nbytes <= SMALL_PUT:
                # No MPI call and no wait on this try: for a small message it is
                # cheaper than the GIL hand-over around it.
                sent = self._send(data, nbytes, 0, &waited, more)
                if not sent and timeout != 0:
                    with nogil:
                        sent = self._send(data, nbytes, timeout, &waited, more)
            else:
                with nogil:
                    sent = self._send(data, nbytes, timeout, &waited, more)
        finally:
            self._leave()
        self._count_put(sent, waited, nbytes)
        return sent

    cdef int put_nogil(self, const void *data, Py_ssize_t nbytes, double timeout, bint more=False) except -1 nogil:
        """Copy nbytes at data into the next slot, without the GIL (more: as put()'s). The
        queue's sampling policy, a Python callable, is not applied here."""
        cdef bint waited = False
        cdef int sent
        if self.freed or self.closed or not self.is_producer or _mpi_finalized:
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
        self._enter("put_nogil()", False)
        try:
            if self.closed or self.ring.unsure:
                with gil:
                    self._check_put("put_nogil()")
                    self._check_sure("put_nogil()")
            sent = self._send(<const char *>data, nbytes,
                              self._own_put_timeout(-1.0 if timeout < 0 else timeout), &waited, more)
        finally:
            self._leave()
        self._count_put(sent, waited, nbytes)
        if not sent and timeout < 0:
            with gil:
                self._refuse_own_full_put("put_nogil()")
        return sent

    cdef int put_typed(self, const void *data, char kind, Py_ssize_t itemsize, int ndim,
                       const Py_ssize_t *shape, double timeout, bint more=False) except -1 nogil:
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
        return self.put_nogil(data, nbytes, timeout, more)

    cdef bint _sampled(self, x) except -1:
        if self.put_sample(x):
            return True
        self.sampled_out += 1
        return False

    cdef int _check_put(self, str call) except -1:
        self._check_usable(call)
        if not self.is_producer:
            raise RDQError(f"rank {self.rank}: {call} on {self._noun} {self.name!r}: this rank is not one of its "
                           f"producers {self.producers}")
        if self.closed:
            raise Closed(f"rank {self.rank}: {call} on {self._noun} {self.name!r} after close()")
        return 0

    cdef int _check_sure(self, str call) except -1:
        # Only under the queue's busy flag: a close() of another thread (which puts the staged
        # run) or a put in progress sets unsure for the length of its flush.
        if self.ring.unsure:
            raise RDQError(f"rank {self.rank}: {call} on {self._noun} {self.name!r}: an MPI error struck an earlier put "
                           f"after its message was written, so it may or may not have arrived; this rank "
                           f"puts no more to this queue")
        return 0

    cdef bint _format_matches(self, const char *fmt, object x) except -1:
        if fmt != NULL and strcmp(fmt, self.format) == 0:
            return True
        key = "B" if fmt == NULL else fmt.decode()
        ok = self.format_ok.get(key)
        if ok is None:
            ok = self.format_ok[key] = np.asarray(x).dtype == self.dtype
        return ok

    def put(self, x, block=True, timeout=None, *, more=False):
        """Copy x into the owner's window; returns True once sent, False when
        the queue's sampling policy left it out.

        x is a C-contiguous buffer-protocol or DLPack (CPU) object matching the
        queue's shape and dtype, or, for a raw-bytes queue, any contiguous
        buffer of at most slot_bytes.  Waits while the ring is full (forever by
        default); raises rdq.Full when block=False or the timeout passes first.

        more=True says more puts follow at once: on the rma transport a queue's
        message (up to 16 KiB) may then stay staged on this rank, and a run of
        them is sent with one round trip by the next put without more, a put
        that finds the stage (64 messages, 64 KiB) full or the ring out of
        slots, flush() or close().  x may be reused as soon as put returns.
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
                if self.put_sample is not None and not self._sampled(x):
                    return False
                sent = self._put_bytes(<const char *>view.buf, view.len, self._own_put_timeout(c_timeout), more)
            finally:
                PyBuffer_Release(&view)
        elif hasattr(x, "__dlpack__"):
            dl = _DLPackInput(x)
            _check_dlpack(self, dl)
            if self.put_sample is not None and not self._sampled(x):
                return False
            sent = self._put_bytes(dl.data(), dl.nbytes(), self._own_put_timeout(c_timeout), more)
        else:
            raise TypeError(f"{self._where()}: put() needs a buffer-protocol or DLPack object, "
                            f"got {type(x).__name__}")
        if not sent and c_timeout < 0:
            self._refuse_own_full_put("put()")
        if not sent:
            raise Full(f"{self._where()}: no free slot" +
                       ("" if c_timeout == 0 else f" within {c_timeout} s") +
                       f" (capacity {self.capacity}; is the owner rank {self.owner} consuming?)")
        return sent == 1

    def put_nowait(self, x):
        """put(x, block=False), as queue.Queue has it."""
        return self.put(x, block=False)

    cdef double _own_put_timeout(self, double timeout) noexcept nogil:
        # The owner putting into its own ring waits for its own releases: with no
        # timeout, a full ring would wait forever (put raises Full at once instead).
        return 0.0 if timeout < 0 and self.rank == self.owner else timeout

    cdef int _refuse_own_full_put(self, str call) except -1:
        raise Full(f"{self._where()}: {call} on the owner into its own full ring (capacity {self.capacity}) "
                   f"would wait forever: only the owner's own releases free its slots. Release messages "
                   f"first, or pass a timeout if another thread of this rank releases them")

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

    cdef int flush_nogil(self) except -1 nogil:
        if self.freed or self.closed or not self.is_producer or _mpi_finalized:
            with gil:
                if self.closed and not self.freed:
                    return 0   # close() completed everything
                self._check_put("flush()")
        self._enter("flush()", False)
        try:
            if self.ring.unsure:
                with gil:
                    self._check_sure("flush()")
            self._complete()
        finally:
            self._leave()
        return 0

    def flush(self):
        """Send and complete the messages this rank put with more=True and still holds
        (on the rma transport); returns at once when there are none."""
        with nogil:
            self.flush_nogil()

    cdef int close_nogil(self) except -1 nogil:
        if self.freed or _mpi_finalized:
            with gil:
                self._check_usable("close_nogil()")
        if not self.is_producer:
            return 0
        self.closing = True
        self._enter("close()", True)
        try:
            if not self.closed:
                self._close_ring()
                self.closed = True
        finally:
            self._leave()
        return 0

    def close(self):
        """This rank puts no more. When every producer has closed, the owner sees end of stream.
        Does nothing on a rank that is not a producer, or the second time."""
        self._check_usable("close()")
        with nogil:
            self.close_nogil()

    # --- both ------------------------------------------------------------

    cdef Batch _new_batch(self, int64_t count, int64_t nb, sources, seqs):
        """A Batch of count rows of nb bytes, its data not yet set."""
        cdef Batch batch = Batch.__new__(Batch)
        cdef int i
        batch.queue = self
        batch.sources = sources
        batch.seqs = seqs
        batch.ndim = (1 if self.dtype is None else self.ndim) + 1
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
        return batch


    def stats(self):
        """This rank's counters for this queue."""
        return {
            "puts": self.n_puts, "gets": self.n_gets,
            "bytes_put": self.bytes_put, "bytes_got": self.bytes_got,
            "full_waits": self.full_waits, "empty_waits": self.empty_waits,
            "sampled_out": self.sampled_out, "batch_copies": self.batch_copies,
            "outstanding": self.outstanding, "live_exports": self.exports,
            "mpi_puts": self.ring.calls.puts, "mpi_gets": self.ring.calls.gets,
            "mpi_flushes": self.ring.calls.flushes, "mpi_syncs": self.ring.calls.syncs,
        }

    def free(self):
        """Collective teardown of the window: every rank of the communicator calls it.

        A producer that has not closed closes first, so the owner's stream ends.  Views
        of received messages stay valid until they die; anything else done with the
        queue or its messages afterwards raises rdq.Closed, and release() does nothing."""
        if self.freed:
            return
        if not _mpi_finalized:
            if self.is_producer and not self.closed:
                self.close()
            if self.ring.shm:
                self.comm.Barrier()
            else:
                self._free_windows()
        self.freed = True
        if self.exports == 0:
            self._unmap()

    cdef _free_windows(self):
        """rma: free this queue's window, unless the owner still has views of it: MPI owns that
        memory, so such a window is retired and freed by a later free() on the same communicator
        once those views have died (or left to MPI_Finalize).  Every rank decides alike."""
        cdef _Window q
        cdef Ring *r
        waiting = [q for q in _retired if q.ring.comm == self.ring.comm] + [self]
        live = np.array([q.exports for q in waiting], np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, live, op=MPI.MAX)
        for q, views in zip(waiting, live):
            if q is not self and views == 0:
                _retired.remove(q)
            if views == 0:
                r = &q.ring
                with nogil:
                    CHKERR(MPI_Win_unlock_all(r.win))
                    CHKERR(MPI_Win_free(&r.win))
                r.base = NULL
            elif q is self:
                _retired.append(self)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # free() is collective: on the way out of an exception the other ranks
        # are not there to meet it, so leave the window to MPI_Abort/Finalize.
        if exc_type is None:
            self.free()


cdef class Queue(_Window):
    """Queue(comm, owner=0, capacity=1024, shape=None, dtype=None, *, slot_bytes=None, producers=None, sample=None, name=None, transport=None)
--

    A queue in an MPI-3 RMA window on one rank (the owner) of a communicator.

    Collective over ``comm``: every rank calls it with the same arguments.

    Typed queues carry arrays of one ``shape`` and ``dtype``; raw-bytes queues
    (``slot_bytes=``) carry byte strings of up to ``slot_bytes``, each message
    with its own length.  Every rank in ``producers`` (default: all but the
    owner) may put, ``capacity`` messages each at a time;
    only the owner gets.  ``transport`` (default ``$RDQ_TRANSPORT`` or "auto")
    picks "shm" (all ranks on one node: load/store into a shared window) or
    "rma" (MPI one-sided calls for every access); "auto" takes shm when every
    rank shares the owner's node and MPICH's NOLOCAL switch is off.
    """
    _noun = "queue"

    @cython.embedsignature(False)   # Cython's signature of it puts slot_bytes before the "*"
    def __init__(self, comm, owner=0, capacity=1024, shape=None, dtype=None, *,
                 slot_bytes=None, producers=None, sample=None, name=None, transport=None):
        self._setup(comm, owner, capacity, shape, dtype, slot_bytes, producers, sample, name, transport, ())

    @property
    def sample(self):
        """The put-side sampling policy (x -> bool), or None."""
        return self.put_sample

    cdef tuple _layout(self, int64_t nrings, int64_t capacity, int64_t slot_bytes):
        return window_layout(nrings, capacity, slot_bytes)

    cdef void _init_memory(self) noexcept nogil:
        init_free_lists(&self.ring)

    cdef int _send(self, const char *data, int64_t nbytes, double timeout, bint *waited, bint more) except -1 nogil:
        return ring_put(&self.ring, data, nbytes, timeout, waited, more)

    cdef int _complete(self) except -1 nogil:
        return ring_complete(&self.ring)

    cdef int _close_ring(self) except -1 nogil:
        return ring_close(&self.ring)

    cdef _init_ring(self, tuple layout):
        """The geometry, and this rank's producer credit and owner state (ring.pxi)."""
        cdef Ring *r = &self.ring
        cdef int64_t i
        _Window._init_ring(self, layout)
        if self.is_producer:
            # every slot starts free: ticket j < capacity writes slot j
            r.slots = <int64_t *>PyMem_Malloc((r.capacity + 2 * FETCH_MAX) * sizeof(int64_t))
            if r.slots == NULL:
                raise MemoryError()
            r.fetched = r.slots + r.capacity
            for i in range(r.capacity):
                r.slots[i] = i
            r.credit_upto = r.capacity
        if self.rank == self.owner:
            r.rings = <RingOwner *>PyMem_Malloc(r.nrings * sizeof(RingOwner))
            if r.rings == NULL:
                raise MemoryError()
            memset(r.rings, 0, r.nrings * sizeof(RingOwner))

    # --- consumer side ---------------------------------------------------

    cdef int _wait_messages(self, str call, int64_t k, double timeout, int64_t *ring, int64_t *count) except -1:
        """Wait for k messages (ring_select); returns holding the queue (_leave after
        taking them), or raises Empty, Closed, ValueError, having left it."""
        cdef int what
        cdef bint waited = False
        self._check_usable(call)
        self._check_owner(call)
        if self.end_of_stream:
            raise Closed(f"{self._where()}: {call} after end of stream")
        self._enter(call.encode(), False)
        try:
            with nogil:
                what = ring_wait_select(&self.ring, k, timeout, &waited, ring, count)
        except BaseException:
            self._leave()
            raise
        if waited:
            self.empty_waits += 1
        if what == SELECT_RING or what == SELECT_MIXED:
            return what
        self._leave()
        if what == SELECT_NONE:
            raise Empty(f"{self._where()}: {'no message' if k == 1 else f'fewer than {k} messages'}" +
                        ("" if timeout == 0 else f" within {timeout} s"))
        if what == SELECT_STUCK:
            raise ValueError(f"{self._where()}: {call} would wait forever: {self.outstanding} slots are held by "
                             f"unreleased messages or views, and the producers cannot send {k} more until "
                             f"some are released (each producer's ring has {self.capacity} slots); pass a "
                             f"timeout if another thread of this rank releases them")
        self.end_of_stream = True
        raise Closed(f"{self._where()}: end of stream (all {self.ring.nrings} producers closed)")

    cdef int64_t _take_ticket(self, int64_t ring, int64_t *nbytes) except -1:
        """Deliver the next ticket of a ring: returns its slot, with the message size in nbytes."""
        cdef Ring *r = &self.ring
        cdef RingOwner *o = &r.rings[ring]
        cdef int64_t slot = ring_slot(r, ring, o.delivered)
        if slot < 0:
            raise RDQError(f"{self._where()}: internal error: ticket {o.delivered} of ring {ring} has no slot")
        nbytes[0] = owner_word(r, meta_off(r, ring, o.delivered))[META_NBYTES]
        o.delivered += 1
        return slot

    def get(self, block=True, timeout=None):
        """Next message (owner only), as a zero-copy rdq.Message.

        Producers are served round robin.  Raises rdq.Empty when block=False or
        the timeout passes first, rdq.Closed at end of stream (every producer
        closed, all delivered), and ValueError when no message can come because
        the owner's own unreleased messages hold every slot they could use.
        """
        cdef Ring *r = &self.ring
        cdef int64_t ring, count, nbytes
        cdef Message msg = Message.__new__(Message)
        self._wait_messages("get()", 1, _as_timeout(block, timeout, "get"), &ring, &count)
        try:
            msg.seq = r.rings[ring].delivered
            msg.slot = self._take_ticket(ring, &nbytes)
            msg.queue = self    # from here the message owns its slot (and gives it back when it dies)
            msg.ring = ring
            msg.nbytes = nbytes
            ring_delivered(r, ring)
        finally:
            self._leave()
        msg.source = self.producers[ring]
        msg.data = slot_ptr(r, ring, msg.slot)
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

    def get_nowait(self):
        """get(block=False), as queue.Queue has it."""
        return self.get(block=False)

    def get_batch(self, k, block=True, timeout=None):
        """The next k messages (owner only) as one rdq.Batch of shape (k, *shape).

        The first producer (round robin) with k messages waiting gives them, and
        the batch is zero-copy when their slots are consecutive, which is always
        the case when the owner takes only batches of k and k divides the
        capacity.  When no producer can ever have k waiting by itself (it closed
        with fewer left, or unreleased views hold its slots), k messages are
        taken across producers and copied once, as are non-consecutive slots
        (stats()["batch_copies"]).  At end of stream the last batch may be
        shorter; after it, rdq.Closed.  Raw-bytes queues batch messages of one
        size only (ValueError otherwise, and the messages stay queued for get()).
        """
        cdef int64_t ring, count, total = self.ring.nrings * self.capacity
        cdef int what
        cdef double c_timeout = _as_timeout(block, timeout, "get_batch")
        k = _as_index(k, "get_batch(k)", self._where())
        if k < 1 or k > total:
            raise ValueError(f"{self._where()}: get_batch(k) needs 1 <= k <= {total} (producers x capacity), "
                             f"got {k!r}")
        if k > total - self.outstanding and c_timeout <= 0:   # with a timeout, another thread may release
            raise ValueError(f"{self._where()}: get_batch({k}) would wait forever: {self.outstanding} of "
                             f"{total} slots are held by unreleased messages or views; pass a timeout if "
                             f"another thread of this rank releases them")
        what = self._wait_messages("get_batch()", k, c_timeout, &ring, &count)
        try:
            batch = self._ring_batch(ring, count) if what == SELECT_RING else self._mixed_batch(ring, count)
        finally:
            self._leave()
        self.n_gets += count
        self.bytes_got += batch.nbytes
        return batch

    cdef int _check_sizes(self, int64_t nb, int64_t other) except -1:
        if other != nb:
            raise ValueError(f"{self._where()}: get_batch() on raw messages of different sizes "
                             f"({nb} and {other} bytes); they stay queued: take them with get()")
        return 0

    cdef Batch _ring_batch(self, int64_t ring, int64_t count):
        """count messages of one ring: zero-copy when their slots are consecutive."""
        cdef Ring *r = &self.ring
        cdef RingOwner *o = &r.rings[ring]
        cdef int64_t t0 = o.delivered, first = ring_slot(r, ring, t0), i, nb, slot
        cdef bint contiguous = True
        cdef Batch batch
        nb = owner_word(r, meta_off(r, ring, t0))[META_NBYTES]
        for i in range(count):
            self._check_sizes(nb, owner_word(r, meta_off(r, ring, t0 + i))[META_NBYTES])
            contiguous = contiguous and ring_slot(r, ring, t0 + i) == first + i
        batch = self._new_batch(count, nb, np.full(count, self.producers[ring], np.int32),
                                np.arange(t0, t0 + count, dtype=np.int64))
        ring_delivered(r, ring)
        if not contiguous:
            self._copy_rows(batch, &ring, &count, 1)
            return batch
        o.delivered += count
        batch.ring = ring
        batch.first_slot = first
        batch.pinned = count
        batch.data = slot_ptr(r, ring, first)
        batch.c_strides[0] = r.slot_stride
        self.outstanding += count
        return batch

    cdef Batch _mixed_batch(self, int64_t lead, int64_t count):
        """count messages across rings, round robin from lead (or the round robin's
        place, when lead < 0), copied once."""
        cdef Ring *r = &self.ring
        cdef int64_t[::1] rings = np.empty(r.nrings, np.int64)
        cdef int64_t[::1] takes = np.empty(r.nrings, np.int64)
        cdef int64_t need = count, n = 0, j, ring, i, nb = -1, at = 0
        cdef RingOwner *o
        sources = np.empty(count, np.int32)
        seqs = np.empty(count, np.int64)
        for j in range(r.nrings):
            if need == 0:
                break
            ring = ((lead if lead >= 0 else r.next_ring) + j) % r.nrings
            o = &r.rings[ring]
            if o.verified == o.delivered:
                continue
            rings[n] = ring
            takes[n] = min(o.verified - o.delivered, need)
            for i in range(takes[n]):
                if nb < 0:
                    nb = owner_word(r, meta_off(r, ring, o.delivered))[META_NBYTES]
                self._check_sizes(nb, owner_word(r, meta_off(r, ring, o.delivered + i))[META_NBYTES])
                sources[at] = self.producers[ring]
                seqs[at] = o.delivered + i
                at += 1
            need -= takes[n]
            n += 1
        batch = self._new_batch(at, nb, sources[:at], seqs[:at])
        self._copy_rows(batch, &rings[0], &takes[0], n)
        ring_delivered(r, rings[n - 1])
        for j in range(n):
            r.rings[rings[j]].passed = False
        return batch

    cdef int _copy_rows(self, Batch batch, int64_t *rings, int64_t *takes, int64_t n) except -1:
        """Fill a batch with copies of takes[j] messages of rings[j], and give their slots back."""
        cdef Ring *r = &self.ring
        cdef int64_t j, i, slot, nb = batch.nbytes // batch.c_shape[0], row = 0
        cdef char *dst
        batch.rows = np.empty(batch.nbytes, np.uint8)
        batch.data = dst = <char *><size_t>batch.rows.ctypes.data
        batch.c_strides[0] = nb
        batch.own_copy = True
        for j in range(n):
            for i in range(takes[j]):
                slot = self._take_ticket(rings[j], &nb)
                memcpy(dst + row * nb, slot_ptr(r, rings[j], slot), <size_t>nb)
                ring_return(r, rings[j], slot)
                row += 1
        self.batch_copies += 1
        return 0

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self.get()
        except Closed:
            if self.end_of_stream:
                raise StopIteration from None
            raise

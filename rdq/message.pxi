# Message and Batch: zero-copy views of slots of the owner's window.

@cython.no_gc_clear
cdef class _SlotView:
    """What Message and Batch share: the export rules of the slots they pin.

    The slots go back to producers once the view is released (``release()``,
    leaving ``with``, or garbage collection) and no export of it (memoryview,
    numpy array, DLPack tensor) is alive any more.
    """

    def __init__(self):
        raise TypeError(f"rdq.{type(self).__name__} is made by the queue, not directly")

    def __dealloc__(self):
        if not self.returned and self.queue is not None:
            self._return_slots()
        PyMem_Free(self.own_dims)

    cdef void _give_back(self) noexcept:
        pass

    cdef void _return_slots(self) noexcept:
        # After free() the slots belong to no ring any more, and after MPI_Finalize
        # the window's memory may be gone (rma): nothing to give back.
        self.returned = True
        if not self.queue.freed and not _mpi_finalized:
            self._give_back()

    cdef void _add_export(self) noexcept:
        self.exports += 1
        if not self.own_copy:
            self.queue.exports += 1   # keeps the window's memory mapped after free()

    cdef void _drop_export(self) noexcept:
        self.exports -= 1
        if self.exports == 0 and self.release_requested and not self.returned:
            self._return_slots()
        if self.own_copy:
            return
        self.queue.exports -= 1
        if self.queue.exports == 0 and self.queue.freed:
            self.queue._unmap()   # the last view of a freed queue's memory

    cdef int _check_exportable(self) except -1:
        if self.own_copy:
            return 0              # a copy stays valid whatever happens to the queue
        if self.release_requested:
            raise ValueError(f"{self!r} was released: its slots may already hold other messages")
        if self.queue.freed:
            raise Closed(f"{self!r}: its queue was freed")
        if _mpi_finalized:
            raise Closed(f"{self!r}: MPI was finalized (its window may be gone)")
        return 0

    def release(self):
        """Give the slots back to producers now, or when the last export of them dies."""
        self.release_requested = True
        if self.exports == 0 and not self.returned:
            self._return_slots()

    @property
    def released(self):
        """True once release() was called (the slots may still be pinned by exports)."""
        return self.release_requested

    @property
    def nbytes(self):
        """Bytes of payload (a batch: of all its rows)."""
        return self.nbytes

    @property
    def shape(self):
        """The array's shape: the queue's shape, (nbytes,) for raw bytes, (k, ...) for a batch."""
        return tuple(self.c_shape[i] for i in range(self.ndim))

    @property
    def dtype(self):
        """The numpy dtype of the elements (uint8 for raw bytes)."""
        return self.queue.dtype if self.queue.dtype is not None else _UINT8

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    cdef bint _contiguous(self) noexcept:
        # rows are dense inside; a batch's rows are dense when its stride is the row size
        return self.ndim == 0 or self.c_strides[0] * self.c_shape[0] == self.nbytes

    def __getbuffer__(self, Py_buffer *buf, int flags):
        # PEP 3118: a consumer that cannot take strides, or asks for a contiguous
        # buffer, never gets a strided batch (its rows would carry slot padding).
        self._check_exportable()
        wants_contiguous = ((flags & PyBUF_STRIDES) != PyBUF_STRIDES
                            or (flags & (PyBUF_C_CONTIGUOUS | PyBUF_F_CONTIGUOUS | PyBUF_ANY_CONTIGUOUS)
                                & ~PyBUF_STRIDES))
        if wants_contiguous and not self._contiguous():
            raise BufferError(f"{self!r} is strided (each row sits in a {self.c_strides[0]}-byte slot): "
                              f"numpy.asarray() and torch.from_dlpack() take it as it is; "
                              f"numpy.ascontiguousarray() makes a dense copy")
        if (flags & PyBUF_F_CONTIGUOUS) == PyBUF_F_CONTIGUOUS and self.ndim > 1 and self.nbytes > self.queue.itemsize:
            raise BufferError(f"{self!r} is C-contiguous, not Fortran-contiguous")
        buf.buf = self.data
        buf.len = self.nbytes
        buf.readonly = 0
        buf.itemsize = self.queue.itemsize
        buf.ndim = self.ndim
        buf.shape = self.c_shape if (flags & PyBUF_ND) == PyBUF_ND else NULL
        buf.strides = self.c_strides if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
        buf.suboffsets = NULL
        buf.internal = NULL
        buf.format = NULL
        if flags & PyBUF_FORMAT:
            buf.format = <char *>self.queue.format   # bytes kept by the queue, which outlives the view
        buf.obj = self
        self._add_export()

    def __releasebuffer__(self, Py_buffer *buf):
        self._drop_export()

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """A DLPack capsule sharing the slots (torch.from_dlpack(v), numpy.from_dlpack(v))."""
        self._check_exportable()
        if stream is not None and stream != -1:
            raise BufferError(f"{self!r} lives in host memory: stream must be None, got {stream!r}")
        if dl_device is not None and tuple(dl_device) != (kDLCPU, 0):
            raise BufferError(f"{self!r} lives in host memory (kDLCPU, 0); cannot export to {dl_device}")
        versioned = max_version is not None and max_version[0] >= 1
        if copy:
            # The standard: the producer copies when asked to.  The copy is numpy's own
            # array, which owns its memory and exports itself.
            return np.array(memoryview(self), copy=True).__dlpack__(max_version=max_version if versioned else None)
        return _export_dlpack(self, versioned)

    def __dlpack_device__(self):
        return (kDLCPU, 0)

    def __reduce__(self):
        raise TypeError(f"{type(self).__name__} is a view of a slot of the owner's window and cannot be "
                        f"pickled or copied; numpy.array(m) (a copy) can")

    def __array__(self, dtype=None, copy=None):
        # numpy tries the buffer protocol first and, when that fails, would quietly
        # wrap the view in an object array; this says why instead.
        self._check_exportable()
        return np.array(memoryview(self), dtype=dtype, copy=copy)


@cython.freelist(64)
cdef class Message(_SlotView):
    """One received message: a zero-copy view of its slot in the queue's window.

    Export it with ``numpy.asarray(m)``, ``memoryview(m)`` or ``torch.from_dlpack(m)``;
    all of them share memory with the window.  ``.source`` is the producing rank,
    ``.seq`` that producer's message count from 0.
    """

    cdef void _give_back(self) noexcept:
        self.queue.outstanding -= 1
        ring_return(&self.queue.ring, self.ring, self.slot)

    def __repr__(self):
        return (f"<rdq.Message source={self.source} seq={self.seq} shape={self.shape} "
                f"dtype={self.dtype} of {self.queue.name}>")


cdef class Batch(_SlotView):
    """k messages as one (k, *shape) array, exported like a Message.

    Zero-copy when the k slots are consecutive in the window (always, when
    only batches of k are taken and k divides the capacity); otherwise the
    rows are copied once and the slots go back at once (counted in
    ``stats()["batch_copies"]``).  ``.sources`` and ``.seqs`` say where each
    row came from.
    """

    cdef void _give_back(self) noexcept:
        cdef int64_t i
        self.queue.outstanding -= self.pinned
        for i in range(self.pinned):
            ring_return(&self.queue.ring, self.ring, self.first_slot + i)

    @property
    def copied(self):
        """True when the rows are a copy (slots not consecutive, or a replay buffer's sample),
        not views of the window: they stay valid whatever happens to the queue."""
        return self.own_copy

    def __len__(self):
        return self.c_shape[0]

    def __repr__(self):
        return (f"<rdq.Batch of {len(self)} shape={self.shape} dtype={self.dtype} "
                f"{'copied' if self.copied else 'zero-copy'} of {self.queue.name}>")

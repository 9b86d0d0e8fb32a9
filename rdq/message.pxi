# Message: a zero-copy view of one slot of the owner's window.

@cython.freelist(64)
@cython.no_gc_clear
cdef class Message:
    """One received message: a zero-copy view of its slot in the queue's window.

    Export it with ``numpy.asarray(m)``, ``memoryview(m)`` or ``torch.from_dlpack(m)``;
    all of them share memory with the window.  The slot goes back to producers once
    the message is released (``release()``, leaving ``with m:``, or garbage
    collection) and no export of it is alive any more.
    """

    def __init__(self):
        raise TypeError("rdq.Message is made by Queue.get(), not directly")

    def __dealloc__(self):
        if not self.returned and self.queue is not None and not self.queue.freed:
            self._return_slot()

    cdef void _return_slot(self) noexcept:
        self.returned = True
        self.queue.outstanding -= 1
        ring_return(&self.queue.ring, self.slot)

    cdef void _add_export(self) noexcept:
        self.exports += 1
        self.queue.exports += 1

    cdef void _drop_export(self) noexcept:
        self.exports -= 1
        self.queue.exports -= 1
        if self.exports == 0 and self.release_requested and not self.returned:
            self._return_slot()

    cdef int _check_exportable(self) except -1:
        if self.release_requested:
            raise ValueError(f"{self!r} was released: its slot may already hold another message")
        if self.queue.freed:
            raise Closed(f"{self!r}: its queue was freed")
        return 0

    def release(self):
        """Give the slot back to producers now, or when the last export of it dies."""
        self.release_requested = True
        if self.exports == 0 and not self.returned:
            self._return_slot()

    @property
    def released(self):
        """True once release() was called (the slot may still be pinned by exports)."""
        return self.release_requested

    @property
    def nbytes(self):
        return self.nbytes

    @property
    def shape(self):
        return (self.nbytes,) if self.queue.dtype is None else self.queue.shape

    @property
    def dtype(self):
        return _UINT8 if self.queue.dtype is None else self.queue.dtype

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __repr__(self):
        return (f"<rdq.Message source={self.source} seq={self.seq} shape={self.shape} "
                f"dtype={self.dtype} of {self.queue.name}>")

    def __getbuffer__(self, Py_buffer *buf, int flags):
        cdef Queue q = self.queue
        self._check_exportable()
        buf.buf = self.data
        buf.len = self.nbytes
        buf.readonly = 0
        buf.suboffsets = NULL
        buf.internal = NULL
        if q.dtype is None:
            buf.itemsize = 1
            buf.ndim = 1
            buf.shape = self.raw_shape
            buf.strides = &_ONE
            buf.format = b"B"
        else:
            buf.itemsize = q.itemsize
            buf.ndim = q.ndim
            buf.shape = q.c_shape
            buf.strides = q.c_strides
            buf.format = q.format
        if not (flags & PyBUF_FORMAT):
            buf.format = NULL
        buf.obj = self
        self._add_export()

    def __releasebuffer__(self, Py_buffer *buf):
        self._drop_export()

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """Export as a DLPack capsule sharing the slot (torch.from_dlpack(m), numpy.from_dlpack(m))."""
        self._check_exportable()
        if stream is not None and stream != -1:
            raise BufferError(f"{self!r} lives in host memory: stream must be None, got {stream!r}")
        if dl_device is not None and tuple(dl_device) != (kDLCPU, 0):
            raise BufferError(f"{self!r} lives in host memory (kDLCPU, 0); cannot export to {dl_device}")
        if copy:
            raise BufferError(f"{self!r} is exported without copies; copy=True is not supported")
        versioned = max_version is not None and max_version[0] >= 1
        return _export_dlpack(self, versioned)

    def __array__(self, dtype=None, copy=None):
        # numpy tries the buffer protocol first and, when that fails, would quietly
        # wrap the message in an object array; this says why instead.
        self._check_exportable()
        return np.array(memoryview(self), dtype=dtype, copy=copy)

    def __dlpack_device__(self):
        return (kDLCPU, 0)

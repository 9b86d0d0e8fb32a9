# DLPack (https://dmlc.github.io/dlpack/latest/): the structs rdq exports and
# accepts.  Versioned capsules (DLPack >= 1.0) when the consumer asks for them
# with max_version, legacy capsules otherwise.

cdef enum:
    kDLCPU = 1
    kDLInt = 0
    kDLUInt = 1
    kDLFloat = 2
    kDLComplex = 5
    kDLBool = 6

ctypedef struct DLPackVersion:
    uint32_t major
    uint32_t minor

ctypedef struct DLDevice:
    int32_t device_type
    int32_t device_id

ctypedef struct DLDataType:
    uint8_t code
    uint8_t bits
    uint16_t lanes

ctypedef struct DLTensor:
    void *data
    DLDevice device
    int32_t ndim
    DLDataType dtype
    int64_t *shape
    int64_t *strides
    uint64_t byte_offset

ctypedef struct DLManagedTensor:
    DLTensor dl_tensor
    void *manager_ctx
    void (*deleter)(DLManagedTensor *) noexcept nogil

ctypedef struct DLManagedTensorVersioned:
    DLPackVersion version
    void *manager_ctx
    void (*deleter)(DLManagedTensorVersioned *) noexcept nogil
    uint64_t flags
    DLTensor dl_tensor


cdef object _dtype_to_dl(object dtype):
    """numpy dtype -> (DLPack type code, bits); TypeError for what DLPack cannot carry."""
    codes = {"f": kDLFloat, "i": kDLInt, "u": kDLUInt, "b": kDLBool, "c": kDLComplex}
    if dtype.kind not in codes or dtype.fields is not None or dtype.subdtype is not None:
        raise TypeError(f"dtype {dtype} is not supported: rdq carries bool, integer, "
                        f"floating and complex numbers (raw bytes: use slot_bytes=)")
    return codes[dtype.kind], dtype.itemsize * 8


_DL_DEVICES = {1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal",
               10: "rocm", 11: "rocm_host", 13: "cuda_managed", 14: "oneapi", 15: "webgpu", 16: "hexagon",
               17: "maia"}


def _dl_device_name(int device_type):
    return _DL_DEVICES.get(device_type, f"DLPack device type {device_type}")


def _dl_dtype_name(int code, int bits, int lanes):
    """What a user calls a DLPack element type (float32, int8, bfloat16, ...)."""
    names = {kDLInt: "int", kDLUInt: "uint", kDLFloat: "float", kDLComplex: "complex", kDLBool: "bool", 4: "bfloat"}
    name = names.get(code, f"(DLPack type code {code}) ") + ("" if code == kDLBool else str(bits))
    return name if lanes == 1 else f"{name}x{lanes}"


# --- export: a Message or Batch lends its slots to a DLPack consumer ---------

cdef void _release_export(void *ctx) noexcept nogil:
    with gil:
        (<_SlotView>ctx)._drop_export()
        Py_XDECREF(<PyObject *>ctx)


cdef void _deleter_versioned(DLManagedTensorVersioned *t) noexcept nogil:
    _release_export(t.manager_ctx)
    free(t)


cdef void _deleter_legacy(DLManagedTensor *t) noexcept nogil:
    _release_export(t.manager_ctx)
    free(t)


cdef void _capsule_destructor_versioned(object capsule) noexcept:
    # Never consumed (no one renamed it to used_dltensor_versioned): release it ourselves.
    cdef DLManagedTensorVersioned *t
    if PyCapsule_IsValid(capsule, b"dltensor_versioned"):
        t = <DLManagedTensorVersioned *>PyCapsule_GetPointer(capsule, b"dltensor_versioned")
        t.deleter(t)


cdef void _capsule_destructor_legacy(object capsule) noexcept:
    cdef DLManagedTensor *t
    if PyCapsule_IsValid(capsule, b"dltensor"):
        t = <DLManagedTensor *>PyCapsule_GetPointer(capsule, b"dltensor")
        t.deleter(t)


cdef void _fill_tensor(DLTensor *tensor, _SlotView view, int64_t *dims) noexcept:
    """dims has room for 2 * ndim: shape, then strides (in elements)."""
    cdef _Window q = view.queue
    cdef int i
    tensor.data = view.data
    tensor.device.device_type = kDLCPU
    tensor.device.device_id = 0
    tensor.byte_offset = 0
    tensor.dtype.code = q.dl_code
    tensor.dtype.bits = q.dl_bits
    tensor.dtype.lanes = 1
    for i in range(view.ndim):
        dims[i] = view.c_shape[i]
        dims[view.ndim + i] = view.c_strides[i] // q.itemsize
    tensor.ndim = view.ndim
    tensor.shape = dims
    tensor.strides = dims + view.ndim


cdef object _export_dlpack(_SlotView view, bint versioned):
    cdef size_t dims_bytes = 2 * view.ndim * sizeof(int64_t)
    cdef DLManagedTensorVersioned *tv
    cdef DLManagedTensor *tl
    cdef object capsule
    if versioned:
        tv = <DLManagedTensorVersioned *>malloc(sizeof(DLManagedTensorVersioned) + dims_bytes)
        if tv == NULL:
            raise MemoryError()
        tv.version.major = 1
        tv.version.minor = 0
        tv.flags = 0
        tv.manager_ctx = <void *>view
        tv.deleter = _deleter_versioned
        _fill_tensor(&tv.dl_tensor, view, <int64_t *>(tv + 1))
        capsule = PyCapsule_New(tv, b"dltensor_versioned", _capsule_destructor_versioned)
    else:
        tl = <DLManagedTensor *>malloc(sizeof(DLManagedTensor) + dims_bytes)
        if tl == NULL:
            raise MemoryError()
        tl.manager_ctx = <void *>view
        tl.deleter = _deleter_legacy
        _fill_tensor(&tl.dl_tensor, view, <int64_t *>(tl + 1))
        capsule = PyCapsule_New(tl, b"dltensor", _capsule_destructor_legacy)
    # The capsule (then the consumer's tensor) owns one reference and one export.
    Py_XINCREF(<PyObject *>view)
    view._add_export()
    return capsule


# --- import: put() reads a producer's DLPack tensor --------------------------

cdef class _DLPackInput:
    """A DLPack tensor taken from a producer's object for the length of one put."""
    cdef object capsule
    cdef DLTensor *tensor
    cdef void *managed
    cdef bint versioned

    def __cinit__(self, obj):
        try:
            self.capsule = obj.__dlpack__(max_version=(1, 0))
        except TypeError:   # producers older than DLPack 1.0 take no max_version
            self.capsule = obj.__dlpack__()
        if PyCapsule_IsValid(self.capsule, b"dltensor_versioned"):
            self.versioned = True
            self.managed = PyCapsule_GetPointer(self.capsule, b"dltensor_versioned")
            self.tensor = &(<DLManagedTensorVersioned *>self.managed).dl_tensor
            PyCapsule_SetName(self.capsule, b"used_dltensor_versioned")
        elif PyCapsule_IsValid(self.capsule, b"dltensor"):
            self.managed = PyCapsule_GetPointer(self.capsule, b"dltensor")
            self.tensor = &(<DLManagedTensor *>self.managed).dl_tensor
            PyCapsule_SetName(self.capsule, b"used_dltensor")
        else:
            raise TypeError(f"{type(obj).__name__}.__dlpack__() returned no DLPack capsule")

    def __dealloc__(self):
        if self.managed == NULL:
            return
        if self.versioned:
            if (<DLManagedTensorVersioned *>self.managed).deleter != NULL:
                (<DLManagedTensorVersioned *>self.managed).deleter(<DLManagedTensorVersioned *>self.managed)
        elif (<DLManagedTensor *>self.managed).deleter != NULL:
            (<DLManagedTensor *>self.managed).deleter(<DLManagedTensor *>self.managed)

    cdef tuple shape(self):
        return tuple(self.tensor.shape[i] for i in range(self.tensor.ndim))

    cdef bint c_contiguous(self):
        cdef int64_t expect = 1
        cdef int i
        if self.tensor.strides == NULL:
            return True
        for i in range(self.tensor.ndim - 1, -1, -1):
            if self.tensor.shape[i] != 1 and self.tensor.strides[i] != expect:
                return False
            expect *= self.tensor.shape[i]
        return True

    cdef int64_t nbytes(self):
        cdef int64_t n = (self.tensor.dtype.bits * self.tensor.dtype.lanes + 7) // 8
        cdef int i
        for i in range(self.tensor.ndim):
            n *= self.tensor.shape[i]
        return n

    cdef const char *data(self):
        return <const char *>self.tensor.data + self.tensor.byte_offset

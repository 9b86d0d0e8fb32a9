# MPI error checking, mpi4py style (the GIL is taken only to raise), and MPI's lifetime.

cdef bint _mpi_finalized = False   # set while MPI_Finalize runs (_watch_finalize)
cdef bint _watching_finalize = False

cdef object _mpi_error(int ierr):
    cdef char msg[MPI_MAX_ERROR_STRING + 1]
    cdef int n = 0
    if MPI_Error_string(ierr, msg, &n) != MPI_SUCCESS:
        n = 0
    msg[n] = 0
    return MPIError(ierr, msg.decode("utf-8", "replace"), "MPI call")


cdef int CHKERR(int ierr) except -1 nogil:
    if ierr == MPI_SUCCESS:
        return 0
    with gil:
        raise _mpi_error(ierr)


cdef int _on_finalize(MPI_Comm comm, int keyval, void *value, void *extra) noexcept nogil:
    global _mpi_finalized
    _mpi_finalized = True
    return MPI_SUCCESS


cdef int _watch_finalize() except -1:
    """Learn when MPI_Finalize starts (it deletes MPI_COMM_SELF's attributes first), so that
    queues used after it raise rdq.Closed instead of calling into a finalized MPI."""
    global _watching_finalize
    cdef int keyval
    if not _watching_finalize:
        CHKERR(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, _on_finalize, &keyval, NULL))
        CHKERR(MPI_Comm_set_attr(MPI_COMM_SELF, keyval, NULL))
        _watching_finalize = True
    return 0

# MPI error checking, mpi4py style: the GIL is taken only to raise.

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

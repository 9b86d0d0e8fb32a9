# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A compiled simulation kernel: a 1-D heat equation whose whole time loop runs
without the GIL, exchanging halo cells with MPI and putting its strip into an
rdq queue every few steps."""
cimport rdq
from mpi4py cimport MPI
from mpi4py.libmpi cimport MPI_Comm, MPI_DOUBLE, MPI_STATUS_IGNORE, MPI_SUCCESS, MPI_Sendrecv

import numpy as np


cdef int halo_exchange(double[::1] u, MPI_Comm comm, int left, int right) except -1 nogil:
    cdef Py_ssize_t n = u.shape[0] - 2
    if (MPI_Sendrecv(&u[1], 1, MPI_DOUBLE, left, 0, &u[n + 1], 1, MPI_DOUBLE, right, 0, comm,
                     MPI_STATUS_IGNORE) != MPI_SUCCESS or
            MPI_Sendrecv(&u[n], 1, MPI_DOUBLE, right, 1, &u[0], 1, MPI_DOUBLE, left, 1, comm,
                         MPI_STATUS_IGNORE) != MPI_SUCCESS):
        with gil:
            raise RuntimeError("halo exchange failed")
    return 0


def run(rdq.Queue queue, MPI.Comm sim, double[::1] u, int steps, int every, double alpha=0.2):
    """Advance u (the strip with one halo cell at each end) and stream its interior."""
    cdef MPI_Comm comm = sim.ob_mpi
    cdef int rank = sim.Get_rank(), size = sim.Get_size()
    cdef int left = (rank - 1 + size) % size, right = (rank + 1) % size
    cdef Py_ssize_t n = u.shape[0] - 2, i
    cdef double[::1] next_u = np.empty_like(u)
    cdef int step
    with nogil:
        for step in range(steps):
            halo_exchange(u, comm, left, right)
            for i in range(1, n + 1):
                next_u[i] = u[i] + alpha * (u[i - 1] - 2 * u[i] + u[i + 1])
            u[1:n + 1] = next_u[1:n + 1]
            if step % every == 0:
                rdq.put_1d(queue, u[1:n + 1], -1.0)   # one copy into the trainer's window
        queue.close_nogil()

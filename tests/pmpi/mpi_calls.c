/* A PMPI shim that counts the one-sided MPI calls a process makes, so that tests can assert
 * what a message costs on the wire (tests/test_remote.py).  Built at test time with the
 * environment's mpicc and loaded with LD_PRELOAD; read with ctypes: rdq_mpi_calls(out).
 * RDQ_FAIL_FLUSH=n makes the n-th MPI_Win_flush of the process return an error after it
 * completed (what an MPI error in the middle of a put leaves behind; tests/test_replay.py). */
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>

enum { PUT, GET, FLUSH, SYNC, ATOMIC, NCOUNTS };
static int64_t counts[NCOUNTS];

void rdq_mpi_calls(int64_t *out)
{
    for (int i = 0; i < NCOUNTS; i++)
        out[i] = __atomic_load_n(&counts[i], __ATOMIC_RELAXED);
}

#define COUNT(what) __atomic_fetch_add(&counts[what], 1, __ATOMIC_RELAXED)

int MPI_Put(const void *o, int oc, MPI_Datatype ot, int t, MPI_Aint d, int tc, MPI_Datatype tt, MPI_Win w)
{ COUNT(PUT); return PMPI_Put(o, oc, ot, t, d, tc, tt, w); }

int MPI_Get(void *o, int oc, MPI_Datatype ot, int t, MPI_Aint d, int tc, MPI_Datatype tt, MPI_Win w)
{ COUNT(GET); return PMPI_Get(o, oc, ot, t, d, tc, tt, w); }

int MPI_Win_flush(int rank, MPI_Win w)
{
    static int64_t fail_at = -1;
    if (fail_at < 0)
        fail_at = getenv("RDQ_FAIL_FLUSH") ? atoll(getenv("RDQ_FAIL_FLUSH")) : 0;
    int64_t n = COUNT(FLUSH) + 1;
    int err = PMPI_Win_flush(rank, w);
    return err == MPI_SUCCESS && n == fail_at ? MPI_ERR_OTHER : err;
}
int MPI_Win_flush_all(MPI_Win w) { COUNT(FLUSH); return PMPI_Win_flush_all(w); }
int MPI_Win_flush_local(int rank, MPI_Win w) { COUNT(FLUSH); return PMPI_Win_flush_local(rank, w); }
int MPI_Win_sync(MPI_Win w) { COUNT(SYNC); return PMPI_Win_sync(w); }

int MPI_Accumulate(const void *o, int oc, MPI_Datatype ot, int t, MPI_Aint d, int tc, MPI_Datatype tt,
                   MPI_Op op, MPI_Win w)
{ COUNT(ATOMIC); return PMPI_Accumulate(o, oc, ot, t, d, tc, tt, op, w); }

int MPI_Get_accumulate(const void *o, int oc, MPI_Datatype ot, void *r, int rc, MPI_Datatype rt, int t,
                       MPI_Aint d, int tc, MPI_Datatype tt, MPI_Op op, MPI_Win w)
{ COUNT(ATOMIC); return PMPI_Get_accumulate(o, oc, ot, r, rc, rt, t, d, tc, tt, op, w); }

int MPI_Fetch_and_op(const void *o, void *r, MPI_Datatype dt, int t, MPI_Aint d, MPI_Op op, MPI_Win w)
{ COUNT(ATOMIC); return PMPI_Fetch_and_op(o, r, dt, t, d, op, w); }

int MPI_Compare_and_swap(const void *o, const void *c, void *r, MPI_Datatype dt, int t, MPI_Aint d,
                         MPI_Win w)
{ COUNT(ATOMIC); return PMPI_Compare_and_swap(o, c, r, dt, t, d, w); }

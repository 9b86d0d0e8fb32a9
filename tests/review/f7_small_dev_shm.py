"""F7 (review r7_small_devshm.py): a shm queue larger than the free space of /dev/shm (Docker's
default is 64 MB).  Run it in a private mount namespace with a small /dev/shm, so that other
processes keep theirs (tests/test_review.py does):

    unshare -m sh -c 'mount -t tmpfs -o size=40m tmpfs /dev/shm && exec mpiexec -n 2 python -m mpi4py f7_small_dev_shm.py'

The first protocol's admission check looked only at MemAvailable: the queue was made, and the
producer died of SIGBUS at a put.  Fixed: the segment's pages are reserved at creation, so the
queue is a clear ValueError on every rank (docs/guarantees.md, "Limits").  A queue that is made
must work: no transport may die of SIGBUS instead.  2 ranks; transport: $RDQ_TRANSPORT.
"""
import faulthandler
import os
import signal

import numpy as np
from mpi4py import MPI

import rdq

faulthandler.enable()                                     # SIGSEGV, SIGBUS: the Python stack
faulthandler.register(signal.SIGUSR1, all_threads=True)   # the launcher asks for stacks on timeout
comm = MPI.COMM_WORLD
cap, mb = 48, 1 << 20
st = os.statvfs("/dev/shm")
free_mb = st.f_bavail * st.f_frsize / mb
if free_mb >= cap:
    raise SystemExit(f"F7: run this with a /dev/shm smaller than {cap} MiB (it has {free_mb:.0f} MiB free); "
                     f"see the header")
try:
    q = rdq.Queue(comm, owner=0, capacity=cap, slot_bytes=mb, producers=[1])
except ValueError as exc:
    print(f"rank {comm.rank}: refused: {exc}", flush=True)
    if "/dev/shm" not in str(exc):
        raise AssertionError(f"F7: rank {comm.rank}: the refusal does not name /dev/shm: {exc}") from None
except rdq.MPIError as exc:   # e.g. Open MPI's MPI_Win_allocate with its backing file in /dev/shm
    raise AssertionError(f"F7: rank {comm.rank}: a {cap} MiB queue with {free_mb:.0f} MiB free in /dev/shm failed "
                         f"inside MPI ({exc}), not with the clear ValueError naming /dev/shm that a shm "
                         f"queue gets") from None
else:
    # Made: fine if its memory is not in /dev/shm (e.g. an rma window in private memory), so do
    # what the review did.  A SIGBUS below, rather than an exception, is the defect.
    print(f"rank {comm.rank}: a {cap} MiB {q.transport} queue was made with {free_mb:.0f} MiB free in "
          f"/dev/shm; putting into it (a SIGBUS now is F7)", flush=True)
    if comm.rank == 1:
        for i in range(cap):
            q.put(np.full(mb, i % 251, np.uint8))
        q.close()
    else:
        n = 0
        for m in q:
            with m:
                if np.asarray(m)[mb // 2] != n % 251:
                    raise AssertionError(f"F7: message {n} is wrong")
            n += 1
        if n != cap:
            raise AssertionError(f"F7: got {n} of {cap}")
    q.free()
with rdq.Queue(comm, owner=0, capacity=8, slot_bytes=mb, producers=[1]) as q:   # one that fits works
    if comm.rank == 1:
        q.put(np.full(mb, 7, np.uint8))
        q.close()
    else:
        with q.get() as m:
            if int(np.asarray(m).sum()) != 7 * mb:
                raise AssertionError("F7: the queue that fits lost its message")
comm.Barrier()
if comm.rank == 0:
    print("F7 ok", flush=True)

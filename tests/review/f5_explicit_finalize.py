"""F5 (review r5c_explicit_finalize.py): a script that ends with an explicit MPI.Finalize() while a
received message is still referenced (a module global, e.g. the loop variable of `for last in q`).

At interpreter exit, the first protocol's Message.__dealloc__ returned the slot into the window
that MPI_Finalize had already unmapped: SIGSEGV on Open MPI.  Fixed: releases touch only the
owner's own memory, and calls after MPI_Finalize raise rdq.Closed (docs/guarantees.md,
"Lifetimes of views").  The assertion is the exit code: the defect kills a rank after the last
line below.  Transport: argv[1], else $RDQ_TRANSPORT.  Any number of ranks.
"""
import faulthandler
import signal
import sys

import numpy as np
from mpi4py import MPI

import rdq

faulthandler.enable()                                     # SIGSEGV, SIGBUS: the Python stack
faulthandler.register(signal.SIGUSR1, all_threads=True)   # the launcher asks for stacks on timeout
comm = MPI.COMM_WORLD
RANK = comm.rank
q = rdq.Queue(comm, owner=0, capacity=2, shape=(1024,), dtype=np.float64,
              producers=[comm.size - 1], transport=sys.argv[1] if len(sys.argv) > 1 else None)
if comm.rank == comm.size - 1:
    q.put(np.full(1024, 3.0))
    q.put(np.full(1024, 4.0))  # left queued: a get() after MPI_Finalize must not return it
    q.close()
if comm.rank == 0:
    last = q.get()            # e.g. the loop variable of `for last in q: ...` at module level
    x = np.asarray(last)      # and a view of it, alive at exit too
    if float(x.sum()) != 3 * 1024:
        raise AssertionError(f"F5: got {float(x.sum())}")
print(f"rank {comm.rank}: calling MPI.Finalize() ({q.transport})", flush=True)
MPI.Finalize()
if RANK == 0:
    try:
        q.get(timeout=0.5)
    except rdq.Closed:
        pass
    except Exception as exc:
        raise AssertionError(f"F5: get() after MPI_Finalize raised {exc!r}, not rdq.Closed") from None
    else:
        raise AssertionError("F5: get() after MPI_Finalize returned a message")
print(f"rank {RANK}: finalized; interpreter exit with the message alive (F5 ok unless this rank dies now)",
      flush=True)
if RANK == 0:
    print("F5 ok", flush=True)

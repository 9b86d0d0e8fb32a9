"""S3 (review, by reading; no script there): a rank that owns an rma queue and waits in the get()
of a shm queue must not starve the rma queue's remote producers.

The first protocol's shm waits made no MPI call, and its rma producers needed the owner's MPI
progress (atomics): puts into the owner's rma queue waited until the owner left its shm wait.
Now an rma put (MPI_Put + MPI_Win_flush) needs nothing from the owner (docs/guarantees.md,
"Progress").  2 ranks; RDQ_TRANSPORT is ignored: each queue names its transport.  A is rma,
owned by rank 0, fed by rank 1; B is shm on COMM_WORLD, owned by rank 0, where rank 1 reports
when its puts into A completed, and rank 0 waits in B.get(timeout=WAIT) meanwhile.  Where MPI
sees the ranks on different nodes (MPICH with MPIR_CVAR_NOLOCAL=1) a shm queue on COMM_WORLD
cannot exist: B is then a shm queue on COMM_SELF that nobody feeds, the owner waits out the
whole WAIT in it, and rank 1's timings come after it, by gather.
"""
import faulthandler
import signal
import struct
import time

import numpy as np
from mpi4py import MPI

import rdq

faulthandler.enable()                                     # SIGSEGV, SIGBUS: the Python stack
faulthandler.register(signal.SIGUSR1, all_threads=True)   # the launcher asks for stacks on timeout
comm = MPI.COMM_WORLD
rank = comm.rank
CAP, WAIT = 8, 3.0       # the puts take milliseconds; a starved producer waits the whole WAIT
MSG = np.arange(1024, dtype=np.float32)
a = rdq.Queue(comm, owner=0, capacity=CAP, shape=MSG.shape, dtype=MSG.dtype, producers=[1], transport="rma")
try:
    b = rdq.Queue(comm, owner=0, capacity=1, slot_bytes=16, producers=[1], transport="shm")
    b_world = True
except ValueError as exc:   # raised on every rank alike
    if "needs every rank on the owner's node" not in str(exc):
        raise
    b = rdq.Queue(MPI.COMM_SELF, capacity=1, slot_bytes=16, producers=[0], transport="shm") if rank == 0 else None
    b_world = False
comm.Barrier()
t0 = time.monotonic()
if rank == 1:
    time.sleep(0.2)                                    # the owner is inside b.get() by now
    longest = 0.0
    for i in range(CAP):
        t = time.monotonic()
        a.put(MSG + i)
        longest = max(longest, time.monotonic() - t)
    done = time.monotonic() - t0
    if b_world:
        b.put(struct.pack("<dd", done, longest))       # wakes the owner
    comm.gather((done, longest), root=0)
    a.close()
    if b_world:
        b.close()
else:
    try:
        m = b.get(timeout=WAIT)
        woke = time.monotonic() - t0
        report = struct.unpack("<dd", bytes(m))
        m.release()
    except rdq.Empty:
        woke, report = None, None
        if b_world:
            raise AssertionError(f"S3: rank 1's report did not come while the owner waited {WAIT} s in the shm "
                                 f"queue's get(): its puts into the rma queue were starved") from None
    done, longest = comm.gather(None, root=0)[1]
    print(f"owner: waited in {'a shm queue on COMM_WORLD' if b_world else 'a shm queue on COMM_SELF'}: "
          f"{'woke after %.3f s' % woke if woke is not None else 'the whole %.1f s' % WAIT}; rank 1's {CAP} rma "
          f"puts were done {done:.3f} s after the start, the longest took {longest * 1e3:.1f} ms", flush=True)
    if done > WAIT / 2:
        raise AssertionError(f"S3: rank 1's {CAP} puts into the rma queue took until {done:.2f} s while the owner "
                             f"waited {WAIT} s in a shm queue's get(): starved")
    got = 0
    for m in a:
        with m:
            if not np.array_equal(np.asarray(m), MSG + m.seq):
                raise AssertionError(f"S3: message {m.seq} is wrong")
            got += 1
    if got != CAP:
        raise AssertionError(f"S3: got {got} of {CAP}")
a.free()
if b_world:
    b.free()
elif rank == 0:
    b.free()
if rank == 0:
    print("S3 ok", flush=True)

"""F8 (review r12_nonblocking_blocks.py): put(block=False), put(timeout=0.1) and close() while the
owner computes outside MPI (here: sleeps), on the network path (MPICH: MPIR_CVAR_NOLOCAL=1).

The first protocol's producers used MPI atomics, which MPICH's network path completes only with
the target's help: each of those calls waited inside MPI for as long as the owner computed.
Fixed: no MPI atomic, a put is MPI_Put + MPI_Win_flush, which complete without the owner
(docs/guarantees.md, "Progress").  2 ranks; each call must return well before the owner is back.
"""
import faulthandler
import signal
import time

from mpi4py import MPI

import rdq

faulthandler.enable()                                     # SIGSEGV, SIGBUS: the Python stack
faulthandler.register(signal.SIGUSR1, all_threads=True)   # the launcher asks for stacks on timeout
AWAY = 1.5     # seconds the owner spends outside MPI, three times (the review: 2 s)
BOUND = 0.5    # what each bounded call may take
comm = MPI.COMM_WORLD
q = rdq.Queue(comm, owner=0, capacity=4, slot_bytes=8, producers=[1])
comm.Barrier()
if comm.rank == 0:
    got = []
    time.sleep(AWAY)                          # computing (training) outside MPI
    with q.get() as m:
        got.append(bytes(m))
    time.sleep(AWAY)
    with q.get() as m:
        got.append(bytes(m))
    time.sleep(AWAY)
    try:
        m = q.get(timeout=5)
        raise AssertionError(f"F8: a message {bytes(m)!r} after the producer closed")
    except rdq.Closed:
        print(f"owner: {got}, then end of stream", flush=True)
    if got != [b"a", b"b"]:
        raise AssertionError(f"F8: the owner got {got}")
else:
    took = {}
    t0 = time.monotonic()
    q.put(b"a", block=False)
    took["put(block=False)"] = time.monotonic() - t0
    time.sleep(0.5)
    t0 = time.monotonic()
    q.put(b"b", timeout=0.1)
    took["put(timeout=0.1)"] = time.monotonic() - t0
    time.sleep(0.5)
    t0 = time.monotonic()
    q.close()
    took["close()"] = time.monotonic() - t0
    print(f"[{q.transport}] on an empty ring while the owner is away: " +
          ", ".join(f"{k} returned after {v:.3f} s" for k, v in took.items()), flush=True)
    slow = {k: round(v, 3) for k, v in took.items() if v > BOUND}
    if slow:
        raise AssertionError(f"F8: [{q.transport}] bounded calls waited for the owner, who was away "
                             f"{AWAY} s outside MPI: {slow} (bound {BOUND} s)")
comm.Barrier()
q.free()
if comm.rank == 0:
    print("F8 ok", flush=True)

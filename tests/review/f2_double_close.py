"""F2 (review r11_double_close.py): two threads of one producer rank call close() at once.

The first protocol's close() was check-then-act with the GIL released: both threads could count
it, and the owner saw end of stream while another producer was still sending (its later put
returned True and was never delivered).  Fixed: close() counts once, whichever threads call it
(docs/guarantees.md, "Threads").  3 ranks, producers 1 and 2, TRIES queues (argv[1], default 60).
"""
import faulthandler
import signal
import sys
import threading

from mpi4py import MPI

import rdq

faulthandler.enable()                                     # SIGSEGV, SIGBUS: the Python stack
faulthandler.register(signal.SIGUSR1, all_threads=True)   # the launcher asks for stacks on timeout
comm = MPI.COMM_WORLD
rank = comm.rank
TRIES = int(sys.argv[1]) if len(sys.argv) > 1 else 60
early = lost = duplicated = 0
for i in range(TRIES):
    q = rdq.Queue(comm, owner=0, capacity=4, slot_bytes=8, producers=[1, 2])
    if rank == 1:
        go = threading.Barrier(2)
        errors = []

        def closer():
            try:
                go.wait()
                q.close()
            except BaseException as exc:     # noqa: B036 -- reported below
                errors.append(exc)
        ts = [threading.Thread(target=closer, daemon=True) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            raise AssertionError(f"F2: close() from two threads at once raised {errors[0]!r}")
    comm.Barrier()                       # rank 1 has closed (once or twice)
    if rank == 0:
        try:
            q.get(timeout=0.05)
        except rdq.Empty:
            pass                         # correct: rank 2 has not closed
        except rdq.Closed:
            early += 1                   # end of stream although rank 2 is still open
    comm.Barrier()
    if rank == 2:
        ok = q.put(b"late")              # returns True ...
        q.close()
    comm.Barrier()
    if rank == 0:
        got = 0
        try:
            for m in q:
                got += 1
                m.release()
        except rdq.Closed:
            pass
        lost += (got == 0)               # ... but is never delivered
        duplicated += (got > 1)
    comm.Barrier()
    q.free()
if rank == 0:
    print(f"{TRIES} queues ({q.transport}): end of stream before producer 2 closed: {early}; its put() lost: "
          f"{lost}; delivered twice: {duplicated}", flush=True)
    if early or lost or duplicated:
        raise AssertionError(f"F2: two threads closing one producer counted twice: early end of stream in "
                             f"{early} of {TRIES} queues, the other producer's put lost in {lost}")
    print("F2 ok (double close)", flush=True)

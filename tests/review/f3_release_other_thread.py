"""F3 (review r3_release_other_thread.py): a slot released by another thread of the owner while the
owner waits in get().

The first protocol's rma transport published returned slots only from the owner's own get():
a release from another thread (a training thread, a DLPack deleter) was never seen, so producer
and owner waited for each other until get() timed out.  Fixed: a release from any thread reaches
the producers at once, on both transports (docs/guarantees.md, "Threads").  2 ranks: rank 1
produces N messages into a ring of CAP slots; the owner hands each message to a worker thread
that "uses" it for 50 ms and releases it, while the owner is already waiting in the next get().
"""
import faulthandler
import queue
import signal
import threading
import time

import numpy as np
from mpi4py import MPI

import rdq

faulthandler.enable()                                     # SIGSEGV, SIGBUS: the Python stack
faulthandler.register(signal.SIGUSR1, all_threads=True)   # the launcher asks for stacks on timeout
comm = MPI.COMM_WORLD
rank = comm.Get_rank()
N, CAP, TIMEOUT = 20, 2, 3.0      # normally 20 x 50 ms: any get() that times out is the defect
q = rdq.Queue(comm, owner=0, capacity=CAP, slot_bytes=8, producers=[1])
if rank == 1:
    t0 = time.monotonic()
    for i in range(N):
        q.put(np.int64(i).tobytes())
    q.close()
    print(f"[{q.transport}] producer: {N} puts took {time.monotonic() - t0:.2f} s", flush=True)
else:
    handoff = queue.Queue()
    errors = []

    def worker():                       # e.g. a training thread that consumes what the reader thread got
        try:
            while True:
                m = handoff.get()
                if m is None:
                    return
                time.sleep(0.05)        # "use" the data, then give the slot back
                m.release()
                del m
        except BaseException as exc:    # noqa: B036 -- reported by the main thread
            errors.append(exc)
    th = threading.Thread(target=worker, daemon=True)   # daemon: a failure below must end the job
    th.start()
    got = []
    t0 = time.monotonic()
    while True:
        t1 = time.monotonic()
        try:
            m = q.get(timeout=TIMEOUT)
        except rdq.Empty:
            raise AssertionError(
                f"F3: [{q.transport}] owner: get() waited {time.monotonic() - t1:.1f} s and timed out with "
                f"{len(got)} of {N} delivered and every held slot already released by the worker thread "
                f"(outstanding {q.stats()['outstanding']}): the releases never reached the producer") from None
        except rdq.Closed:
            break
        got.append(int(np.frombuffer(bytes(m), np.int64)[0]))
        handoff.put(m)
        del m
    handoff.put(None)
    th.join()
    if errors:
        raise AssertionError(f"F3: the releasing thread failed: {errors[0]!r}")
    if got != list(range(N)):
        raise AssertionError(f"F3: received {got}, expected 0..{N - 1}")
    print(f"[{q.transport}] owner: received {len(got)}/{N} in {time.monotonic() - t0:.1f} s, "
          f"no get() timed out", flush=True)
comm.Barrier()
q.free()
if rank == 0:
    print("F3 ok", flush=True)

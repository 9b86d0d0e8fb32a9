"""F1 (review r10_two_consumer_threads.py [--gc]): two threads of the owner consume one queue.

The first protocol's get_batch() left the busy section before it advanced its ticket, and its
copy path runs Python code in between (ndarray.ctypes), so the other thread's get() was admitted
and delivered the same tickets again, or skipped some.  Fixed: a get_batch holds the queue until
its messages are taken; a second thread entering get/get_batch meanwhile gets rdq.RDQError
(docs/guarantees.md, "Threads").  2 ranks; with --gc, a third thread litters cyclic garbage
whose finalizers sleep, so the collector runs them inside get_batch().  An integer argument
sets the number of messages (default 4000, the review's).
"""
import faulthandler
import gc
import signal
import sys
import threading
import time

import numpy as np
from mpi4py import MPI

import rdq

faulthandler.enable()                                     # SIGSEGV, SIGBUS: the Python stack
faulthandler.register(signal.SIGUSR1, all_threads=True)   # the launcher asks for stacks on timeout
comm = MPI.COMM_WORLD
rank = comm.rank
N = int(next((a for a in sys.argv[1:] if a.isdigit()), 4000))
CAP = 3                               # k=2 does not divide 3: batches are often copied
q = rdq.Queue(comm, owner=0, capacity=CAP, slot_bytes=16, producers=[1])
if rank == 1:
    for i in range(N):
        q.put(np.array([i, i], np.int64).tobytes())
    q.close()
else:
    sys.setswitchinterval(1e-6)
    seen, lock, stop = [], threading.Lock(), threading.Event()
    refused = [0, 0]
    errors = []

    if "--gc" in sys.argv:
        # Any program with cyclic garbage whose finalizers block briefly (a file flush, a lock):
        # the collector runs them in whichever thread allocates next, here inside get_batch().
        class Junk:
            def __del__(self):
                time.sleep(0.0005)

        def litter():
            while not stop.is_set():
                j = Junk()
                j.me = j
                del j
                time.sleep(0.0002)
        gc.set_threshold(50)

    def record(who, seqs):
        with lock:
            seen.extend((who, int(s)) for s in seqs)

    def guarded(loop):
        def run():
            try:
                loop()
            except BaseException as exc:       # noqa: B036 -- reported by the main thread
                errors.append(exc)
                stop.set()
        return run

    def batcher():
        while not stop.is_set():
            try:
                b = q.get_batch(2, timeout=0.2)
            except rdq.RDQError as e:          # Empty, Closed, "another thread"
                if isinstance(e, rdq.Closed):
                    stop.set()
                elif "another thread" in str(e):
                    refused[0] += 1
                continue
            rows = np.asarray(b)[:, :8].copy().view(np.int64).ravel()
            if list(rows) != list(b.seqs):
                raise AssertionError(f"F1: a batch's rows {list(rows)} are not its seqs {list(b.seqs)}")
            record("batch", b.seqs)
            del rows
            b.release()

    def getter():
        while not stop.is_set():
            try:
                m = q.get(timeout=0.2)
            except rdq.RDQError as e:
                if isinstance(e, rdq.Closed):
                    stop.set()
                elif "another thread" in str(e):
                    refused[1] += 1
                continue
            payload = int(np.frombuffer(bytes(m), np.int64)[0])
            if payload != m.seq:
                raise AssertionError(f"F1: message seq {m.seq} carries {payload}")
            record("get", [m.seq])
            m.release()
    ts = [threading.Thread(target=guarded(batcher), daemon=True),
          threading.Thread(target=guarded(getter), daemon=True)]
    if "--gc" in sys.argv:
        ts.append(threading.Thread(target=guarded(litter), daemon=True))
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise AssertionError(f"F1: a consumer thread failed: {errors[0]!r}") from errors[0]
    seqs = [s for _, s in seen]
    counts = np.bincount(seqs, minlength=N)
    dups = np.flatnonzero(counts > 1).tolist()
    missing = np.flatnonzero(counts == 0).tolist()
    print(f"owner: batch_copies={q.stats()['batch_copies']} gets={q.stats()['gets']}; {len(seqs)} deliveries "
          f"of {N} messages; refused calls {refused}; duplicated seqs: {len(dups)} {dups[:8]}; "
          f"missing: {len(missing)} {missing[:8]}", flush=True)
    if dups or missing or len(seqs) != N:
        raise AssertionError(f"F1: two consumer threads: {len(seqs)} deliveries of {N} messages, "
                             f"{len(dups)} delivered twice (e.g. {dups[:8]}), {len(missing)} never (e.g. {missing[:8]})")
comm.Barrier()
q.free()
if rank == 0:
    print("F1 ok", flush=True)

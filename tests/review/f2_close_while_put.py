"""F2 (review r4_close_while_put.py): close() from a second thread of a producer while its first
thread is inside a put() that waits for a slot.

The first protocol's close() took no busy flag: the owner saw end of stream after the messages
already sent, and the waiting put later returned True for a message that was never delivered.
Fixed: close() from another thread waits for a put in progress, then counts once, so end of
stream never comes before a message whose put had started (docs/guarantees.md, "Threads").
2 ranks: rank 1's putter thread fills its ring (CAP) and waits in put CAP + 1; its main thread
closes meanwhile.  The owner takes CAP messages and holds them, so the waiting put cannot finish
until it releases them.
"""
import faulthandler
import signal
import threading
import time

from mpi4py import MPI

import rdq

faulthandler.enable()                                     # SIGSEGV, SIGBUS: the Python stack
faulthandler.register(signal.SIGUSR1, all_threads=True)   # the launcher asks for stacks on timeout
comm = MPI.COMM_WORLD
rank = comm.Get_rank()
CAP = 2


def check(cond, msg):
    if not cond:
        raise AssertionError(f"F2: rank {rank}: {msg}")


q = rdq.Queue(comm, owner=0, capacity=CAP, slot_bytes=8, producers=[1])
if rank == 1:
    result, errors = {}, []

    def putter():
        try:
            for i in range(CAP + 1):
                result[i] = q.put(b"msg%d" % i)          # the last one waits: the ring is full
        except BaseException as exc:                     # noqa: B036 -- reported below
            errors.append(exc)
    a = threading.Thread(target=putter, daemon=True)
    a.start()
    time.sleep(1.0)                                      # putter is now inside put(), waiting
    t0 = time.monotonic()
    try:
        q.close()                                        # must wait for that put, not cut it off
    except rdq.RDQError as e:
        check(False, f"close() from a second thread was refused ({e}); the docs say it waits for the put")
    print(f"producer: close() from a second thread returned after {time.monotonic() - t0:.2f} s", flush=True)
    a.join(10)
    check(not a.is_alive(), "the put still waits 10 s after close() returned")
    check(not errors, f"the waiting put raised {errors[0]!r} (close() cut it off)" if errors else "")
    check(result == {i: True for i in range(CAP + 1)}, f"put() results {result}")
    print(f"producer: put() results {result}: {sum(result.values())} messages sent", flush=True)
else:
    time.sleep(2.0)
    held = [q.get() for _ in range(CAP)]                 # both slots delivered and still held
    try:
        m = q.get(timeout=1)
        check(False, f"a third message {bytes(m)!r} arrived while the owner held every slot")
    except rdq.Closed:
        check(False, f"end of stream after {len(held)} messages while producer 1's third put was still "
                     f"waiting: close() from another thread cut it off, its message would be lost")
    except (rdq.Empty, ValueError) as e:                # no message can come until the owner releases
        print(f"owner: holding {len(held)}, get(timeout=1): {type(e).__name__} (no early end of stream)", flush=True)
    for m in held:
        m.release()
    del held, m
    m = q.get(timeout=5)                                 # the waiting put completes now
    check((m.source, m.seq, bytes(m)) == (1, CAP, b"msg%d" % CAP), f"got {(m.source, m.seq, bytes(m))}")
    m.release()
    try:
        m = q.get(timeout=5)
        check(False, f"a message {bytes(m)!r} after the last one")
    except rdq.Closed:
        pass
    print(f"owner: {CAP + 1} messages, then end of stream; stats {q.stats()}", flush=True)
comm.Barrier()
q.free()
if rank == 0:
    print("F2 ok (close while put)", flush=True)

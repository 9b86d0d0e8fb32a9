"""S6 (review r8_interrupts.py): Ctrl-C (here SIGALRM, whose handler raises KeyboardInterrupt) around
put() and get().

What rdq guarantees, and what is the caller's:
  - A KeyboardInterrupt raised inside put() or get() (rdq checks for signals while it waits; the
    traceback passes through rdq) sent or took nothing, and leaves no hole: the slot stays usable
    and a retry is exactly once.
  - Python may also run the handler just after put() or get() returned, before the caller sees
    the result (the review saw it: "a naive retry duplicates").  Then the message was sent, or
    taken (and the Message, never bound, dies and gives its slot back: lost to that caller).
    q.stats()["puts"] / ["gets"] say which: they count a message exactly when it was sent or
    taken, so a caller compares them before and after the interrupted call.
Phase 1 is the review's attack (3 ranks: producers 1 and 2 interrupted while they wait on a full
ring, the owner interrupted while it waits in get()), with callers that follow that rule; the
owner checks that every message arrived exactly once and in order, gaps only where its own
interrupted get() dropped a taken message.  Phase 2 makes the late case happen on purpose: a
timer that fires while a 16 MiB put copies (the GIL released), so the KeyboardInterrupt surfaces
after put() returned True; the rule must not resend it.
"""
import faulthandler
import signal
import time
import traceback

import numpy as np
from mpi4py import MPI

import rdq

faulthandler.enable()                                     # SIGSEGV, SIGBUS: the Python stack
faulthandler.register(signal.SIGUSR1, all_threads=True)   # the launcher asks for stacks on timeout
comm = MPI.COMM_WORLD
rank = comm.rank


def boom(*_):
    raise KeyboardInterrupt


signal.signal(signal.SIGALRM, boom)


def alarm(seconds):
    signal.setitimer(signal.ITIMER_REAL, seconds)


def inside_rdq(exc):
    """Whether the exception was raised inside rdq (its traceback passes through rdq's code)."""
    return any(f.filename.endswith((".pxi", ".pyx")) for f in traceback.extract_tb(exc.__traceback__))


def check(cond, msg):
    if not cond:
        raise AssertionError(f"S6: rank {rank}: {msg}")


def put_following_the_rule(q, x, seconds, counts):
    """put(x) under an alarm; on KeyboardInterrupt retry only when stats()["puts"] says nothing went."""
    while True:
        before = q.stats()["puts"]
        alarm(seconds)
        try:
            q.put(x)
            alarm(0)
            return
        except KeyboardInterrupt as e:
            alarm(0)
            sent = q.stats()["puts"] - before
            check(sent in (0, 1), f"stats()['puts'] moved by {sent}")
            if inside_rdq(e):
                check(sent == 0, "a KeyboardInterrupt raised inside put() after it had sent the message")
                counts["inside"] += 1
                continue                       # nothing sent: retry
            if sent:
                counts["after"] += 1           # put() had returned True: a naive retry would duplicate
                return
            counts["before"] += 1              # raised before put() was entered
            continue


# --- phase 1: the review's attack -----------------------------------------------------------
CAP, N = 2, 30
producers = [1, 2] if comm.size > 2 else [1]
q = rdq.Queue(comm, owner=0, capacity=CAP, slot_bytes=16, producers=producers)
if rank != 0:
    counts = {"inside": 0, "after": 0, "before": 0}
    for i in range(N):
        put_following_the_rule(q, np.array([rank, i], np.int64).tobytes(), 0.25, counts)
    q.close()
    print(f"producer {rank}: {N} sent; interrupts inside put (retried) {counts['inside']}, after put returned "
          f"(not retried) {counts['after']}, before put {counts['before']}", flush=True)
else:
    got, nxt, gaps = 0, {}, 0
    interrupted = dropped = 0
    while True:
        before = q.stats()["gets"]
        alarm(0.3)
        try:
            m = q.get()
            alarm(0)
        except KeyboardInterrupt as e:
            alarm(0)
            took = q.stats()["gets"] - before
            check(took in (0, 1), f"stats()['gets'] moved by {took}")
            if inside_rdq(e):
                check(took == 0, "a KeyboardInterrupt raised inside get() after it had taken a message")
            if took:
                dropped += 1                   # get() had returned: that Message was never bound
            else:
                interrupted += 1
            continue
        except rdq.Closed:
            alarm(0)
            break
        src, i = (int(v) for v in np.frombuffer(bytes(m), np.int64))
        check(m.source == src and m.seq == i, f"message {m.source}/{m.seq} carries {src}/{i}")
        check(i >= nxt.get(src, 0), f"producer {src}'s message {i} delivered again (expected {nxt.get(src, 0)})")
        gaps += i - nxt.get(src, 0)
        nxt[src] = i + 1
        got += 1
        time.sleep(0.6 if got % 10 == 0 else 0.0)   # let producers block on the full ring
        m.release()
    check(gaps == dropped, f"{gaps} messages missing, but only {dropped} dropped by interrupted get() calls")
    check(got + dropped == N * len(producers) and nxt == {p: N for p in producers},
          f"received {got} + dropped {dropped} of {N * len(producers)}; last seqs {nxt}")
    print(f"owner: {got} received in order {nxt}, {interrupted} gets interrupted while waiting, {dropped} "
          f"interrupted after get() returned; end of stream reached", flush=True)
comm.Barrier()
q.free()

# --- phase 2: an interrupt that surfaces after put() returned True --------------------------
K, BIG = 4, 16 << 20
q2 = rdq.Queue(comm, owner=0, capacity=K, slot_bytes=BIG, producers=[1])
if rank == 1:
    counts = {"inside": 0, "after": 0, "before": 0}
    payloads = [np.full(BIG, j + 1, np.uint8) for j in range(K)]
    for x in payloads:
        put_following_the_rule(q2, x, 0.0005, counts)   # fires while the 16 MiB copy runs
    q2.close()
    print(f"producer 1: {K} large puts; interrupts after put returned {counts['after']} (a naive retry would "
          f"have sent each again), inside {counts['inside']}, before {counts['before']}", flush=True)
    check(counts["after"] > 0, f"no interrupt surfaced after a put returned in {K} tries ({counts}): this run "
                               f"did not exercise the case")
elif rank == 0:
    seqs = []
    for m in q2:
        with m:
            a = np.asarray(m)
            check(a.size == BIG and a[0] == a[-1] == m.seq + 1, f"large message {m.seq} is wrong")
            seqs.append(m.seq)
            del a
    check(seqs == list(range(K)), f"large messages {seqs}, expected each of 0..{K - 1} once")
comm.Barrier()
q2.free()
if rank == 0:
    print("S6 ok", flush=True)

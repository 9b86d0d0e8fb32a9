"""F9 (review r9_get_all_held.py): get() while the owner's own unreleased messages hold every slot.

The first protocol's get() waited forever there (get_batch(1) was already refused).  Fixed:
get() and get_batch() without a timeout raise ValueError at once, since only the owner's own
releases could let a message in; with a timeout they wait it out (another thread of the owner
may release) and raise rdq.Empty (docs/guarantees.md, "Capacity").
"""
import faulthandler
import signal
import threading
import time

from mpi4py import MPI

import rdq

faulthandler.enable()                                     # SIGSEGV, SIGBUS: the Python stack
faulthandler.register(signal.SIGUSR1, all_threads=True)   # the launcher asks for stacks on timeout
AT_ONCE = 0.5        # seconds: "at once"
WATCHDOG = 3.0       # a get() still waiting after this long would wait forever


def check(cond, msg):
    if not cond:
        raise AssertionError(f"F9: {msg}")


def timed(call):
    """(what call() raised or returned, seconds); a call still running after WATCHDOG s is a hang."""
    result = {}

    def run():
        t0 = time.monotonic()
        try:
            result["value"] = call()
        except BaseException as exc:   # noqa: B036 -- reported below
            result["value"] = exc
        result["seconds"] = time.monotonic() - t0
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(WATCHDOG)
    check(not t.is_alive(), f"still waiting after {WATCHDOG} s with every slot held by the owner's own "
                            f"messages: it would wait forever")
    return result["value"], result["seconds"]


q = rdq.Queue(MPI.COMM_SELF, capacity=2, slot_bytes=8, producers=[0])
q.put(b"a")
q.put(b"b")
held = [q.get(), q.get()]

for what, call in (("get_batch(1)", lambda: q.get_batch(1)), ("get()", q.get),
                   ("get(block=True, timeout=None)", lambda: q.get(block=True, timeout=None)),
                   ("iteration", lambda: next(iter(q)))):
    value, seconds = timed(call)
    check(isinstance(value, ValueError) and "would wait forever" in str(value),
          f"{what} with every slot held returned {value!r}, not ValueError 'would wait forever'")
    check(seconds < AT_ONCE, f"{what} took {seconds:.2f} s to refuse")
    print(f"{what}: ValueError after {seconds * 1e3:.1f} ms: {value}", flush=True)

# The review's own call: with a timeout another thread might release, so it waits that long.
value, seconds = timed(lambda: q.get(timeout=1.0))
check(isinstance(value, (rdq.Empty, ValueError)), f"get(timeout=1) returned {value!r}")
check(seconds < 1.0 + AT_ONCE, f"get(timeout=1) took {seconds:.2f} s")
print(f"get(timeout=1): {type(value).__name__} after {seconds:.2f} s", flush=True)

# ... and a release by another thread while it waits lets the owner's next put through.
releaser = threading.Timer(0.3, held.pop().release)
releaser.start()
value, seconds = timed(lambda: q.put(b"c", timeout=2.0))
releaser.join()
check(value is True, f"put(timeout=2) after another thread released a slot returned {value!r}")
m = q.get(timeout=1.0)
check(bytes(m) == b"c", f"got {bytes(m)!r}")
m.release()
for m in held:
    m.release()
q.close()
check(sum(1 for _ in q) == 0, "messages after close")
q.free()
print("F9 ok", flush=True)

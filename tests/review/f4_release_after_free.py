"""F4 (review r1_release_after_free.py): Message.release() and leaving `with m:` after q.free().

The first protocol's ring_return wrote through r.base == NULL: SIGSEGV.  Fixed: after free()
release() and `with` do nothing, every other call raises rdq.Closed (docs/guarantees.md,
"Lifetimes of views").  Transport: argv[1], else $RDQ_TRANSPORT.
"""
import faulthandler
import signal
import sys

from mpi4py import MPI

import rdq

faulthandler.enable()                                     # SIGSEGV, SIGBUS: the Python stack
faulthandler.register(signal.SIGUSR1, all_threads=True)   # the launcher asks for stacks on timeout


def expect_closed(what, call):
    try:
        call()
    except rdq.Closed:
        return
    except Exception as exc:
        raise AssertionError(f"F4: {what} after free() raised {type(exc).__name__}: {exc}, not rdq.Closed")
    raise AssertionError(f"F4: {what} after free() did not raise rdq.Closed")


q = rdq.Queue(MPI.COMM_SELF, capacity=3, slot_bytes=8, producers=[0],
              transport=sys.argv[1] if len(sys.argv) > 1 else None)
q.put(b"x")
q.put(b"y")
q.put(b"z")
q.close()
m = q.get()
m2 = q.get()
m3 = q.get()                   # neither released nor exported
q.free()                       # allowed: m has no live export
print(f"[{q.transport}] freed; now m.release() and `with m2:`", flush=True)
m.release()                    # the review's crash
with m2:                       # the same through the context manager
    pass
m.release()                    # twice does nothing either
print("survived release() and with-exit after free()", flush=True)
expect_closed("memoryview(m3)", lambda: memoryview(m3))
expect_closed("q.get()", q.get)
expect_closed("q.put()", lambda: q.put(b"z"))
expect_closed("q.close()", q.close)
q.free()                       # a second free does nothing
m3.release()
del m, m2, m3
print("F4 ok", flush=True)

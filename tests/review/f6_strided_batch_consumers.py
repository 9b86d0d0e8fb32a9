"""F6 (review r2b.py): a zero-copy batch of short raw messages is strided (each 4-byte row sits in
its own padded slot), and the first protocol's __getbuffer__ ignored the PEP 3118 request flags,
so consumers that ask for a contiguous buffer (BytesIO.write, hashlib, struct, ...) read the
padding between rows.  Fixed: a strided batch refuses contiguous requests with BufferError
(README, "Zero-copy lifetimes").  The review's consumers, each of which must either refuse or see
exactly the rows, never padding.
"""
import array
import ctypes
import faulthandler
import hashlib
import io
import signal
import struct

import numpy as np
from mpi4py import MPI

import rdq

faulthandler.enable()                                     # SIGSEGV, SIGBUS: the Python stack
faulthandler.register(signal.SIGUSR1, all_threads=True)   # the launcher asks for stacks on timeout
q = rdq.Queue(MPI.COMM_SELF, capacity=4, slot_bytes=8, producers=[0])
for p in (b"AAAA", b"BBBB"):
    q.put(p)
b = q.get_batch(2)
rows = np.asarray(b)
good = rows.tobytes()
print(f"[{q.transport}] rows: {good!r}, strides {rows.strides}, copied {b.copied}", flush=True)
if good != b"AAAABBBB":
    raise AssertionError(f"F6: the batch's rows are {good!r}")
if b.copied or rows.strides[0] <= 4:
    raise AssertionError(f"F6: the batch is not strided (copied={b.copied}, strides {rows.strides}): "
                         f"this script no longer tests what it should")
del rows


def torch_frombuffer(x):
    import torch
    return torch.frombuffer(x, dtype=torch.uint8).numpy().tobytes()


consumers = {
    # name: (call, what it returns when it sees exactly the rows)
    "hashlib.sha256": (lambda: hashlib.sha256(b).digest(), hashlib.sha256(good).digest()),
    "np.frombuffer": (lambda: np.frombuffer(b, np.uint8).tobytes(), good),
    "BytesIO.write": (lambda: (lambda f: (f.write(b), f.getvalue()))(io.BytesIO()), (8, good)),
    "struct.unpack_from('8s')": (lambda: struct.unpack_from("8s", b), (good,)),
    "ctypes (c_char*8).from_buffer": (lambda: bytes((ctypes.c_char * 8).from_buffer(b)), good),
    "bytearray(b)": (lambda: bytes(bytearray(b)), good),
    "b''.join([b])": (lambda: b"".join([b]), good),
    "array.frombytes": (lambda: (lambda a: (a.frombytes(b), a.tobytes())[1])(array.array("B")), good),
    "torch.frombuffer": (lambda: torch_frombuffer(b), good),
}
bad = []
for name, (call, right) in consumers.items():
    try:
        got = call()
    except (BufferError, TypeError, ValueError, RuntimeError) as exc:   # refused: fine
        print(f"{name:30s} refused: {type(exc).__name__}: {str(exc)[:90]}", flush=True)
        continue
    print(f"{name:30s} -> {got!r}", flush=True)
    if got != right:
        bad.append(f"{name} got {got!r}, the rows are {good!r}")
if bad:
    raise AssertionError("F6: consumers read the padding of a strided batch: " + "; ".join(bad))
b.release()
del b
q.close()
q.free()
print("F6 ok", flush=True)

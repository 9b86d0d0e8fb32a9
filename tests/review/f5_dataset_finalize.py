"""F5 (review r5e.py): the rdq.torch.QueueDataset pattern: each tensor pins its slot, the message
is released at once, and the script ends with MPI.Finalize() while the last tensor is still
referenced (the loop variable).  At exit the first protocol returned the slot into a window that
MPI_Finalize had unmapped.  The assertion is the exit code.  2 ranks; needs torch.
"""
import faulthandler
import signal
import sys

import numpy as np
from mpi4py import MPI

import rdq

faulthandler.enable()                                     # SIGSEGV, SIGBUS: the Python stack
faulthandler.register(signal.SIGUSR1, all_threads=True)   # the launcher asks for stacks on timeout
comm = MPI.COMM_WORLD
RANK = comm.rank
q = rdq.Queue(comm, owner=0, capacity=2, shape=(256,), dtype=np.float32, producers=[1])
if RANK == 1:
    q.put(np.ones(256, np.float32))
q.close()
if RANK == 1:
    MPI.Finalize()
    sys.exit(0)
import torch                    # noqa: E402 -- only the owner needs it (a slow import on 2 busy cores)
from rdq.torch import QueueDataset  # noqa: E402
for x in QueueDataset(q):
    loss = float(x.sum())       # the "training step"; x stays bound after the loop
if loss != 256.0 or not isinstance(x, torch.Tensor):
    raise AssertionError(f"F5: trained on {loss}")
print(f"rank {RANK}: trained on {loss} ({q.transport}); MPI.Finalize() with the tensor alive", flush=True)
MPI.Finalize()
print(f"rank {RANK}: interpreter exit (F5 ok unless this rank dies now)", flush=True)
print("F5 ok", flush=True)

"""rdq: zero-copy remote data queues on MPI-3 RMA windows.

Stream tensors from running MPI simulations into training, in situ: queues live
in one-sided windows on any rank of a communicator (no server processes),
received messages are zero-copy views (buffer protocol and DLPack).
"""
from mpi4py import MPI  # noqa: F401  (loads libmpi before the extension that links it)

from rdq import sampling
from rdq._core import Batch, Message, Queue
from rdq.errors import Closed, Empty, Full, MPIError, RDQError
from rdq.group import QueueGroup, Roles

__all__ = ["Queue", "Message", "Batch", "QueueGroup", "Roles", "sampling",
           "RDQError", "Full", "Empty", "Closed", "MPIError", "get_include"]
__version__ = "0.1.0"


def get_include():
    """Directories with rdq's .pxd files and C headers, for building code that does `cimport rdq`."""
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    return [os.path.dirname(here), here]

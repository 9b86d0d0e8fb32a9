"""rdq: zero-copy remote data queues on MPI-3 RMA windows.

Stream tensors from running MPI simulations into training, in situ: queues live
in one-sided windows on any rank of a communicator (no server processes),
received messages are zero-copy views (buffer protocol and DLPack).
"""
from __future__ import annotations

from mpi4py import MPI  # noqa: F401  (loads libmpi before the extension that links it)

try:
    from rdq._core import Batch, Message, Queue, ReplayBuffer
except ImportError as exc:
    if "libmpi" not in str(exc):
        raise
    # pip's cache hands the wheel built for one MPI to an environment with another
    raise ImportError(f"{exc}: rdq was built against another MPI than the one mpi4py loads here. Rebuild "
                      f"it in this environment: pip install --no-cache-dir --force-reinstall --no-deps "
                      f"rdq-mpi") from exc
from rdq import sampling
from rdq.errors import Closed, Empty, Full, MPIError, RDQError
from rdq.group import QueueGroup, Roles

__all__ = ["Queue", "ReplayBuffer", "Message", "Batch", "QueueGroup", "Roles", "sampling",
           "RDQError", "Full", "Empty", "Closed", "MPIError", "get_include"]
__version__ = "0.1.0"


def get_include() -> list[str]:
    """Directories with rdq's .pxd files and C headers, for building code that does `cimport rdq`."""
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    return [os.path.dirname(here), here]

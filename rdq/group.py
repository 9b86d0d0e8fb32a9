"""Many trainers, MPMD roles: the pieces a data-parallel in-situ job is made of.

QueueGroup gives every consumer rank (e.g. each data-parallel trainer) its own
queue, and lets every producer feed all of them.  Roles finds which ranks run
which program of an MPMD launch (``mpiexec -n 60 python sim.py : -n 4 python
train.py``) and gives each program a communicator of its own (for halo
exchange, or torch.distributed among the trainers).
"""
import zlib

from rdq._core import Queue
from rdq.errors import RDQError

__all__ = ["QueueGroup", "Roles"]


def owner_index(key, owners):
    """Which of `owners` queues a key goes to: the same on every rank and run (Python's own
    hash() of a str is salted per process)."""
    if isinstance(key, int):
        return key % owners
    return zlib.crc32(repr(key).encode()) % owners


class QueueGroup:
    """One queue per owner rank, all of them collective over comm.

    ``put(x)`` sends to the owners in turn (each producer starting at its own
    offset, so that producers spread over the owners), or, with ``key=``, to
    ``owners[owner_index(key, len(owners))]`` so that one key always reaches the same
    trainer.  ``close()`` closes this rank's stream into every queue, so every
    owner sees end of stream.  On an owner, ``local`` is its queue, and ``get``,
    ``get_batch`` and iteration read it.  Other arguments are Queue's.
    """

    def __init__(self, comm, owners, capacity=1024, shape=None, dtype=None, *, name="group", **queue_args):
        owners = [int(o) for o in owners]
        if not owners or len(set(owners)) != len(owners):
            raise ValueError(f"rank {comm.Get_rank()}: QueueGroup {name!r}: owners must be distinct ranks, got {owners}")
        self.owners = owners
        self.queues = [Queue(comm, owner=o, capacity=capacity, shape=shape, dtype=dtype,
                             name=f"{name}[{o}]", **queue_args) for o in owners]
        rank = comm.Get_rank()
        self.local = self.queues[owners.index(rank)] if rank in owners else None
        self._turn = rank % len(owners)

    def put(self, x, key=None, block=True, timeout=None):
        if key is None:
            queue = self.queues[self._turn]
            self._turn = (self._turn + 1) % len(self.queues)
        else:
            queue = self.queues[owner_index(key, len(self.queues))]
        return queue.put(x, block=block, timeout=timeout)

    def close(self):
        for queue in self.queues:
            queue.close()

    def _mine(self):
        if self.local is None:
            raise RDQError(f"rank {self.queues[0].rank}: reading QueueGroup: this rank owns none of its "
                           f"queues (owners {self.owners})")
        return self.local

    def get(self, block=True, timeout=None):
        return self._mine().get(block=block, timeout=timeout)

    def get_batch(self, k, block=True, timeout=None):
        return self._mine().get_batch(k, block=block, timeout=timeout)

    def __iter__(self):
        return iter(self._mine())

    def free(self):
        for queue in self.queues:
            queue.free()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:   # as Queue: no collective teardown on the way out of an exception
            self.free()


class Roles:
    """Which ranks of comm run which program, from a name each program gives.

        roles = rdq.Roles(MPI.COMM_WORLD, "train")     # collective: every program calls it
        roles.ranks("sim"), roles.ranks("train")       # world ranks of each program
        roles.comm                                     # this program's own communicator
    """

    def __init__(self, comm, role):
        names = comm.allgather(str(role))
        self.role = str(role)
        self.names = list(dict.fromkeys(names))        # in order of first appearance
        self._ranks = {n: [r for r, m in enumerate(names) if m == n] for n in self.names}
        self.comm = comm.Split(self.names.index(self.role), comm.Get_rank())

    def ranks(self, role):
        if role not in self._ranks:
            raise ValueError(f"no rank runs role {role!r}; roles here: {self.names}")
        return list(self._ranks[role])

    def free(self):
        self.comm.Free()

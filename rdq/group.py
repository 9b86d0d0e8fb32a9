"""Many trainers, MPMD roles: the pieces a data-parallel in-situ job is made of.

QueueGroup gives every consumer rank (e.g. each data-parallel trainer) its own
queue, and lets every producer feed all of them.  Roles finds which ranks run
which program of an MPMD launch (``mpiexec -n 60 python sim.py : -n 4 python
train.py``) and gives each program a communicator of its own (for halo
exchange, or torch.distributed among the trainers).
"""
from __future__ import annotations

import zlib
from typing import Any, Hashable, Iterable, Iterator, List, Optional

from mpi4py import MPI

from rdq._core import Batch, Message, Queue
from rdq.errors import RDQError

__all__ = ["QueueGroup", "Roles"]


def owner_index(key: Hashable, owners: int) -> int:
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
    ``get_batch`` and iteration read it.  ``producers`` defaults to every rank
    that is not an owner.  Other arguments are Queue's.
    """

    def __init__(self, comm: MPI.Intracomm, owners: Iterable[int], capacity: int = 1024, shape: Any = None,
                 dtype: Any = None, *, name: str = "group", **queue_args: Any) -> None:
        owners = [int(o) for o in owners]
        if not owners or len(set(owners)) != len(owners):
            raise ValueError(f"rank {comm.Get_rank()}: QueueGroup {name!r}: owners must be distinct ranks, got {owners}")
        self.owners = owners
        # The owners consume: by default none of them produces into another owner's queue, so
        # each one's stream ends once the other ranks closed.
        queue_args.setdefault("producers", [r for r in range(comm.Get_size()) if r not in owners] or owners)
        self.queues = [Queue(comm, owner=o, capacity=capacity, shape=shape, dtype=dtype,
                             name=f"{name}[{o}]", **queue_args) for o in owners]
        rank = comm.Get_rank()
        self.local = self.queues[owners.index(rank)] if rank in owners else None
        self._turn = rank % len(owners)

    def put(self, x: Any, key: Optional[Hashable] = None, block: bool = True,
            timeout: Optional[float] = None) -> bool:
        if key is None:
            queue = self.queues[self._turn]
            self._turn = (self._turn + 1) % len(self.queues)
        else:
            queue = self.queues[owner_index(key, len(self.queues))]
        return queue.put(x, block=block, timeout=timeout)

    def close(self) -> None:
        for queue in self.queues:
            queue.close()

    def _mine(self) -> Queue:
        if self.local is None:
            raise RDQError(f"rank {self.queues[0].rank}: reading QueueGroup: this rank owns none of its "
                           f"queues (owners {self.owners})")
        return self.local

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Message:
        return self._mine().get(block=block, timeout=timeout)

    def get_batch(self, k: int, block: bool = True, timeout: Optional[float] = None) -> Batch:
        return self._mine().get_batch(k, block=block, timeout=timeout)

    def __iter__(self) -> Iterator[Message]:
        return iter(self._mine())

    def free(self) -> None:
        for queue in self.queues:
            queue.free()

    def __enter__(self) -> QueueGroup:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:   # as Queue: no collective teardown on the way out of an exception
            self.free()


class Roles:
    """Which ranks of comm run which program, from a name each program gives.

        roles = rdq.Roles(MPI.COMM_WORLD, "train")     # collective: every program calls it
        roles.ranks("sim"), roles.ranks("train")       # world ranks of each program
        roles.comm                                     # this program's own communicator
    """

    def __init__(self, comm: MPI.Intracomm, role: str) -> None:
        names = comm.allgather(str(role))
        self.role = str(role)
        self.names = list(dict.fromkeys(names))        # in order of first appearance
        self._ranks = {n: [r for r, m in enumerate(names) if m == n] for n in self.names}
        self.comm = comm.Split(self.names.index(self.role), comm.Get_rank())

    def ranks(self, role: str) -> List[int]:
        if role not in self._ranks:
            raise ValueError(f"no rank runs role {role!r}; roles here: {self.names}")
        return list(self._ranks[role])

    def free(self) -> None:
        self.comm.Free()

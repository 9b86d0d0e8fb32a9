"""PyTorch streaming: IterableDatasets over an rdq queue (zero-copy through DLPack) and over
a replay buffer (sampled batches).

    ds = rdq.torch.QueueDataset(q, batch_size=32)          # on the queue's owner
    for x in torch.utils.data.DataLoader(ds, batch_size=None):   # None: rdq makes the batches
        loss = model(x).sum(); ...                         # x shares memory with the window

Each tensor pins its slots until it dies, so a training loop that keeps no
references frees them by itself.  MPI cannot be used from DataLoader worker
processes (they are forked copies of this rank): num_workers must be 0, and
iterating in a worker raises a clear error.
"""
from __future__ import annotations

import math
import sys
from typing import Iterator, Optional
import warnings

import torch
import torch.utils.data
import torch.utils.dlpack

from rdq._core import Queue, ReplayBuffer
from rdq.errors import Closed, RDQError

__all__ = ["QueueDataset", "ReplayDataset"]


def _refuse_worker(what: str) -> None:
    if torch.utils.data.get_worker_info() is not None:
        raise RDQError(f"{what} iterated in a DataLoader worker process, where MPI cannot be used: "
                       f"use num_workers=0")


class QueueDataset(torch.utils.data.IterableDataset["torch.Tensor"]):
    """Yields the queue's messages (batch_size=None) or batches of batch_size rows as tensors,
    until end of stream."""

    def __init__(self, queue: Queue, batch_size: Optional[int] = None) -> None:
        super().__init__()
        if queue.rank != queue.owner:
            raise RDQError(f"rank {queue.rank}: QueueDataset over queue {queue.name!r}: only its owner, "
                           f"rank {queue.owner}, can read it")
        if batch_size is not None and (not isinstance(batch_size, int) or not 1 <= batch_size <= queue.capacity):
            raise ValueError(f"rank {queue.rank}: QueueDataset over queue {queue.name!r}: batch_size must be "
                             f"None or 1..{queue.capacity} (the capacity), got {batch_size!r}")
        self.queue = queue
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        _refuse_worker(f"QueueDataset over queue {self.queue.name!r}")
        # DataLoader's default batch_size=1 collates: it stacks (copies) every tensor into a new
        # batch with an extra dimension.  Its fetcher, the frame that first runs this generator,
        # says whether it does.
        fetcher = sys._getframe(1).f_locals.get("self")
        if getattr(fetcher, "auto_collation", False):
            warnings.warn(f"QueueDataset over queue {self.queue.name!r} in a DataLoader with batch_size="
                          f"{getattr(fetcher, 'batch_size', '?')}: the DataLoader copies every tensor into a "
                          f"batch of its own. For zero-copy batches use QueueDataset(q, batch_size=k) with "
                          f"DataLoader(ds, batch_size=None)", stacklevel=2)
        while True:
            try:
                view = self.queue.get() if self.batch_size is None else self.queue.get_batch(self.batch_size)
            except Closed:
                return
            tensor = torch.utils.dlpack.from_dlpack(view)
            view.release()   # the slots go back when the tensor dies
            yield tensor


class ReplayDataset(torch.utils.data.IterableDataset["torch.Tensor"]):
    """Yields batches of batch_size rows drawn from a replay buffer (ReplayBuffer.sample), as
    tensors that own their rows.  Use it with DataLoader(ds, batch_size=None).

    Stops after `steps` batches when given.  Otherwise it goes on while the producers put, and
    once every producer has closed it draws `passes` more passes over what is resident
    (ceil(passes x resident / batch_size) batches), then stops.  `yielded` counts the batches
    of the current iteration; `ended_at` is how many had been yielded when it saw every producer
    closed (None before), and `final_batches` how many it draws after that."""

    def __init__(self, buffer: ReplayBuffer, batch_size: int, *, steps: Optional[int] = None,
                 passes: float = 1.0) -> None:
        super().__init__()
        where = f"rank {buffer.rank}: ReplayDataset over {buffer.name!r}"
        if buffer.rank != buffer.owner:
            raise RDQError(f"{where}: only its owner, rank {buffer.owner}, can sample it")
        total = len(buffer.producers) * buffer.capacity
        if not isinstance(batch_size, int) or not 1 <= batch_size <= total:
            raise ValueError(f"{where}: batch_size must be 1..{total} (producers x capacity), got {batch_size!r}")
        if steps is not None and (not isinstance(steps, int) or steps < 0):
            raise ValueError(f"{where}: steps must be None or an integer >= 0, got {steps!r}")
        if not passes >= 0:
            raise ValueError(f"{where}: passes must be a number >= 0, got {passes!r}")
        self.buffer = buffer
        self.batch_size = batch_size
        self.steps = steps
        self.passes = passes
        self.yielded = 0
        self.ended_at: Optional[int] = None
        self.final_batches: Optional[int] = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        _refuse_worker(f"ReplayDataset over {self.buffer.name!r}")
        self.yielded, self.ended_at, self.final_batches = 0, None, None
        while self.steps is None or self.yielded < self.steps:
            if self.ended_at is None and self.steps is None and self.buffer.ended:
                self.ended_at = self.yielded
                self.final_batches = math.ceil(self.passes * self.buffer.resident / self.batch_size)
            if self.ended_at is not None and self.yielded - self.ended_at >= self.final_batches:
                return
            try:
                batch = self.buffer.sample(self.batch_size)
            except Closed:      # every producer closed without putting anything
                return
            yield torch.utils.dlpack.from_dlpack(batch)
            self.yielded += 1

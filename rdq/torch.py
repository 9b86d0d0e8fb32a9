"""PyTorch streaming: an IterableDataset over an rdq queue, zero-copy through DLPack.

    ds = rdq.torch.QueueDataset(q, batch_size=32)          # on the queue's owner
    for x in torch.utils.data.DataLoader(ds, batch_size=None):   # None: rdq makes the batches
        loss = model(x).sum(); ...                         # x shares memory with the window

Each tensor pins its slots until it dies, so a training loop that keeps no
references frees them by itself.  MPI cannot be used from DataLoader worker
processes (they are forked copies of this rank): num_workers must be 0, and
iterating in a worker raises a clear error.
"""
from __future__ import annotations

import sys
from typing import Iterator, Optional
import warnings

import torch
import torch.utils.data
import torch.utils.dlpack

from rdq._core import Queue
from rdq.errors import Closed, RDQError

__all__ = ["QueueDataset"]


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
        if torch.utils.data.get_worker_info() is not None:
            raise RDQError(f"QueueDataset over queue {self.queue.name!r} iterated in a DataLoader worker "
                           f"process, where MPI cannot be used: use num_workers=0")
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

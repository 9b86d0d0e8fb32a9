"""The training side of a two-program rdq job (see sim.py).

The trainer owns the queue and reads it as a PyTorch dataset of zero-copy
batches until every simulation rank has closed its stream.
"""
import torch
from mpi4py import MPI

import rdq
from rdq.torch import QueueDataset

STRIP = 64

roles = rdq.Roles(MPI.COMM_WORLD, "train")
queue = rdq.Queue(MPI.COMM_WORLD, owner=roles.ranks("train")[0], capacity=32, shape=(STRIP,), dtype="float64",
                  producers=roles.ranks("sim"), name="fields")

torch.set_num_threads(1)
model = torch.nn.Linear(STRIP, STRIP, dtype=torch.float64)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
samples = 0
for batch in torch.utils.data.DataLoader(QueueDataset(queue, batch_size=8), batch_size=None):
    loss = torch.nn.functional.mse_loss(model(batch), batch)   # a toy autoencoder of the fields
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    samples += len(batch)
del batch

print(f"trainer: received {samples} fields from ranks {roles.ranks('sim')}, last loss {loss.item():.4f}", flush=True)
queue.free()
roles.free()

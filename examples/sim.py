"""The simulation side of a two-program rdq job (see train.py):

    mpiexec -n 2 python examples/sim.py : -n 1 python examples/train.py

Each simulation rank advances its strip of a 1-D heat equation, exchanging halo
cells with its neighbours over the simulation's own communicator, and streams
its strip to the trainer every few steps, sampling half of them.
"""
import numpy as np
from mpi4py import MPI

import rdq

STRIP, STEPS, EVERY = 64, 400, 4

roles = rdq.Roles(MPI.COMM_WORLD, "sim")
sim = roles.comm
queue = rdq.Queue(MPI.COMM_WORLD, owner=roles.ranks("train")[0], capacity=32, shape=(STRIP,), dtype="float64",
                  producers=roles.ranks("sim"), sample=rdq.sampling.Bernoulli(0.5, seed=1), name="fields")

rng = np.random.default_rng(sim.rank)
u = np.zeros(STRIP + 2)                       # one halo cell at each end
u[1:-1] = rng.random(STRIP)
left, right = (sim.rank - 1) % sim.size, (sim.rank + 1) % sim.size
for step in range(STEPS):
    sim.Sendrecv(u[1:2], dest=left, recvbuf=u[-1:], source=right)     # periodic halo exchange
    sim.Sendrecv(u[-2:-1], dest=right, recvbuf=u[:1], source=left)
    u[1:-1] += 0.2 * (u[:-2] - 2 * u[1:-1] + u[2:])
    if step % EVERY == 0:
        queue.put(u[1:-1])                    # contiguous view of the interior: one copy into the window
queue.close()

stats = queue.stats()
print(f"sim rank {sim.rank}: sent {stats['puts']}, sampled out {stats['sampled_out']}", flush=True)
queue.free()
roles.free()

"""The simulation side, compiled: heat.run's time loop puts from nogil code.

    .venv/bin/python examples/cython/setup.py build_ext --inplace
    .venv/bin/mpiexec -n 2 .venv/bin/python examples/cython/simulate.py : -n 1 .venv/bin/python examples/train.py
"""
import numpy as np
from mpi4py import MPI

import heat
import rdq

STRIP, STEPS, EVERY = 64, 400, 4      # as examples/sim.py, so examples/train.py reads it

roles = rdq.Roles(MPI.COMM_WORLD, "sim")
queue = rdq.Queue(MPI.COMM_WORLD, owner=roles.ranks("train")[0], capacity=32, shape=(STRIP,), dtype="float64",
                  producers=roles.ranks("sim"), name="fields")
u = np.zeros(STRIP + 2)
u[1:-1] = np.random.default_rng(roles.comm.rank).random(STRIP)
heat.run(queue, roles.comm, u, STEPS, EVERY)
print(f"sim rank {roles.comm.rank}: sent {queue.stats()['puts']}, sampled out 0", flush=True)
queue.free()
roles.free()

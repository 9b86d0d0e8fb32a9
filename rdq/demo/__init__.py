"""In-situ training demo: heat-equation simulations stream samples through an rdq queue
into a PyTorch trainer that learns a surrogate of the solver while the simulations run.

    mpiexec -n 3 python -m rdq.demo [--help]

The last rank trains; every other rank simulates, putting into an rdq.Queue (--buffer
fifo, the default) or an rdq.ReplayBuffer (--buffer reservoir or window).  Modules: `heat`
(the simulation, numpy only), `surrogate` (the CNN, its training loop and validation),
`report` (the printed report and the PNG), `__main__` (the MPI program).
"""

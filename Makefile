# The README's two commands. Each sets up what it needs (MPI comes from PyPI).
.PHONY: demo test bench bench-remote

demo:
	ci/make-env.sh mpich .
	.venv/bin/mpiexec -n 3 .venv/bin/python -m rdq.demo

test:
	ci/mpich.sh
	ci/openmpi.sh

# The benchmark suite (bench/run.py): rdq on MPICH and Open MPI next to its peers; about 30 min on 2 cores.
bench:
	ci/make-env.sh mpich .
	ci/openmpi-tree.sh
	.venv/bin/python bench/run.py --full --second-mpi .ci-work/openmpi --update bench/RESULTS.md

# The remote path alone (rdq, the copy limit and Send/Recv, shm and both network paths); about 25 min.
bench-remote:
	ci/make-env.sh mpich .
	ci/openmpi-tree.sh
	.venv/bin/python bench/run.py --full --repeats 3 --second-mpi .ci-work/openmpi \
		--only rdq rdq-cython-batch sendrecv copy --out bench/results-remote

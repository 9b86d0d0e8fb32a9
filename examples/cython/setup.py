"""Build the compiled simulation kernel next to this file:

    .venv/bin/python examples/cython/setup.py build_ext --inplace

Compiled with the environment's MPI compiler wrapper (mpi.h), against rdq's .pxd files.
"""
import os
import sys
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

import rdq

os.chdir(Path(__file__).resolve().parent)
mpicc = Path(sys.prefix, "bin", "mpicc")
if mpicc.exists():
    os.environ.setdefault("CC", str(mpicc))

setup(name="rdq-example-heat",
      ext_modules=cythonize([Extension("heat", ["heat.pyx"], include_dirs=rdq.get_include())],
                            include_path=rdq.get_include()))

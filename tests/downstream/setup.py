"""A downstream Cython extension that does `cimport rdq`, built by the tests at test time.

    CC=mpicc python setup.py build_ext --inplace

The MPI compiler wrapper supplies mpi.h (rdq's declarations cimport mpi4py's libmpi).
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

import rdq

setup(name="rdq-downstream", script_args=None,
      ext_modules=cythonize([Extension("rdq_downstream", ["rdq_downstream.pyx"], include_dirs=rdq.get_include())],
                            include_path=rdq.get_include(), language_level=3))

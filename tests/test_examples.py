"""The two-program (MPMD) example under examples/ runs as documented."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

from mpirun import launch, mpiexec_command

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_two_programs(sim):
    cmd = (mpiexec_command(2) + [sys.executable, "-m", "mpi4py", str(sim),
                                 ":", "-n", "1", sys.executable, "-m", "mpi4py", str(EXAMPLES / "train.py")])
    out, failure = launch(cmd, timeout=120)
    assert failure is None, f"{failure}\n{out[-4000:]}"
    received = [int(n) for n in re.findall(r"trainer: received (\d+)", out)]
    sent = [int(n) for n in re.findall(r"sim rank \d+: sent (\d+)", out)]   # ranks' lines may interleave
    assert len(received) == 1 and len(sent) == 2 and received[0] == sum(sent) > 0, out


def test_two_program_example():
    run_two_programs(EXAMPLES / "sim.py")


def test_compiled_simulation_example(tmp_path):
    """examples/cython builds with its one command and streams from its nogil time loop."""
    shutil.copytree(EXAMPLES / "cython", tmp_path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("build", "*.so", "*.c"))
    proc = subprocess.run([sys.executable, str(tmp_path / "setup.py"), "build_ext", "--inplace"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_two_programs(tmp_path / "simulate.py")

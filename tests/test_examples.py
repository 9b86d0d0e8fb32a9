"""The two-program (MPMD) example under examples/ runs as documented."""
import re
import sys
from pathlib import Path

from mpirun import launch, mpiexec_command

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_two_program_example():
    cmd = (mpiexec_command(2) + [sys.executable, "-m", "mpi4py", str(EXAMPLES / "sim.py"),
                                 ":", "-n", "1", sys.executable, "-m", "mpi4py", str(EXAMPLES / "train.py")])
    out, failure = launch(cmd, timeout=120)
    assert failure is None, f"{failure}\n{out[-4000:]}"
    received = [int(n) for n in re.findall(r"trainer: received (\d+)", out)]
    sent = [int(n) for n in re.findall(r"sim rank \d+: sent (\d+)", out)]   # ranks' lines may interleave
    assert len(received) == 1 and len(sent) == 2 and received[0] == sum(sent) > 0, out

"""Launch multi-rank scenarios under mpiexec with a hard timeout.

A scenario that hangs is killed with its whole process group, and the test
fails showing what every rank said last (see scenarios.say) and its output.
"""
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from mpi4py import MPI

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios.py"
IS_OPEN_MPI = MPI.Get_library_version().startswith("Open MPI")


def is_open_mpi(python=sys.executable):
    """Whether `python` runs Open MPI: this interpreter's MPI library says; for another one
    (bench/run.py drives a second MPI's environment), Open MPI's ompi_info beside it."""
    return IS_OPEN_MPI if python == sys.executable else Path(python).with_name("ompi_info").exists()


def mpiexec_command(n, python=sys.executable):
    """mpiexec of `python`'s environment (the one beside it, else the PATH's) for n ranks."""
    exe = Path(python).with_name("mpiexec")
    exe = str(exe) if exe.exists() else shutil.which("mpiexec")
    cmd = [exe, "-n", str(n)]
    if is_open_mpi(python):
        cmd.insert(1, "--oversubscribe")   # tests use more ranks than this machine has cores
    return cmd


def mpi_env(extra=None, python=sys.executable):
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if python == sys.executable:   # this tree's rdq; another environment imports its own
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    if is_open_mpi(python):
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        env.setdefault("OMPI_MCA_osc", "^ucx")            # no UCX hardware here: quiet its warnings
        env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
        # Open MPI 5's launcher (PRRTE) reads its own variable: what --oversubscribe does, for
        # command lines that the docs show without it (tests/test_docs.py)
        env.setdefault("PRTE_MCA_rmaps_default_mapping_policy", ":oversubscribe")
    env.update(extra or {})
    return env


class ScenarioFailed(AssertionError):
    pass


def mpi_segments():
    """The MPI libraries' shared-memory segments in /dev/shm (MPICH, Open MPI)."""
    try:
        return {name for name in os.listdir("/dev/shm") if name.startswith(("mpich_shm_", "sm_segment."))}
    except OSError:
        return set()


def launch(cmd, timeout, env=None, python=sys.executable, cwd=None):
    """Run a command line (mpiexec ...) of `python`'s environment in a process group of its own.

    Returns (output, None) on success, or (output, what went wrong).  On
    timeout every process of the group is asked for its Python stack (SIGUSR1,
    for those that registered faulthandler), then the whole group is killed.
    A job that aborted or was killed cannot remove its shared-memory segments:
    the ones that appeared while it ran are removed (jobs run one at a time).
    """
    before = mpi_segments()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=mpi_env(env, python), start_new_session=True, cwd=cwd)
    try:
        out, _ = proc.communicate(timeout=timeout)
        verdict = None if proc.returncode == 0 else f"exit code {proc.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGUSR1)
        try:
            out, _ = proc.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        verdict = f"TIMEOUT after {timeout} s (process group killed)"
    if verdict is not None:
        for name in mpi_segments() - before:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join("/dev/shm", name))
    return out, verdict


def run_scenario(name, n, *args, timeout=90, env=None, script=SCENARIOS):
    """Run `script name args...` (scenarios.py, replay_scenarios.py) on n ranks; raise ScenarioFailed
    with every rank's last words."""
    with tempfile.TemporaryDirectory(prefix="rdq-scenario-") as logdir:
        # `python -m mpi4py` aborts the whole job when any rank raises, instead of leaving the others hanging
        cmd = mpiexec_command(n) + [sys.executable, "-m", "mpi4py", str(script), name, *map(str, args)]
        out, verdict = launch(cmd, timeout, {**(env or {}), "RDQ_TEST_LOGDIR": logdir})
        if verdict is None:
            return out
        last_words = []
        for rank in range(n):
            path = Path(logdir) / f"rank{rank}.txt"
            said = path.read_text() if path.exists() else "(nothing)"
            last_words.append(f"  rank {rank}: {said.strip()}")
        raise ScenarioFailed(f"{' '.join(cmd[-2 - len(args):])} on {n} ranks: {verdict}\n"
                             f"last words:\n" + "\n".join(last_words) +
                             f"\noutput (last 6000 chars):\n{out[-6000:]}")

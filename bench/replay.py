"""rdq.ReplayBuffer's speed: its inserts against the FIFO queue's put, sample(k) against the one-copy limit.

    python bench/replay.py [--quick] [--second-mpi .ci-work/openmpi] [--paths shm network ...] [--out DIR]
    python bench/replay.py --redraw [--out DIR]      # measure nothing: the tables again from OUT/replay.json

Launches one `mpiexec -n 2` job per path (this file with --job, under a hard timeout; a job that hangs
is killed with its process group and reported), and writes OUT/replay.json and OUT/replay.md (OUT:
--out, default bench/results).  bench/run.py runs the same (--replay, on by default with --full)
and puts the tables into its report.  Rank 0 produces; rank 1 owns the buffer and the queue.

insert  ReplayBuffer.put with policy="window" (every put writes a slot) against Queue.put: same
        message size, same capacity (32 MiB / size, clamped to 4..1024, as bench/stream.py), same
        path, both from a Python loop, timed on the producer.  The queue's owner drains with
        get_batch(32).release() as fast as it can, so the FIFO is not held back by its consumer
        (the record counts the puts that found its ring full); the replay buffer's owner waits in
        a barrier that sleeps (owner idle), or calls sample(32) over and over (owner sampling, as
        a trainer does).  One trial of each per round, the order rotating, the same message
        count in all (calibrated to about --seconds of FIFO puts); medians over rounds.
sample  the owner's sample(k) of a full buffer (its producer has closed) of --buffer-mib MiB,
        against the one-copy limit measured in the same process: numpy.take of k random rows of
        an array of the buffer's size into a fresh array, the indices drawn beforehand; and, for
        reference, the same gather with the indices drawn in the loop (rng.choice(n, k,
        replace=False)), a numpy replay buffer written by hand; and sample(1), what a call costs
        beyond its rows.  The four take turns call by call (so that load on the machine hits all
        alike); seconds per call: the median of all calls, and the spread of the ratio over
        --blocks runs of consecutive calls.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KiB, MiB = 1 << 10, 1 << 20
PRODUCER, OWNER = 0, 1
BATCH = 32                 # the FIFO owner's get_batch size, as bench/systems.py's batch get
RING_BYTES = 32 * MiB      # bench/stream.py's working set: capacity = clamp(RING_BYTES / size, 4, 1024)
INSERT_GOAL, SAMPLE_GOAL = 0.9, 0.5

PROFILES = {
    # insert: message sizes, seconds of FIFO puts per trial, rounds; sample: row sizes, k, buffer
    # size, parts of the run of calls (for the spread) and the seconds of one part; the hard
    # limit of one path's job
    "full": dict(sizes=[64, 4 * KiB, 256 * KiB, MiB], seconds=0.01, repeats=61, rows=[4 * KiB, 256 * KiB],
                 k=32, buffer_mib=64, blocks=9, block_seconds=0.1, job_timeout=300),
    "quick": dict(sizes=[64, 4 * KiB], seconds=0.02, repeats=1, rows=[4 * KiB], k=32, buffer_mib=2,
                  blocks=2, block_seconds=0.01, job_timeout=60),
}


def ring_depth(size):
    return max(4, min(1024, RING_BYTES // size))


def size_label(size):
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


# --- the paths -----------------------------------------------------------------------------------

def paths_of(primary, second, open_mpi):
    """name -> (label, python, environment) of every path this run can measure."""
    def mpi(is_open):
        return "Open MPI" if is_open else "MPICH"

    def network(is_open):
        if is_open:   # no NOLOCAL in Open MPI: rdq's rma transport, osc/rdma over the TCP BTL
            return {"RDQ_TRANSPORT": "rma", "OMPI_MCA_osc": "rdma", "OMPI_MCA_btl": "self,tcp"}
        return {"RDQ_TRANSPORT": "rma", "MPIR_CVAR_NOLOCAL": "1"}

    p_open = open_mpi(primary)
    found = {"shm": (f"shm ({mpi(p_open)})", primary, {}),
             "network": (f"network path ({mpi(p_open)})", primary, network(p_open))}
    if second:
        s_open = open_mpi(second)
        found["second-network"] = (f"network path ({mpi(s_open)})", second, network(s_open))
        found["second-shm"] = (f"shm ({mpi(s_open)})", second, {})
    return found


DEFAULT_PATHS = ("shm", "network", "second-network")


def measure(cfg, primary, second, work, paths=None, say=print):
    """Run each path's job (default: shm and the network path, on each MPI given); returns
    {"config", "paths": [{name, label, env, records, problems}]}: a path that failed or could not
    run has no records and says why in problems."""
    sys.path.insert(0, str(ROOT / "tests"))
    from mpirun import is_open_mpi, launch, mpiexec_command   # the tests' launcher: hard timeout, group kill

    known = paths_of(primary, second, is_open_mpi)
    wanted = list(paths or [p for p in DEFAULT_PATHS if second or not p.startswith("second")])
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    out = []
    for name in wanted:
        if name not in known:
            out.append({"name": name, "label": name, "env": {}, "records": [],
                        "problems": ["not run: no second MPI environment (--second-mpi)" if name.startswith("second")
                                     else f"unknown path {name!r}"]})
            say(f"replay, {name}: {out[-1]['problems'][0]}")
            continue
        label, python, env = known[name]
        result = {"name": name, "label": label, "env": env, "records": [], "problems": []}
        out.append(result)
        json_out, log = work / f"replay-{name}.json", work / f"replay-{name}.log"
        json_out.unlink(missing_ok=True)
        cmd = mpiexec_command(2, python) + [
            python, "-m", "mpi4py", str(HERE / "replay.py"), "--job", "--measures", "insert", "sample",
            "--sizes", *map(str, cfg["sizes"]), "--seconds", str(cfg["seconds"]), "--repeats", str(cfg["repeats"]),
            "--rows", *map(str, cfg["rows"]), "--k", str(cfg["k"]), "--buffer-mib", str(cfg["buffer_mib"]),
            "--blocks", str(cfg["blocks"]), "--block-seconds", str(cfg["block_seconds"]), "--json", str(json_out)]
        started = time.monotonic()
        output, failure = launch(cmd, cfg["job_timeout"], dict(env, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"),
                                 python)
        log.write_text(f"{' '.join(cmd)}\n{json.dumps(env)}\n{output}")
        if failure:
            lines = [line for line in output.splitlines() if "rror" in line] or output.strip().splitlines() or ["no output"]
            result["problems"].append(f"{failure}: {lines[-1].strip()} (output in {log})")
            say(f"replay, {label}: {result['problems'][-1]}")
            continue
        result["records"] = json.loads(json_out.read_text())
        say(f"replay, {label}: {time.monotonic() - started:.1f} s")
    return {"config": cfg, "paths": out}


# --- the jobs (under mpiexec) -----------------------------------------------------------------------

def sleep_barrier(comm):
    """A barrier that sleeps while it waits (MPICH's Barrier spins, and a spinning idle rank slows
    the working one on a 2-core machine)."""
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(1e-3)


def insert_records(comm, args):
    import numpy as np

    import rdq
    rank = comm.rank
    records = []
    for size in args.sizes:
        depth = ring_depth(size)
        common = dict(owner=OWNER, capacity=depth, shape=(size,), dtype="uint8", producers=[PRODUCER])
        fifo = rdq.Queue(comm, name=f"bench-fifo-{size}", **common)
        replay = rdq.ReplayBuffer(comm, policy="window", seed=1, name=f"bench-replay-{size}", **common)
        message = np.full(size, 1 + rank, np.uint8)
        drain = min(BATCH, max(1, depth // 4))   # a quarter ring at most: the producer fills one part meanwhile
        draw, samples = min(BATCH, depth), [0]    # the sampling owner's sample(k)

        def trial(kind, n):
            """Seconds of n puts on the producer, on every rank."""
            comm.Barrier()
            dt = None
            if rank == PRODUCER:
                put = (fifo if kind == "fifo" else replay).put
                t0 = time.perf_counter()
                for _ in range(n):
                    put(message)
                dt = time.perf_counter() - t0
            elif kind == "fifo":
                left = n
                while left:
                    k = min(drain, left)
                    fifo.get_batch(k).release()
                    left -= k
            if kind == "sampled" and rank == OWNER:   # sample until the producer is done
                done = comm.Ibarrier()
                while not done.Test():
                    replay.sample(draw)
                    samples[0] += 1
            else:
                sleep_barrier(comm)
            return comm.bcast(dt, root=PRODUCER)

        most = max(2 * depth, (1 << 30) // size)
        n = 16
        while (dt := trial("fifo", n)) < args.seconds / 10 and n < most:
            n = min(most, n * 4)
        n = max(2 * depth, min(most, round(n * args.seconds / dt)))
        trial("replay", n)   # warm-up: every slot written once (the FIFO's ring was by the calibration)
        if rank == PRODUCER:
            waits = fifo.stats()["full_waits"]
        kinds = ("fifo", "replay", "sampled")
        rates = {kind: [] for kind in kinds}
        for r in range(args.repeats):
            for kind in kinds[r % 3:] + kinds[:r % 3]:   # the order rotating
                rates[kind].append(n / trial(kind, n))
        samples = comm.bcast(samples[0], root=OWNER)
        redrawn = comm.bcast(replay.stats()["redrawn"] if rank == OWNER else None, root=OWNER)
        if rank == PRODUCER:
            fifo_stats, replay_stats = fifo.stats(), replay.stats()
            fifo.close()
            replay.close()
            med = {kind: statistics.median(v) for kind, v in rates.items()}
            records.append({
                "measure": "insert", "size": size, "capacity": depth, "puts_per_trial": n,
                "transport": replay.transport, "fifo_transport": fifo.transport,
                **{f"{kind}_runs_msg_per_s": v for kind, v in rates.items()},
                **{f"{kind}_msg_per_s": v for kind, v in med.items()},
                "ratio": med["replay"] / med["fifo"], "sampled_ratio": med["sampled"] / med["fifo"],
                "round_ratios": [a / b for a, b in zip(rates["replay"], rates["fifo"])],
                "sampled_round_ratios": [a / b for a, b in zip(rates["sampled"], rates["fifo"])],
                # the owner's sample(k) calls during the sampled trials, and rows it drew again (torn)
                "owner_samples": samples, "owner_sample_k": draw, "owner_redrawn": redrawn,
                # MPI calls per put on the rma transport (0 on shm), over the whole job
                **{f"{name}_{call}_per_put": st[f"mpi_{call}"] / st["puts"] if st["puts"] else 0.0
                   for name, st in (("fifo", fifo_stats), ("replay", replay_stats)) for call in ("puts", "flushes")},
                # puts that found the FIFO's ring full in the timed rounds: the consumer held it back
                "fifo_full_waits": fifo_stats["full_waits"] - waits,
                "replay_inserted": replay_stats["inserted"], "replay_skipped": replay_stats["skipped"]})
        fifo.free()
        replay.free()
    return records


def sample_records(comm, args):
    import numpy as np

    import rdq
    rank = comm.rank
    records = []
    k = args.k
    for row in args.rows:
        capacity = max(k, args.buffer_mib * MiB // row)
        rb = rdq.ReplayBuffer(comm, owner=OWNER, capacity=capacity, shape=(row,), dtype="uint8", policy="window",
                              producers=[PRODUCER], seed=1, name=f"bench-sample-{row}")
        if rank == PRODUCER:
            message = np.ones(row, np.uint8)
            stamp = message[:8].view(np.int64)
            for i in range(capacity):
                stamp[0] = i
                rb.put(message)
            rb.close()
            sleep_barrier(comm)
        else:
            while not rb.ended:
                time.sleep(1e-3)
            assert rb.resident == capacity, (rb.resident, capacity)
            src = np.ones((capacity, row), np.uint8)   # ones, not empty: every page touched before timing
            rng = np.random.default_rng(2)
            choice, take = rng.choice, np.take

            sample = rb.sample
            picks = iter(choice(capacity, k, replace=False) for _ in range(1 << 62))

            def by_rdq():
                t0 = time.perf_counter()
                sample(k)
                return time.perf_counter() - t0

            def one_row():   # sample(1): what a call costs beyond its rows
                t0 = time.perf_counter()
                sample(1)
                return time.perf_counter() - t0

            def limit():
                idx = next(picks)
                t0 = time.perf_counter()
                take(src, idx, axis=0)
                return time.perf_counter() - t0

            def by_hand():
                t0 = time.perf_counter()
                take(src, choice(capacity, k, replace=False), axis=0)
                return time.perf_counter() - t0

            methods = {"sample": by_rdq, "limit": limit, "by_hand": by_hand, "sample1": one_row}
            warm = [min(f() for _ in range(5)) for f in methods.values()]
            calls = max(3 * args.blocks, round(args.blocks * args.block_seconds / sum(warm)))
            times = {name: [] for name in methods}
            for i in range(calls):   # call by call, the order rotating: load on the machine hits all alike
                names = list(methods)[i % len(methods):] + list(methods)[:i % len(methods)]
                for name in names:
                    times[name].append(methods[name]())
            # the median per call; its spread: the medians of --blocks runs of consecutive calls
            chunks = {name: [statistics.median(v[j * calls // args.blocks:(j + 1) * calls // args.blocks])
                             for j in range(args.blocks)] for name, v in times.items()}
            med = {name: statistics.median(v) for name, v in times.items()}
            nbytes = k * row
            stats = rb.stats()
            records.append({
                "measure": "sample", "row": row, "k": k, "capacity": capacity, "buffer_bytes": capacity * row,
                "transport": rb.transport, "calls": calls,
                **{f"{name}_s": v for name, v in med.items()},
                **{f"{name}_GB_per_s": nbytes / v / 1e9 for name, v in med.items()},
                **{f"{name}_p90_s": float(np.percentile(v, 90)) for name, v in times.items()},
                "ratio": med["limit"] / med["sample"],
                "round_ratios": [a / b for a, b in zip(chunks["limit"], chunks["sample"])],
                "redrawn": stats["redrawn"]})
            sleep_barrier(comm)
        rb.free()
    return records


def job(args):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    if comm.size != 2:
        raise SystemExit("run on exactly 2 ranks (rank 0 produces, rank 1 owns)")
    records = []
    if "insert" in args.measures:
        records += insert_records(comm, args)
    if "sample" in args.measures:
        records += sample_records(comm, args)
    records = comm.gather(records, root=0)
    if comm.rank == 0:
        import rdq
        merged = [r for part in records for r in part]
        mpi = MPI.Get_library_version().splitlines()[0].strip("\0").strip()
        for r in merged:
            r.update(mpi=mpi, rdq=str(Path(rdq.__file__).parent))   # which tree's build ran
        Path(args.json).write_text(json.dumps(merged, indent=1))


# --- tables ----------------------------------------------------------------------------------------

def si(x):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def spread(ratios):
    return f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else f"{ratios[0]:.2f}"


def checks(results):
    """(path label, what, measured ratio, goal, met) for every target this run measured."""
    found = []
    for p in results["paths"]:
        for r in p["records"]:
            if r["measure"] == "insert":
                for key, owner in (("ratio", "idle"), ("sampled_ratio", "sampling")):
                    found.append((p["label"], f"insert {size_label(r['size'])}, owner {owner}", r[key], INSERT_GOAL,
                                  r[key] >= INSERT_GOAL))
            else:
                found.append((p["label"], f"sample({r['k']}) of {size_label(r['row'])} rows", r["ratio"],
                              SAMPLE_GOAL, r["ratio"] >= SAMPLE_GOAL))
    return found


def verdict(ok):
    return "met" if ok else "**short**"


def flushes(r):
    if r["transport"] == "shm" or "fifo_flushes_per_put" not in r:
        return "—"
    return f"{r['fifo_flushes_per_put']:.2g} / {r['replay_flushes_per_put']:.2g}"


def tables(results, heading="###"):
    """Markdown lines: the insert table, the sample table, what did not run."""
    cfg = results["config"]
    lines = [f"{heading} Replay buffer inserts against the FIFO queue's put", "",
             "`ReplayBuffer.put` (policy=\"window\": every put writes) and `Queue.put`, both from a Python loop on "
             "the producer, same size, capacity and path; the queue's owner drains with `get_batch(32)`, the "
             "replay buffer's owner waits in a sleeping barrier (*owner idle*) or calls `sample(32)` over and "
             "over (*owner sampling*; `sample(capacity)` when that is smaller). "
             f"Puts/s, the median of {cfg['repeats']} rounds (one trial of each per round, ~{cfg['seconds']:g} s, "
             "the order rotating); in brackets the range of the per-round ratios. FIFO full: puts that found the "
             "queue's ring full (0: its consumer never held it back); MPI flushes per put: on the rma transport, "
             "over the whole job (the FIFO's more than 2 when it waited for free slots).", "",
             "| path | size | FIFO `Queue.put` | `ReplayBuffer.put`, owner idle | / FIFO | owner sampling | / FIFO "
             "| FIFO full | MPI flushes per put, FIFO / replay | target >= 0.9x (idle / sampling) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for p in results["paths"]:
        for r in p["records"]:
            if r["measure"] == "insert":
                lines.append(f"| {p['label']} | {size_label(r['size'])} | {si(r['fifo_msg_per_s'])}/s "
                             f"| {si(r['replay_msg_per_s'])}/s | {r['ratio']:.2f}x ({spread(r['round_ratios'])}) "
                             f"| {si(r['sampled_msg_per_s'])}/s "
                             f"| {r['sampled_ratio']:.2f}x ({spread(r['sampled_round_ratios'])}) "
                             f"| {r['fifo_full_waits']} | {flushes(r)} | {verdict(r['ratio'] >= INSERT_GOAL)} / "
                             f"{verdict(r['sampled_ratio'] >= INSERT_GOAL)} |")
    lines += ["", f"{heading} Replay buffer sample(k) against the one-copy limit", "",
              "The owner's `sample(k)` of a full buffer (window policy, its producer closed) against the one-copy "
              "limit in the same process: `numpy.take` of k random rows of an array of the buffer's size into a "
              "fresh array (indices drawn beforehand). *numpy by hand*: the same with "
              "`rng.choice(n, k, replace=False)` in the loop. *sample(1)*: what a call costs beyond its rows. The "
              "four take turns call by call. Microseconds per "
              "call (GB/s of rows gathered), the median of all calls; ratio = limit time / sample time, in brackets "
              f"its range over {cfg['blocks']} runs of consecutive calls.",
              "", "| path | rows | buffer | one-copy limit | numpy by hand | `sample(k)` | `sample(1)` | sample / limit "
              "| target >= 0.5x |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for p in results["paths"]:
        for r in p["records"]:
            if r["measure"] == "sample":
                ok = verdict(r["ratio"] >= SAMPLE_GOAL)
                cell = [f"{r[f'{m}_s'] * 1e6:.3g} us ({r[f'{m}_GB_per_s']:.3g} GB/s)" for m in ("limit", "by_hand", "sample")]
                lines.append(f"| {p['label']} | {r['k']} x {size_label(r['row'])} | {size_label(r['buffer_bytes'])} "
                             f"| {' | '.join(cell)} | {r['sample1_s'] * 1e6:.3g} us | {r['ratio']:.2f}x ({spread(r['round_ratios'])}) | {ok} |")
    problems = [f"- **{p['label']}**: " + "; ".join(p["problems"]) for p in results["paths"] if p["problems"]]
    if problems:
        lines += ["", "Not measured:", "", *problems]
    return lines


# --- the command line ---------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--full", dest="profile", action="store_const", const="full",
                         help="inserts of 64 B to 1 MiB, sample rows of 4 KiB and 256 KiB, 64 MiB buffers (default; "
                              "about 20 s a path on 2 cores)")
    profile.add_argument("--quick", dest="profile", action="store_const", const="quick",
                         help="64 B and 4 KiB inserts, 4 KiB rows of a 2 MiB buffer, one round: checks that it runs")
    parser.add_argument("--second-mpi", metavar="TREE", type=Path,
                        help="a copy of this tree with its own .venv on another MPI (make bench: .ci-work/openmpi)")
    parser.add_argument("--paths", nargs="+", metavar="PATH",
                        help=f"shm, network, second-network, second-shm (default: {' '.join(DEFAULT_PATHS)})")
    parser.add_argument("--repeats", type=int, help="rounds of the insert trials (default: the profile's)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where results go (default: bench/results)")
    parser.add_argument("--redraw", action="store_true", help="measure nothing: the tables again from OUT/replay.json")
    parser.add_argument("--sizes", nargs="+", type=int, metavar="BYTES", help="insert message sizes (default: the profile's)")
    parser.add_argument("--seconds", type=float, help="seconds of FIFO puts per insert trial (default: the profile's)")
    parser.add_argument("--rows", nargs="+", type=int, metavar="BYTES", help="sample row sizes (default: the profile's)")
    parser.add_argument("--k", type=int, help="rows per sample() (default: 32)")
    parser.add_argument("--buffer-mib", type=int, help="the sampled buffer's size (default: the profile's)")
    # one job, under mpiexec (the driver launches these with every option above spelled out)
    parser.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measures", nargs="+", default=["insert", "sample"], help=argparse.SUPPRESS)
    parser.add_argument("--blocks", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--block-seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cfg = dict(PROFILES[args.profile or "full"])
    for key in ("sizes", "seconds", "repeats", "rows", "k", "buffer_mib", "blocks", "block_seconds"):
        if getattr(args, key) is None:
            setattr(args, key, cfg[key])
        else:
            cfg[key] = getattr(args, key)
    if args.job:
        return job(args)
    if args.redraw:
        results = json.loads((args.out / "replay.json").read_text())
    else:
        second = None
        if args.second_mpi:
            second = str((args.second_mpi / ".venv" / "bin" / "python").absolute())
            if not Path(second).exists():
                parser.error(f"--second-mpi {args.second_mpi}: no .venv/bin/python there")
        started = time.monotonic()
        results = measure(cfg, sys.executable, second, args.out / "jobs", args.paths)
        results.update(profile=args.profile or "full", seconds=round(time.monotonic() - started, 1),
                       command=" ".join(["python", "bench/replay.py", *(argv if argv is not None else sys.argv[1:])]),
                       date=time.strftime("%Y-%m-%d %H:%M %Z"), cpus=os.cpu_count())
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "replay.json").write_text(json.dumps(results, indent=1))
    text = "\n".join([f"## Replay buffer speed ({results['profile']})", "", f"    {results['command']}", "",
                      f"{results['cpus']} CPUs, {results['date']}, {results['seconds']} s in all", "",
                      *tables(results), ""])
    (args.out / "replay.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

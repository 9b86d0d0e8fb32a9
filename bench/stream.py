"""One benchmark job: measure one system under mpiexec (bench/run.py launches these).

    mpiexec -n N python -m mpi4py bench/stream.py SYSTEM MEASURE [options] --out results.json

The last rank consumes, ranks 0..N-2 produce.  MEASURE is one of

  rate     messages/s for each --sizes, the producers splitting each trial between them;
           timed on the consumer from the barrier before its first get to its last (or on the
           producers, for systems that cannot see arrivals), calibrated to about --seconds,
           median of --repeats trials
  latency  seconds per put of one producer while the consumer drains: median and p99
  stall    the consumer computes for --busy seconds (sleeping, or a numpy loop) without touching
           the stream while the producer puts a few messages at a steady pace, computing in
           between; the longest put, against the longest numpy copy of the message in the same
           paced loop; median of --repeats rounds
  memory   the receive side's peak memory growth (consumer, shared segments, server) while
           --total bytes stream through in messages of --sizes[0] bytes, with the consumer
           keeping up, then with the consumer computing for --busy seconds first

Writes a JSON list of records (one per size) from the consumer.
"""
import argparse
import functools
import json
import os
import statistics
import sys
from pathlib import Path
from time import perf_counter, sleep

import numpy as np
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from systems import SYSTEMS  # noqa: E402

MiB = 1 << 20
RING_BYTES = 32 * MiB        # the working set of every system's buffer ring (rdq's ring, the copy)
MAX_TRIAL_BYTES = 512 * MiB  # Redis has no flow control: a trial's messages may all sit in its server


def ring_depth(size):
    """Slots in flight: a fixed working set rather than one growing with the size."""
    return max(4, min(1024, RING_BYTES // size))


def message(size, rank):
    # never all zeros: ADIOS2 SST runs about 10x slower on all-zero payloads (a byte loop over zeros)
    return np.full(size, 1 + rank % 251, np.uint8)


class Job:
    def __init__(self, comm, system, args):
        self.comm, self.system, self.args = comm, system, args
        self.consumer = comm.size - 1
        self.is_consumer = comm.rank == self.consumer
        self.producers = comm.size - 1

    def open(self, size, depth=None):
        return SYSTEMS[self.system](self.comm, size, depth or ring_depth(size))

    def close(self, stream):
        if not self.is_consumer:
            stream.end()
        stream.close()

    # -- rate ---------------------------------------------------------------------------------
    def trial(self, stream, buf, n):
        """Seconds for n messages in all (n / producers each), on every rank."""
        comm = self.comm
        comm.Barrier()
        dt = None
        t0 = perf_counter()
        if self.is_consumer:
            if stream.timed_on == "consumer":
                stream.get_many(n)
                dt = perf_counter() - t0
        else:
            stream.put_many(buf, n // self.producers)
            if stream.timed_on == "producer":
                dt = perf_counter() - t0
        stream.sync()
        times = [t for t in comm.allgather(dt) if t is not None]
        return max(times)

    def calibrate(self, stream, buf, size):
        """A message count (a multiple of the producer count) for a trial of about --seconds;
        the short trials on the way warm up."""
        p = self.producers
        most = max(2 * p, MAX_TRIAL_BYTES // size // p * p)
        n = min(most, 16 * p)
        while (dt := self.trial(stream, buf, n)) < self.args.seconds / 10 and n < most:
            n = min(most, n * 4)
        return max(p, min(most, round(n * self.args.seconds / dt / p) * p))

    def rate(self, size):
        stream = self.open(size)
        buf = message(size, self.comm.rank)
        n = self.calibrate(stream, buf, size)
        rates = [n / self.trial(stream, buf, n) for _ in range(self.args.repeats)]
        self.close(stream)
        median = statistics.median(rates)
        return {"runs_msg_per_s": rates, "msg_per_s": median,
                "GB_per_s": median * size / 1e9, "depth": stream.depth,
                "transport": getattr(stream, "transport", None)}

    # -- latency ------------------------------------------------------------------------------
    def latency(self, size):
        count = max(50, min(self.args.latency_count, int(self.args.seconds * 4e9 / size)))
        stream = self.open(size)
        buf = message(size, self.comm.rank)
        self.comm.Barrier()
        lat = None
        if self.is_consumer:
            if stream.timed_on == "consumer":
                stream.get_many(count * self.producers)
        else:
            lat = np.empty(count)
            put = stream.put
            for i in range(count):
                t0 = perf_counter()
                put(buf)
                lat[i] = perf_counter() - t0
        stream.sync()
        self.close(stream)
        lat = np.concatenate([x for x in self.comm.allgather(lat) if x is not None])
        return {"puts": len(lat), "median_s": float(np.median(lat)), "p99_s": float(np.percentile(lat, 99)),
                "max_s": float(lat.max())}

    # -- stall --------------------------------------------------------------------------------
    def stall(self, size, mode):
        """--repeats rounds on one stream; the medians over rounds of the longest put and of the
        longest paced copy."""
        busy = self.args.busy
        stream = self.open(size)
        puts = min(16, stream.depth // 2)
        buf = message(size, self.comm.rank)
        gap = 0.8 * busy / puts
        self.warm_up(stream, buf)
        scratch = np.ones_like(buf)
        rounds = []
        for _ in range(self.args.repeats):
            copy = lat = None
            if not self.is_consumer:   # the baseline: the same paced loop, one numpy copy in place of the put
                copy = paced(lambda: np.copyto(scratch, buf), puts, gap)
            self.comm.Barrier()
            if self.is_consumer:
                compute(mode, busy)
                if stream.timed_on == "consumer":
                    stream.get_many(puts * self.producers)
            else:
                lat = paced(lambda: stream.put(buf), puts, gap)
            stream.sync()
            rounds.append(self.comm.allgather((lat, copy))[0])
        self.close(stream)
        max_put = statistics.median(max(lat) for lat, _ in rounds)
        max_copy = statistics.median(max(copy) for _, copy in rounds)
        return {"mode": mode, "busy_s": busy, "puts": puts, "rounds": len(rounds),
                "runs_max_put_s": [max(lat) for lat, _ in rounds], "max_put_s": max_put,
                "median_put_s": statistics.median(x for lat, _ in rounds for x in lat),
                "max_copy_s": max_copy, "max_put_over_copy": max_put / max_copy}

    def warm_up(self, stream, buf):
        """One ring's worth of messages through the stream: the first pass through fresh memory
        pays page faults that a long-running stream does not."""
        if self.is_consumer:
            if stream.timed_on == "consumer":
                stream.get_many(stream.depth)
        else:
            stream.put_many(buf, stream.depth // self.producers)
        stream.sync()

    # -- memory -------------------------------------------------------------------------------
    def memory(self, size, lag):
        """Peak memory the stream adds on the receive side while --total bytes go through: the
        consumer's peak RSS growth, shared memory made for the stream that the consumer has not
        touched (rdq's ring lives in a shared segment whose pages count in the consumer's RSS
        only once it reads them), and the server's peak RSS growth (Redis).  With lag, the
        consumer computes for --busy seconds before it starts to drain, as a busy trainer does."""
        n = max(1, self.args.total // size)
        n -= n % self.producers
        self.close(self.open(size))   # imports, MPI and library start-up are not the stream's
        compute("numpy", 0.01)          # nor the lagging consumer's computation
        if self.is_consumer:
            reset_peak_rss()
            before = proc_status()
            shmem0 = meminfo()["Shmem"]
            server = os.environ.get("RDQ_BENCH_SERVER_PID")
            server0 = proc_status(server)["VmRSS"] if server else None
        stream = self.open(size)
        buf = message(size, self.comm.rank)
        self.comm.Barrier()
        t0 = perf_counter()
        if self.is_consumer:
            if lag:
                compute("numpy", self.args.busy)
            stream.get_many(n)
        else:
            stream.put_many(buf, n // self.producers)
        seconds = perf_counter() - t0
        record = {}
        if self.is_consumer:
            after = proc_status()
            untouched_shared = meminfo()["Shmem"] - shmem0 - (after["RssShmem"] - before["RssShmem"])
            record = {"consumer": "lagging" if lag else "keeping up", "total_bytes": n * size,
                      "seconds": seconds, "consumer_peak_MiB": (after["VmHWM"] - before["VmRSS"]) / MiB,
                      "shared_MiB": max(0, untouched_shared) / MiB,
                      "server_peak_MiB": (proc_status(server)["VmHWM"] - server0) / MiB if server else None}
        stream.sync()
        self.close(stream)
        return record


def paced(action, count, gap):
    """Seconds each of count calls of action took, one every gap seconds; the rank computes
    (spins) in between, like a simulation between two puts.  Sleeping instead would add the
    machine's wake-up time (tens of microseconds on a VM) to each call."""
    took = []
    start = perf_counter()
    for i in range(count):
        while perf_counter() < start + i * gap:
            pass
        t0 = perf_counter()
        action()
        took.append(perf_counter() - t0)
    return took


def compute(mode, seconds):
    """The consumer busy for `seconds` without touching the stream."""
    if mode == "sleep":
        sleep(seconds)
        return
    data, work = sort_arrays()
    end = perf_counter() + seconds
    while perf_counter() < end:
        np.copyto(work, data)
        work.sort()   # in place: the memory measure must not count the computation's arrays


@functools.cache
def sort_arrays():
    data = np.random.default_rng(0).random(1 << 17)
    return data, np.empty_like(data)


def proc_status(pid="self"):
    """Memory lines of /proc/PID/status, in bytes."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


def meminfo():
    """/proc/meminfo in bytes."""
    with open("/proc/meminfo") as f:
        return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}


def reset_peak_rss():
    # Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("system", choices=sorted(SYSTEMS))
    parser.add_argument("measure", choices=["rate", "latency", "stall", "memory"])
    parser.add_argument("--sizes", type=int, nargs="+", required=True)
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one rate trial")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-count", type=int, default=20000, help="puts timed per size, at most")
    parser.add_argument("--busy", type=float, default=2.0, help="seconds the consumer computes (stall)")
    parser.add_argument("--total", type=int, default=1 << 30, help="bytes streamed (memory)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    if comm.size < 2:
        raise SystemExit("run on 2 or more ranks: the last consumes, the others produce")
    job = Job(comm, args.system, args)
    records = []
    for size in args.sizes:
        base = {"system": args.system, "measure": args.measure, "size": size, "producers": comm.size - 1}
        if args.measure == "stall":
            for mode in ("sleep", "numpy"):
                records.append({**base, **job.stall(size, mode)})
        elif args.measure == "memory":
            for lag in (False, True):
                records.append({**base, **job.memory(size, lag)})
        else:
            records.append({**base, **getattr(job, args.measure)(size)})
    if job.is_consumer:
        Path(args.out).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()

"""Throughput of one rdq producer and one consumer, next to its baselines.

Run on two ranks (rank 0 produces, rank 1 owns the queue and consumes):

    mpiexec -n 2 python bench/throughput.py [--sizes 64 4K 1M 8M] [--repeats 5] [--seconds 1] [--json out.json]

For each message size it measures, in the same run:

  rdq        q.put(x) on rank 0; ``m = q.get(); m.release()`` on rank 1 (zero-copy,
             the consumer does not touch the payload)
  Send/Recv  mpi4py's buffer-based comm.Send / comm.Recv, one reused buffer each side
  memcpy     numpy.copyto on rank 0 alone into a rotating destination as large as
             rdq's ring (capacity x size): the one-copy limit (rank 1 sleeps in a barrier)

Each measurement is warmed up and calibrated to about --seconds, repeated --repeats times,
and reported as the median.  Message-passing rates are timed on the consumer from the first
message to the last, so they count delivered messages.  RDQ_TRANSPORT=rma forces rdq's MPI
one-sided path; the transport in use is printed.
"""
import argparse
import json
import statistics
import sys
from time import perf_counter, sleep

import mpi4py
import numpy as np
from mpi4py import MPI

import rdq

PRODUCER, CONSUMER = 0, 1
KiB, MiB = 1 << 10, 1 << 20
SMALL = 64 * KiB   # below this a size is reported in messages/s, from here on in GB/s
METHODS = ("rdq", "sendrecv", "memcpy")


def parse_size(text):
    """'64', '4K', '1M' -> bytes (binary units)."""
    units = {"K": KiB, "M": MiB, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = units.get(text[-1:], 1)
    size = int(text[:-1] if scale > 1 else text) * scale
    if size < 1:
        raise argparse.ArgumentTypeError(f"size must be >= 1 byte, got {text!r}")
    return size


def size_label(size):
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def ring_capacity(size, ring_bytes):
    # Deep enough that the producer rarely waits for the consumer, and a fixed working set
    # (which the memcpy baseline copies into too) instead of one growing with the size.
    return max(4, min(1024, ring_bytes // size))


def timed(comm, trial, n, timer_rank):
    """Seconds the timer rank took for messages 2..n of one trial, on every rank."""
    comm.Barrier()
    return comm.bcast(trial(n), root=timer_rank)


def calibrate(comm, trial, timer_rank, seconds):
    """Message count for a trial of about `seconds`; the short trials on the way warm up."""
    n = 16
    while (dt := timed(comm, trial, n, timer_rank)) < seconds / 10:
        n *= 4
    return max(2, round(n * seconds / dt))


# Each trial runs on both ranks.  Methods are bound to locals so that the Python loop
# overhead is small and the same for all three.

def rdq_trial(comm, q, src):
    def trial(n):
        if comm.rank == PRODUCER:
            put = q.put
            for _ in range(n):
                put(src)
            return None
        get = q.get
        get().release()
        t0 = perf_counter()
        for _ in range(n - 1):
            m = get()
            m.release()
        return perf_counter() - t0
    return trial


def sendrecv_trial(comm, buf):
    # One reused buffer on each side: the data rank 0 sends, the data rank 1 receives into.
    def trial(n):
        if comm.rank == PRODUCER:
            send = comm.Send
            for _ in range(n):
                send(buf, CONSUMER)
            return None
        recv = comm.Recv
        recv(buf, PRODUCER)
        t0 = perf_counter()
        for _ in range(n - 1):
            recv(buf, PRODUCER)
        return perf_counter() - t0
    return trial


def idle_barrier(comm):
    """A barrier that sleeps while it waits.  MPICH's Barrier busy-polls, and a spinning rank 1
    slows rank 0's copies by about 20% where the two CPUs share a physical core (VMs, SMT)."""
    req = comm.Ibarrier()
    while not req.Test():
        sleep(1e-3)


def memcpy_trial(comm, src, slots):
    def trial(n):
        dt = None
        if comm.rank == PRODUCER:
            copyto, k = np.copyto, len(slots)
            copyto(slots[0], src)
            t0 = perf_counter()
            for i in range(1, n):
                copyto(slots[i % k], src)
            dt = perf_counter() - t0
        idle_barrier(comm)
        return dt
    return trial


def bench_size(comm, size, args):
    capacity = ring_capacity(size, args.ring_bytes)
    src = np.arange(size, dtype=np.uint64).astype(np.uint8)
    result = {"size": size, "capacity": capacity, "working_set_bytes": capacity * size}

    q = rdq.Queue(comm, owner=CONSUMER, capacity=capacity, shape=(size,), dtype="uint8",
                  producers=[PRODUCER])
    result["transport"] = q.transport
    slots = []
    if comm.rank == PRODUCER:
        slots = list(np.ones((capacity, size), dtype=np.uint8))   # ones: pages are touched before timing
    trials = {"rdq": (rdq_trial(comm, q, src), CONSUMER),
              "sendrecv": (sendrecv_trial(comm, src), CONSUMER),
              "memcpy": (memcpy_trial(comm, src, slots), PRODUCER)}

    counts = {name: calibrate(comm, trial, timer, args.seconds) for name, (trial, timer) in trials.items()}
    rates = {name: [] for name in trials}
    for _ in range(args.repeats):
        # Round robin, so that slow spells of a shared machine hit every method alike.
        for name, (trial, timer) in trials.items():
            rates[name].append((counts[name] - 1) / timed(comm, trial, counts[name], timer))
    q.close()
    q.free()

    for name in METHODS:
        median = statistics.median(rates[name])
        result[name] = {"messages_per_trial": counts[name], "msg_per_s": rates[name],
                        "median_msg_per_s": median, "median_GB_per_s": median * size / 1e9}
    result["rdq_over_sendrecv"] = result["rdq"]["median_msg_per_s"] / result["sendrecv"]["median_msg_per_s"]
    result["rdq_over_memcpy"] = result["rdq"]["median_msg_per_s"] / result["memcpy"]["median_msg_per_s"]
    return result


def fmt_rate(size, r):
    if size < SMALL:
        return f"{r['median_msg_per_s'] / 1e6:.2f} M msg/s"
    return f"{r['median_GB_per_s']:.2f} GB/s"


def table(results):
    lines = ["| size | ring (capacity x size) | rdq | mpi4py Send/Recv | memcpy | rdq/SendRecv | rdq/memcpy |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        s = r["size"]
        lines.append(f"| {size_label(s)} | {r['capacity']} x {size_label(s)} = {size_label(r['working_set_bytes'])} "
                     f"| {fmt_rate(s, r['rdq'])} | {fmt_rate(s, r['sendrecv'])} | {fmt_rate(s, r['memcpy'])} "
                     f"| {r['rdq_over_sendrecv']:.2f} | {r['rdq_over_memcpy']:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[64, 4 * KiB, MiB, 8 * MiB],
                        metavar="SIZE", help="message sizes in bytes, K/M suffixes allowed (default: 64 4K 1M 8M)")
    parser.add_argument("--repeats", type=int, default=5, help="timed trials per measurement (default: 5)")
    parser.add_argument("--seconds", type=float, default=1.0, help="approximate length of one trial (default: 1)")
    parser.add_argument("--ring-bytes", type=parse_size, default=32 * MiB,
                        help="target ring working set; capacity = clamp(ring_bytes / size, 4, 1024) (default: 32M)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args()
    if args.repeats < 1 or args.seconds <= 0:
        parser.error("--repeats must be >= 1 and --seconds > 0")

    comm = MPI.COMM_WORLD
    if comm.size != 2:
        if comm.rank == 0:
            print(f"run on exactly 2 ranks (mpiexec -n 2), not {comm.size}", file=sys.stderr)
        return 2

    results = [bench_size(comm, size, args) for size in args.sizes]

    if comm.rank == 0:
        library = MPI.Get_library_version().splitlines()[0].strip()
        transports = sorted({r["transport"] for r in results})
        print(f"MPI library: {library}")
        print(f"rdq {rdq.__version__}, transport: {', '.join(transports)}; mpi4py {mpi4py.__version__}, "
              f"numpy {np.__version__}")
        print(f"{args.repeats} repeats of ~{args.seconds:g} s each, medians; GB/s = 1e9 bytes/s\n")
        print(table(results))
        if args.json:
            report = {"mpi_library": library, "transport": transports, "rdq_version": rdq.__version__,
                      "numpy_version": np.__version__, "repeats": args.repeats, "seconds": args.seconds,
                      "ring_bytes": args.ring_bytes, "results": results}
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

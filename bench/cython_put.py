"""The Cython nogil put against the Python put, and what a put costs a simulation step.

Run on two ranks (rank 0 produces, rank 1 owns the queue):

    mpiexec -n 2 python bench/cython_put.py [--repeats 5] [--json out.json]

Builds tests/downstream (a `cimport rdq` extension) first, with build_downstream from bench/systems.py.

1. Put rate at 64 B and 4 KiB: `q.put(x)` from a Python loop against
   `put_nogil` from a nogil loop, same queue settings, same run.  The owner
   drains with get_batch(256), so the consumer is not the bottleneck; the rate
   is timed on the producer.
2. Put latency while the owner is busy training (an MLP step per batch of 32):
   the producer computes for 1 ms (a simulation step), then puts its 64 KiB
   field, 2000 times; median and p99 of the put, against one memcpy of the field.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

import rdq
from systems import build_downstream   # bench/systems.py, beside this script

PRODUCER, CONSUMER = 0, 1
ROOT = Path(__file__).resolve().parent.parent


def drain(q, k=256):
    while True:
        try:
            q.get_batch(k).release()
        except rdq.Closed:
            return


def put_rate(comm, size, count, cython):
    """Puts per second on the producer."""
    q = rdq.Queue(comm, owner=CONSUMER, capacity=1024, slot_bytes=size, producers=[PRODUCER])
    rate = None
    if comm.rank == PRODUCER:
        import rdq_downstream
        message = np.zeros(size, np.uint8)
        t0 = time.perf_counter()
        if cython:
            rdq_downstream.put_many(q, message, count)
        else:
            put = q.put
            for _ in range(count):
                put(message)
        rate = count / (time.perf_counter() - t0)
        q.close()
    else:
        drain(q)
    q.free()
    return rate


def latency_while_training(comm, field_bytes=64 * 1024, count=2000, step=1e-3):
    import torch
    q = rdq.Queue(comm, owner=CONSUMER, capacity=64, slot_bytes=field_bytes, producers=[PRODUCER])
    result = None
    if comm.rank == PRODUCER:
        import rdq_downstream
        field = np.random.default_rng(0).integers(0, 255, field_bytes, dtype=np.uint8)
        comm.Barrier()
        lat = rdq_downstream.put_latencies(q, field, count, step)
        q.close()
        scratch = np.empty_like(field)
        copies = []
        for _ in range(200):
            t0 = time.perf_counter()
            np.copyto(scratch, field)
            copies.append(time.perf_counter() - t0)
        result = {"median_s": float(np.median(lat)), "p99_s": float(np.percentile(lat, 99)),
                  "max_s": float(lat.max()), "memcpy_median_s": statistics.median(copies), "puts": count,
                  "full_waits": q.stats()["full_waits"]}
    else:
        torch.set_num_threads(1)
        # training keeps up on average (about 0.2 ms a sample against a 1 ms step), in bursts
        model = torch.nn.Sequential(torch.nn.Linear(field_bytes // 4, 8), torch.nn.ReLU(),
                                    torch.nn.Linear(8, field_bytes // 4))
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)
        model(torch.zeros(32, field_bytes // 4)).sum().backward()   # torch's first step is slow: not timed
        comm.Barrier()
        while True:
            try:
                b = q.get_batch(32)
            except rdq.Closed:
                break
            x = torch.from_dlpack(b).view(torch.float32)     # the raw bytes, read as float32 features
            loss = torch.nn.functional.mse_loss(model(x), x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            del x, b
    q.free()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--count", type=int, default=200_000, help="puts per rate trial (default: 200000)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    if comm.size != 2:
        raise SystemExit("run on exactly 2 ranks: mpiexec -n 2 python bench/cython_put.py")
    build_downstream(comm)   # makes rdq_downstream importable on every rank
    rates = {}
    for size in (64, 4096):
        for _ in range(args.repeats):   # alternate, so noise hits both alike
            for name, cython in (("python put", False), ("cython put_nogil", True)):
                rates.setdefault((size, name), []).append(put_rate(comm, size, args.count, cython))
    latency = latency_while_training(comm)
    if comm.rank != PRODUCER:
        return
    print(MPI.Get_library_version().splitlines()[0].strip("\0"))
    print("\n| size | Python put (M puts/s) | Cython put_nogil (M puts/s) | Cython / Python |\n|---:|---:|---:|---:|")
    table = {}
    for size in (64, 4096):
        py = statistics.median(rates[(size, "python put")])
        cy = statistics.median(rates[(size, "cython put_nogil")])
        table[size] = {"python": py, "cython": cy}
        print(f"| {size} B | {py / 1e6:.2f} | {cy / 1e6:.2f} | {cy / py:.2f} |")
    print(f"\nput of a 64 KiB field after each 1 ms step, owner training meanwhile ({latency['puts']} puts):")
    print(f"median {latency['median_s'] * 1e6:.1f} us, p99 {latency['p99_s'] * 1e6:.1f} us, "
          f"max {latency['max_s'] * 1e6:.1f} us; one memcpy of the field {latency['memcpy_median_s'] * 1e6:.1f} us; "
          f"puts that found the ring full: {latency['full_waits']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rates": {str(k): v for k, v in table.items()}, "latency": latency}, f, indent=1)


if __name__ == "__main__":
    main()

"""Batches and sampling: what the consumer pays per batch, what a training loop gains, what sampling saves.

Run on two ranks (rank 0 produces, rank 1 owns the queue and consumes):

    mpiexec -n 2 python bench/batches.py [--repeats 7] [--json out.json]

1. Consumer time per batch, k = 1 .. 1024, on the zero-copy path: the ring is
   filled first, then the owner times get_batch(k) + torch.from_dlpack + release
   (no waiting inside the timed region).  Flat in k means zero-copy.
2. Samples/s into a training step: rdq.torch.QueueDataset (zero-copy batches)
   against get() and copying each message into a preallocated batch tensor.
3. Sampling: bytes that crossed to the owner with Bernoulli(p), p = 1, 0.5, 0.1.
"""
import argparse
import json
import statistics
import time

import numpy as np
import torch
from mpi4py import MPI

import rdq
from rdq.sampling import Bernoulli
from rdq.torch import QueueDataset

PRODUCER, CONSUMER = 0, 1
ROW = (256,)           # float32 rows of 1 KiB


def per_batch_cost(comm, k, repeats):
    """Median seconds per get_batch(k) + from_dlpack + release on a full ring."""
    batches = 4
    q = rdq.Queue(comm, owner=CONSUMER, capacity=batches * k, shape=ROW, dtype="float32", producers=[PRODUCER])
    row = np.ones(ROW, np.float32)
    samples = []
    for _ in range(repeats + 1):                       # the first round warms up
        if comm.rank == PRODUCER:
            for _ in range(batches * k):
                q.put(row)
        comm.Barrier()
        if comm.rank == CONSUMER:
            t0 = time.perf_counter()
            for _ in range(batches):
                b = q.get_batch(k)
                t = torch.from_dlpack(b)
                b.release()
                del t, b
            samples.append((time.perf_counter() - t0) / batches)
        comm.Barrier()
    q.close()
    if comm.rank == CONSUMER:
        copies = q.stats()["batch_copies"]
        assert copies == 0, f"{copies} batches were copied"
    q.free()
    return statistics.median(samples[1:]) if samples else None


def training_rate(comm, zero_copy, batch, steps):
    """Samples/s through a small MLP's training step, fed by rdq."""
    q = rdq.Queue(comm, owner=CONSUMER, capacity=8 * batch, shape=ROW, dtype="float32", producers=[PRODUCER])
    rate = None
    if comm.rank == PRODUCER:
        row = np.random.default_rng(0).random(ROW, dtype=np.float32)
        for _ in range(steps * batch):
            q.put(row)
        q.close()
    else:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(ROW[0], 64), torch.nn.ReLU(), torch.nn.Linear(64, ROW[0]))
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        staging = torch.empty((batch, *ROW))
        seen = 0
        t0 = time.perf_counter()
        if zero_copy:
            source = QueueDataset(q, batch_size=batch)
        else:
            def source():                              # what users write without zero-copy batches
                while True:
                    for i in range(batch):
                        try:
                            with q.get() as m:
                                staging[i].copy_(torch.from_dlpack(m))
                        except rdq.Closed:
                            return
                    yield staging
            source = source()
        for x in source:
            loss = torch.nn.functional.mse_loss(model(x), x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(x)
            del x
        rate = seen / (time.perf_counter() - t0)
    q.free()
    return rate


def sampling_savings(comm, p, count, nbytes):
    policy = Bernoulli(p, seed=1) if comm.rank == PRODUCER else None
    q = rdq.Queue(comm, owner=CONSUMER, capacity=16, slot_bytes=nbytes, producers=[PRODUCER], sample=policy)
    if comm.rank == PRODUCER:
        payload = np.zeros(nbytes, np.uint8)
        for _ in range(count):
            q.put(payload)
        q.close()
    else:
        for m in q:
            m.release()
    stats = comm.bcast(q.stats() if comm.rank == PRODUCER else None, root=PRODUCER)
    got = comm.bcast(q.stats()["bytes_got"] if comm.rank == CONSUMER else None, root=CONSUMER)
    q.free()
    return {"p": p, "offered_bytes": count * nbytes, "sent_bytes": stats["bytes_put"],
            "received_bytes": got, "sampled_out": stats["sampled_out"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per k (default: 7)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16, 64, 256, 1024])
    parser.add_argument("--steps", type=int, default=300, help="training steps per feed (default: 300)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    if comm.size != 2:
        raise SystemExit("run on exactly 2 ranks: mpiexec -n 2 python bench/batches.py")
    torch.set_num_threads(1)

    costs = {k: per_batch_cost(comm, k, args.repeats) for k in args.ks}
    rates = {name: [training_rate(comm, zero_copy, 32, args.steps) for _ in range(3)]
             for name, zero_copy in (("zero-copy batches", True), ("get + copy", False))}
    savings = [sampling_savings(comm, p, 2000, 64 * 1024) for p in (1.0, 0.5, 0.1)]

    if comm.rank != CONSUMER:
        return
    print(MPI.Get_library_version().splitlines()[0].strip("\0"))
    print(f"rows of {np.prod(ROW) * 4} bytes (float32 {ROW})\n")
    print("| k | consumer time per batch (us) | per row (us) |\n|---:|---:|---:|")
    for k, cost in costs.items():
        print(f"| {k} | {cost * 1e6:.2f} | {cost * 1e6 / k:.3f} |")
    print("\n| feed (batch 32, MLP step) | samples/s (median of 3) |\n|---|---:|")
    medians = {name: statistics.median(r) for name, r in rates.items()}
    for name, rate in medians.items():
        print(f"| {name} | {rate:,.0f} |")
    print(f"\nzero-copy / copy: {medians['zero-copy batches'] / medians['get + copy']:.2f}x\n")
    print("| Bernoulli p | offered | sent | saved |\n|---:|---:|---:|---:|")
    for s in savings:
        print(f"| {s['p']} | {s['offered_bytes'] / 1e6:.1f} MB | {s['sent_bytes'] / 1e6:.1f} MB | "
              f"{1 - s['sent_bytes'] / s['offered_bytes']:.0%} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"per_batch_seconds": costs, "training_samples_per_s": rates, "sampling": savings}, f, indent=1)


if __name__ == "__main__":
    main()

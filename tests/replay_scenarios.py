"""Multi-rank scenarios of rdq.ReplayBuffer, run by tests/test_replay.py under mpiexec:
`replay_scenarios.py NAME [options]`.  The owner is the last rank; every other rank produces.

Rows carry (source, seq) and a body derived from them, so a torn or misattributed row is seen.
"""
import argparse
import math
import time

import numpy as np

import rdq
from scenarios import check, comm, expect_error, main, rank, say, size

OWNER = size - 1
PRODUCERS = size - 1


def row(shape, src, seq):
    a = (np.arange(math.prod(shape), dtype=np.int64) * (src + 1) + seq * 7919).reshape(shape)
    a.reshape(-1)[:2] = (src, seq)
    return a


def check_rows(batch, shape):
    rows = np.asarray(batch)
    for a, src, seq in zip(rows, batch.sources, batch.seqs):
        check(np.array_equal(a, row(shape, src, seq)), f"torn or misattributed row: source {src} seq {seq}, "
                                                       f"carries {a.reshape(-1)[:2]}")


def chi2_critical(dof, z=3.09):
    """The chi-square value a uniform draw exceeds with probability 0.001 (Wilson-Hilferty)."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def wait_ended(rb):
    while not rb.ended:
        time.sleep(0.01)


def reservoir_uniformity(cap, count, bins):
    """After a long stream, the resident ids of each producer are a uniform sample of its stream,
    and sample() draws uniformly among the resident."""
    rb = rdq.ReplayBuffer(comm, owner=OWNER, capacity=cap, shape=(2,), dtype=np.int64, seed=7, name="uniform")
    if rank != OWNER:
        for seq in range(count):
            rb.put(np.array([rank, seq]))
        rb.close()
    produced = comm.gather(rb.stats() if rank != OWNER else None, root=OWNER)
    if rank == OWNER:
        wait_ended(rb)
        everything = rb.sample(PRODUCERS * cap)
        check(len(everything) == PRODUCERS * cap, f"{len(everything)} rows, {PRODUCERS * cap} resident")
        ids = np.asarray(everything)
        check(np.array_equal(ids[:, 0], everything.sources) and np.array_equal(ids[:, 1], everything.seqs),
              "rows disagree with .sources/.seqs")
        check(len(set(map(tuple, ids.tolist()))) == len(ids), "a message is resident twice")
        stat = 0.0
        for src in range(PRODUCERS):
            seqs = ids[ids[:, 0] == src, 1]
            check(len(seqs) == cap, f"producer {src} has {len(seqs)} resident, capacity {cap}")
            observed = np.bincount(seqs * bins // count, minlength=bins)
            stat += float(((observed - cap / bins) ** 2 / (cap / bins)).sum())
        dof = PRODUCERS * (bins - 1)
        print(f"reservoir: chi-square {stat:.1f} over {dof} degrees of freedom "
              f"(0.001 critical {chi2_critical(dof):.1f})", flush=True)
        check(stat < chi2_critical(dof), f"resident ids are not uniform: chi-square {stat:.1f}")
        stats = rb.stats()
        inserted = sum(p["inserted"] for p in produced[:PRODUCERS])
        check(stats["inserted"] == inserted and stats["resident"] == PRODUCERS * cap and
              stats["evicted"] == inserted - PRODUCERS * cap and
              stats["skipped"] == PRODUCERS * count - inserted, f"owner stats {stats} vs producers {produced}")
        # sample(): every resident message equally likely
        counts = np.zeros((PRODUCERS, count), np.int64)
        draws, k = 400, 25
        for _ in range(draws):
            b = rb.sample(k)
            check(len(set(zip(b.sources.tolist(), b.seqs.tolist()))) == k, "a sample repeats a message")
            np.add.at(counts, (b.sources, b.seqs), 1)
        resident = counts[ids[:, 0], ids[:, 1]]
        check(resident.sum() == draws * k, "a draw is not a resident message")
        expected = draws * k / len(ids)
        stat = float(((resident - expected) ** 2 / expected).sum())
        print(f"sample(): chi-square {stat:.1f} over {len(ids) - 1} degrees of freedom", flush=True)
        check(stat < chi2_critical(len(ids) - 1), f"sample() is not uniform: chi-square {stat:.1f}")
        stats = rb.stats()
        check(abs(stats["reuse"] - (draws * k + PRODUCERS * cap) / len(ids)) < 1e-9, f"reuse {stats['reuse']}")
    rb.free()


def window_keeps_newest(cap, count):
    rb = rdq.ReplayBuffer(comm, owner=OWNER, capacity=cap, shape=(2,), dtype=np.int64, policy="window",
                          name="window")
    if rank != OWNER:
        for seq in range(count):
            check(rb.put(np.array([rank, seq])), "a window policy put returned False")
        rb.close()
    else:
        wait_ended(rb)
        b = rb.sample(PRODUCERS * cap)
        for src in range(PRODUCERS):
            check(sorted(b.seqs[b.sources == src]) == list(range(count - cap, count)),
                  f"window policy kept {sorted(b.seqs[b.sources == src])} of producer {src}")
        check(rb.stats()["evicted"] == PRODUCERS * (count - cap), f"stats {rb.stats()}")
    rb.free()


def short_and_empty():
    """k > what is resident: rdq.Empty while the stream goes on, all of it at end of stream;
    rdq.Closed when nothing was ever put."""
    rb = rdq.ReplayBuffer(comm, owner=OWNER, capacity=4, shape=(2,), dtype=np.int64, name="short")
    if rank == OWNER:
        expect_error(ValueError, lambda: rb.sample(4 * PRODUCERS + 1), "1 <= k <=")
        expect_error(ValueError, lambda: rb.sample(0), "1 <= k <=")
        expect_error(rdq.Empty, lambda: rb.sample(1, block=False), "0 messages resident")
        t = time.monotonic()
        expect_error(rdq.Empty, lambda: rb.sample(1, timeout=0.2), "within 0.2 s")
        check(time.monotonic() - t < 2, "sample(timeout=0.2) overshot")
    comm.Barrier()
    if rank != OWNER:
        for seq in range(3):
            rb.put(np.array([rank, seq]))
        rb.close()
    else:
        b = rb.sample(3 * PRODUCERS)                    # waits until all are there
        check(len(b) == 3 * PRODUCERS, f"{len(b)} rows")
        wait_ended(rb)
        b = rb.sample(4 * PRODUCERS)                    # a short batch: all that is resident
        check(len(b) == 3 * PRODUCERS, f"short batch of {len(b)}")
        check(len(rb.sample(2)) == 2, "sampling after end of stream")
    rb.free()
    nothing = rdq.ReplayBuffer(comm, owner=OWNER, capacity=4, shape=(2,), dtype=np.int64, name="nothing")
    nothing.close()
    if rank == OWNER:
        expect_error(rdq.Closed, lambda: nothing.sample(1), "end of stream", "without putting anything")
    nothing.free()


def bad_input():
    rb = rdq.ReplayBuffer(comm, owner=OWNER, capacity=4, shape=(2, 3), dtype=np.float32, name="bad")
    if rank != OWNER:
        where = f"rank {rank}"
        expect_error(ValueError, lambda: rb.put(np.zeros((3, 2), np.float32)), where, "expected shape (2, 3)")
        expect_error(TypeError, lambda: rb.put(np.zeros((2, 3), np.float64)), where, "expected dtype float32")
        expect_error(ValueError, lambda: rb.put(np.zeros((3, 2), np.float32).T), where, "C-contiguous")
        rb.put(np.ones((2, 3), np.float32))
        rb.close()
        expect_error(rdq.Closed, lambda: rb.put(np.ones((2, 3), np.float32)), where, "after close()")
        expect_error(rdq.RDQError, lambda: rb.sample(1), f"rank {rank}", "only its owner")
    else:
        expect_error(rdq.RDQError, lambda: rb.put(np.ones((2, 3), np.float32)), "not one of its producers")
        wait_ended(rb)
        b = rb.sample(PRODUCERS)     # nothing bad got in, nothing good got lost
        check(np.array_equal(np.asarray(b), np.ones((PRODUCERS, 2, 3), np.float32)), "bad input got in")
    rb.free()
    expect_error(ValueError, lambda: rdq.ReplayBuffer(comm, capacity=4, shape=2, dtype="f4", policy="lifo"),
                 "policy must be one of")
    expect_error(ValueError, lambda: rdq.ReplayBuffer(comm, capacity=4, shape=2), "needs shape and dtype")
    expect_error(ValueError, lambda: rdq.ReplayBuffer(comm, capacity=4, shape=2, dtype="f4", seed=-1), "seed")
    if size > 1:
        expect_error(ValueError, lambda: rdq.ReplayBuffer(comm, owner=OWNER, capacity=4, shape=2, dtype="f4",
                                                          policy="window" if rank == 0 else "reservoir"),
                     "same arguments on every rank", "policy=")
    expect_error(ValueError, lambda: rdq.ReplayBuffer(comm, owner=OWNER, capacity=1 << 40, shape=1 << 20,
                                                      dtype="u1"), "cannot create the replay buffer")


def scenario_replay(argv):
    """Policies, end of stream, short batches, bad input (every producer checks against the owner)."""
    reservoir_uniformity(cap=400, count=8000, bins=20)
    window_keeps_newest(cap=8, count=100)
    short_and_empty()
    bad_input()
    print(f"rank {rank}: ok", flush=True)


def scenario_replay_hammer(argv):
    """Producers overwrite a small window as fast as they can while the owner samples the very
    slots being written: no sample is ever torn, and a sample held meanwhile never changes.
    Then the owner computes without any MPI call while producers put: they never wait for it."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    for shape in ((8,), (16, 1024)):   # 64 B (checked by hash on rma) and 128 KiB (busy stamp, 3 flushes)
        rb = rdq.ReplayBuffer(comm, owner=OWNER, capacity=2, shape=shape, dtype=np.int64, policy="window",
                              name=f"hammer{math.prod(shape) * 8}")
        stop = np.zeros(1, np.int64)
        if rank != OWNER:
            seq = 0
            request = comm.Ibcast(stop, root=OWNER)
            while not request.Test():
                rb.put(row(shape, rank, seq))
                seq += 1
            rb.close()
            say(f"producer: {seq} puts of {shape}")
        else:
            held = rb.sample(PRODUCERS)
            kept = np.asarray(held).copy()
            samples, t0 = 0, time.monotonic()
            while time.monotonic() - t0 < args.seconds:
                check_rows(rb.sample(2 * PRODUCERS), shape)
                samples += 1
            comm.Ibcast(stop, root=OWNER).Wait()
            check(np.array_equal(np.asarray(held), kept), "a held sample changed")
            check_rows(held, shape)
            stats = rb.stats()
            print(f"hammer {shape}: {samples} samples of {2 * PRODUCERS} rows intact while "
                  f"{stats['inserted']} puts overwrote them; {stats['redrawn']} rows drawn again", flush=True)
        rb.free()
    owner_computes(busy=2.0, count=500)
    print(f"rank {rank}: ok", flush=True)


def owner_computes(busy, count):
    rb = rdq.ReplayBuffer(comm, owner=OWNER, capacity=16, shape=(64, 64), dtype=np.float32, name="away")
    x = np.ones((64, 64), np.float32)
    comm.Barrier()
    if rank == OWNER:
        data, t0 = np.random.default_rng(0).random(1 << 20), time.monotonic()
        while time.monotonic() - t0 < busy:
            np.sort(data)                                 # no MPI call in here
        wait_ended(rb)
        check(rb.stats()["resident"] == 16 * PRODUCERS, f"stats {rb.stats()}")
    else:
        time.sleep(0.2)                                   # the owner is computing by now
        t0 = time.monotonic()
        for _ in range(count):
            rb.put(x)
        rb.close()
        took = time.monotonic() - t0
        say(f"producer: {count} puts in {took:.3f} s")
        # a put that needed the owner would have waited for the rest of its computation
        check(took < busy / 2, f"{count} puts took {took:.3f} s while the owner computed {busy} s")
        print(f"rank {rank}: {count} puts in {took * 1e3:.1f} ms while the owner computed", flush=True)
    rb.free()


def scenario_replay_put_error(argv):
    """An MPI error strikes the flush of a producer's 4th put (RDQ_FAIL_FLUSH, tests/pmpi), after its
    busy stamp landed: that slot never becomes whole.  The producer is told and puts no more; the
    owner's samples skip the broken slot and never hang, also once it is all that is left."""
    shape = (4096,)                                   # 32 KiB rows: the busy-stamp path, 3 flushes a put
    rb = rdq.ReplayBuffer(comm, owner=OWNER, capacity=4, shape=shape, dtype=np.int64, policy="window")
    if rank != OWNER:
        for seq in range(3):
            rb.put(row(shape, rank, seq))
        expect_error(rdq.MPIError, lambda: rb.put(row(shape, rank, 3)), "MPI error code")
        expect_error(rdq.RDQError, lambda: rb.put(row(shape, rank, 4)), "may or may not have arrived")
        rb.close()
    else:
        wait_ended(rb)
        check(rb.resident == 4, f"resident {rb.resident}")
        for _ in range(20):
            check_rows(rb.sample(3), shape)           # the broken slot is drawn, then replaced
        b = rb.sample(4)                              # nothing left to replace it with: a short batch
        check(len(b) == 3 and sorted(b.seqs) == [0, 1, 2], f"{len(b)} rows: {b.seqs}")
        check_rows(b, shape)
        print(f"rank {rank}: samples skip the slot whose write failed; redrawn {rb.stats()['redrawn']}",
              flush=True)
    rb.free()


if __name__ == "__main__":
    main(globals())

"""Multi-rank scenarios, run by tests/test_mpi.py under mpiexec: `scenarios.py NAME [options]`.

Payloads carry (rank, sequence, checksum), so the consumer detects loss,
duplication, reordering within a producer and torn messages.  Every rank
records what it is doing with say(); the launcher prints that if the
scenario hangs.
"""
import argparse
import faulthandler
import gc
import math
import os
import queue
import random
import signal
import struct
import sys
import threading
import time
import zlib

import numpy as np
from mpi4py import MPI

import rdq

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
EVERYONE = range(size)   # producers: every rank, the owner too (the default leaves the owner out)
_last_words = None


def say(msg):
    global _last_words
    logdir = os.environ.get("RDQ_TEST_LOGDIR")
    if not logdir:
        return
    if _last_words is None:
        _last_words = open(os.path.join(logdir, f"rank{rank}.txt"), "w")
    _last_words.seek(0)
    _last_words.write(f"{time.strftime('%H:%M:%S')} {msg}\n")
    _last_words.truncate()
    _last_words.flush()


def check(cond, msg):
    if not cond:
        raise AssertionError(f"rank {rank}: {msg}")


# --- payloads ---------------------------------------------------------------

TYPED_SHAPE = (4, 8)
HEADER = struct.Struct("<qqqI")   # rank, seq, body length, crc32 of body


def typed_payload(src, seq):
    a = np.empty(TYPED_SHAPE, np.int64)
    body = a.reshape(-1)[3:]
    body[:] = np.arange(body.size) * (src + 1) + seq * 7919
    a.reshape(-1)[:3] = (src, seq, int(body.sum()) ^ 0x5A5A)
    return a


def check_typed(a, src, seq):
    flat = a.reshape(-1)
    check(flat[0] == src and flat[1] == seq, f"message claims source {src} seq {seq} but carries {flat[:2]}")
    body = flat[3:]
    check(int(body.sum()) ^ 0x5A5A == flat[2] and
          np.array_equal(body, np.arange(body.size) * (src + 1) + seq * 7919),
          f"torn typed message from {src} seq {seq}")


def raw_payload(src, seq, slot_bytes):
    rng = random.Random(src * 1_000_003 + seq)
    body = rng.randbytes(rng.randint(0, slot_bytes - HEADER.size))
    return HEADER.pack(src, seq, len(body), zlib.crc32(body)) + body


def check_raw(buf, nbytes, src, seq):
    src_, seq_, n, crc = HEADER.unpack_from(buf)
    check((src_, seq_) == (src, seq), f"raw message claims {src}/{seq} but carries {src_}/{seq_}")
    body = bytes(buf[HEADER.size:])
    check(nbytes == HEADER.size + n and len(body) == n and zlib.crc32(body) == crc,
          f"torn raw message from {src} seq {seq}: {nbytes} bytes, header says {HEADER.size + n}")


def drain_checked(q):
    """Consume q to end of stream, checking payloads and per-producer order; {source: count}."""
    got = {}
    for m in q:
        with m:
            check_typed(np.asarray(m).copy(), m.source, m.seq)
            check(m.seq == got.get(m.source, 0), f"order from {m.source}: {m.seq}")
            got[m.source] = m.seq + 1
    return got


class Payloads:
    def __init__(self, kind, slot_bytes=256):
        self.kind, self.slot_bytes = kind, slot_bytes

    def queue(self, **kw):
        kw.setdefault("producers", EVERYONE)
        if self.kind == "typed":
            return rdq.Queue(comm, shape=TYPED_SHAPE, dtype=np.int64, **kw)
        return rdq.Queue(comm, slot_bytes=self.slot_bytes, **kw)

    def make(self, seq):
        return typed_payload(rank, seq) if self.kind == "typed" else raw_payload(rank, seq, self.slot_bytes)

    def check(self, m):
        a = np.asarray(m)
        if self.kind == "typed":
            check_typed(a, m.source, m.seq)
        else:
            check_raw(a, m.nbytes, m.source, m.seq)
        return a


# --- scenarios --------------------------------------------------------------

class Consumer:
    """Checks exactly-once, per-producer order and intact payloads; holds some
    views for a long time and releases the rest in random order."""

    def __init__(self, q, payloads, hold, window, seed=1):
        self.q, self.payloads = q, payloads
        self.next_seq = {}
        self.held = []              # (view, copy taken when received)
        self.hold, self.window = hold, window
        self.pending = []
        self.rng = random.Random(seed)
        self.received = 0
        self.releaser = None

    def take(self, m):
        check(m.seq == self.next_seq.get(m.source, 0),
              f"from {m.source} expected seq {self.next_seq.get(m.source, 0)}, got {m.seq}")
        self.next_seq[m.source] = m.seq + 1
        a = self.payloads.check(m)
        self.received += 1
        if len(self.held) < self.hold and self.rng.random() < 0.05:
            self.held.append((a, a.copy()))
            m.release()   # the slot stays pinned by the live view `a`
        else:
            del a
            self.pending.append(m)
        if len(self.pending) >= self.window:
            self.flush()
        if self.received % 500 == 0:
            say(f"consumer: {self.received} received, {len(self.held)} views held")

    def flush(self):
        self.rng.shuffle(self.pending)
        if self.releaser is not None:
            self.releaser.put(list(self.pending))   # a data-loader-like thread releases them
        else:
            for m in self.pending:
                m.release()
        self.pending.clear()

    def release_in_a_thread(self):
        """Hand released messages to a worker thread that gives them back a little later."""
        self.releaser = queue.Queue()

        def work():
            while (batch := self.releaser.get()) is not None:
                time.sleep(self.rng.random() * 1e-3)
                for m in batch:
                    m.release()
                del batch
        self.worker = threading.Thread(target=work, daemon=True)
        self.worker.start()

    def stop_releasing(self):
        if self.releaser is not None:
            self.releaser.put(None)
            self.worker.join()
            self.releaser = None

    def get(self, q):
        """The next message; with a releasing thread, waits with a timeout (the slots the owner
        holds are that thread's to give back, so a get with no timeout would be refused)."""
        while True:
            try:
                return q.get(timeout=None if self.releaser is None else 1.0)
            except rdq.Empty:
                continue

    def verify_held(self):
        for view, copy in self.held:
            check(np.array_equal(view, copy), "a held zero-copy view was overwritten")


def scenario_stream(argv):
    """Every rank produces (the owner too, without blocking); the owner checks everything.

    Also the stress and soak form: `--seconds S` puts for S seconds instead of --count."""
    p = argparse.ArgumentParser()
    p.add_argument("--owner", choices=["first", "last"], default="first")
    p.add_argument("--kind", choices=["typed", "raw"], default="typed", help="raw: random sizes")
    p.add_argument("--capacity", type=int, default=16)
    p.add_argument("--count", type=int, default=1000, help="messages per producer")
    p.add_argument("--seconds", type=float, default=0, help="put for this long instead of --count")
    p.add_argument("--hold", type=int, default=0, help="views the consumer keeps until the end")
    p.add_argument("--window", type=int, default=1, help="messages released together, in random order")
    p.add_argument("--slow-consumer", type=float, default=0.0,
                   help="after 1 message in 50, the consumer sleeps up to this many seconds")
    p.add_argument("--release-thread", action="store_true", help="a worker thread of the owner releases")
    p.add_argument("--close-race", action="store_true",
                   help="a second thread of each producer closes at a random moment while it puts")
    p.add_argument("--more", action="store_true",
                   help="puts say more follow (put(more=True)) 9 times in 10, with a flush() now and then")
    a = p.parse_args(argv)
    check(a.hold + a.window <= a.capacity, "bad scenario: hold + window must fit in the capacity")
    owner = 0 if a.owner == "first" else size - 1
    payloads = Payloads(a.kind)
    q = payloads.queue(owner=owner, capacity=a.capacity)
    say(f"queue made: {q!r}")
    deadline = time.monotonic() + a.seconds

    def more(seq):
        return time.monotonic() < deadline if a.seconds else seq < a.count

    if rank != owner:
        if a.close_race:
            # close() from another thread waits for a put in progress: no message is cut off
            closer = threading.Timer(random.Random(rank).uniform(0, a.seconds or 1), q.close)
            closer.start()
        seq = 0
        coin = random.Random(rank + 1000)
        while more(seq):
            try:
                q.put(payloads.make(seq), more=a.more and coin.random() < 0.9)
                if a.more and coin.random() < 0.01:
                    q.flush()
            except rdq.Closed:
                check(a.close_race, "put after close without a closing thread")
                break
            seq += 1
            if seq % 500 == 0:
                say(f"producer: put {seq}")
        if a.close_race:
            closer.cancel()
            closer.join()
        q.close()
        say(f"producer: closed after {seq}")
    else:
        c = Consumer(q, payloads, a.hold, a.window)
        if a.release_thread:
            c.release_in_a_thread()
        nap = random.Random(rank)
        sent = 0
        # The owner produces too: it puts without blocking and consumes when the ring is full.
        while more(sent):
            try:
                q.put(payloads.make(sent), block=False, more=a.more)   # more: ignored on the owner's own ring
                sent += 1
            except rdq.Full:
                if c.pending:
                    c.flush()
                try:   # its own ring may be full of messages that the releasing thread holds: retry
                    c.take(q.get(timeout=None if c.releaser is None else 0.05))
                except rdq.Empty:
                    pass
        q.close()
        while True:
            try:
                m = c.get(q)
            except rdq.Closed:
                break
            c.take(m)
            del m
            if a.slow_consumer and nap.random() < 0.02:
                time.sleep(nap.uniform(0, a.slow_consumer))
        c.flush()
        c.stop_releasing()
        say("consumer: end of stream")
        c.verify_held()
        check(q.stats()["live_exports"] == len(c.held), f"stats {q.stats()}")
    puts = comm.gather(q.stats()["puts"], root=owner)
    if rank == owner:
        check(c.next_seq == {r: n for r, n in enumerate(puts) if n}, f"per-producer {c.next_seq}, put {puts}")
        check(c.received == sum(puts) == q.stats()["gets"], f"received {c.received}, put {puts}")
        if not a.seconds and not a.close_race:
            check(puts == [a.count] * size, f"puts {puts}")
        del c
        check(q.stats()["live_exports"] == 0 and q.stats()["outstanding"] == 0, f"stats {q.stats()}")
        print(f"checked {sum(puts)} messages from {size} producers: exactly once, in order, intact", flush=True)
    q.free()
    print(f"rank {rank}: ok ({q.transport})", flush=True)


def scenario_eos(argv):
    """End of stream with a slow producer, a producer that sends nothing, and the owner not producing."""
    owner = size - 1
    producers = [r for r in range(size) if r != owner] or [owner]
    q = rdq.Queue(comm, owner=owner, capacity=4, shape=TYPED_SHAPE, dtype=np.int64, producers=producers)
    # (a lone owner-producer sends less than the capacity: nobody consumes while it puts)
    counts = {r: (0 if r == 1 else 20 if size > 1 else 3) for r in producers}
    if rank in producers:
        for seq in range(counts[rank]):
            if rank == 0:
                time.sleep(0.02)   # the slow one: it closes last
            q.put(typed_payload(rank, seq))
        say("producer: closing")
        q.close()
        q.close()   # a second close does nothing
    else:
        q.close()   # not a producer: does nothing
    if rank == owner:
        got = drain_checked(q)
        want = {r: c for r, c in counts.items() if c}
        check(got == want, f"got {got}, want {want}")
        for _ in range(2):
            try:
                q.get(timeout=1)
                check(False, "get after end of stream returned")
            except rdq.Closed:
                pass
        check(list(q) == [], "iteration after end of stream")
    q.free()
    print(f"rank {rank}: ok", flush=True)


def scenario_timeouts(argv):
    """Empty and Full on time, and nothing lost or duplicated around them."""
    owner = size - 1
    cap = 4
    q = rdq.Queue(comm, producers=EVERYONE, owner=owner, capacity=cap, shape=TYPED_SHAPE, dtype=np.int64)
    if rank == owner:
        for kwargs in ({"block": False}, {"timeout": 0}, {"timeout": 0.3}):
            t0 = time.monotonic()
            try:
                q.get(**kwargs)
                check(False, f"get({kwargs}) on an empty queue returned")
            except rdq.Empty as exc:
                check(f"rank {rank}" in str(exc), f"error does not name the rank: {exc}")
            waited = time.monotonic() - t0
            check(waited >= kwargs.get("timeout", 0) and waited < 5, f"get({kwargs}) waited {waited:.3f} s")
    comm.Barrier()
    # Ranks take turns filling their rings: each one has `cap` slots of its own, whatever the
    # others did, and meets its own ring full.
    sent = 0
    for turn in range(size):
        if rank == turn:
            while True:
                try:
                    q.put(typed_payload(rank, sent), block=False)
                    sent += 1
                except rdq.Full:
                    break
            t0 = time.monotonic()
            try:
                q.put(typed_payload(rank, sent), timeout=0.2)
                check(False, "put(timeout=0.2) into a full ring returned")
            except rdq.Full as exc:
                check(q.stats()["full_waits"] >= 1, f"full wait not counted: {q.stats()}")
                check(time.monotonic() - t0 >= 0.2, "put(timeout=0.2) gave up early")
                check(f"rank {rank}" in str(exc), f"error does not name the rank: {exc}")
        comm.Barrier()
    check(sent == cap, f"rank {rank} sent {sent} into its ring of {cap} slots")
    # Now the owner drains while everybody sends 10 more (blocking).
    if rank == owner:
        got = {}
        for extra in range(10):
            while True:
                try:
                    q.put(typed_payload(rank, sent + extra), block=False)
                    break
                except rdq.Full:
                    with q.get() as m:
                        got[m.source] = got.get(m.source, 0) + 1
                        check(m.seq == got[m.source] - 1, "order")
        q.close()
        for m in q:
            with m:
                check_typed(np.asarray(m).copy(), m.source, m.seq)
                got[m.source] = got.get(m.source, 0) + 1
                check(m.seq == got[m.source] - 1, "order")
        want = {r: 10 + cap for r in range(size)}
        check(got == want, f"got {got}, want {want}")
    else:
        for extra in range(10):
            q.put(typed_payload(rank, sent + extra))
        q.close()
    q.free()
    print(f"rank {rank}: ok", flush=True)


def expect_error(exc_type, fn, *words):
    try:
        fn()
    except exc_type as exc:
        text = str(exc)
        for w in words:
            check(w in text, f"{exc_type.__name__} message lacks {w!r}: {text}")
        return exc
    raise AssertionError(f"rank {rank}: expected {exc_type.__name__}")


def scenario_bad_input(argv):
    """Every bad input is a clear error naming rank and queue, and loses nothing already queued."""
    owner = size - 1
    q = rdq.Queue(comm, producers=EVERYONE, owner=owner, capacity=3 * size, shape=TYPED_SHAPE, dtype=np.int64, name="fields")
    raw = rdq.Queue(comm, producers=EVERYONE, owner=owner, capacity=2 * size, slot_bytes=64, name="bytes")
    good = 0

    def put_good():
        nonlocal good
        q.put(typed_payload(rank, good))
        good += 1

    where = (f"rank {rank}", "'fields'")
    put_good()
    expect_error(ValueError, lambda: q.put(np.zeros((4, 9), np.int64)), *where, "expected shape (4, 8)")
    expect_error(TypeError, lambda: q.put(np.zeros(TYPED_SHAPE, np.float32)), *where, "expected dtype int64")
    expect_error(ValueError, lambda: q.put(np.zeros((8, 8), np.int64)[::2]), *where, "C-contiguous")
    expect_error(TypeError, lambda: q.put([1, 2, 3]), *where, "buffer-protocol or DLPack")
    expect_error(ValueError, lambda: q.put(typed_payload(rank, 0), timeout=-1), "timeout")
    expect_error(ValueError, lambda: q.put(typed_payload(rank, 0), timeout=math.nan), "timeout")
    expect_error(ValueError, lambda: raw.put(b"x" * 65), f"rank {rank}", "'bytes'", "exceeds slot_bytes=64")
    put_good()
    ro = typed_payload(rank, good)
    ro.setflags(write=False)        # read-only input is fine: put only reads it
    q.put(ro)
    good += 1
    raw.put(b"abc")
    raw.put(memoryview(b"hello world"))
    if rank != owner:
        expect_error(rdq.RDQError, q.get, f"rank {rank}", f"only its owner, rank {owner}")
        expect_error(rdq.RDQError, lambda: list(q), f"rank {rank}")
    q.close()
    raw.close()
    expect_error(rdq.Closed, put_good, f"rank {rank}", "after close()")
    if rank == owner:
        got = drain_checked(q)
        check(got == {r: 3 for r in range(size)}, f"good messages: {got}")
        raws = sorted(bytes(m) for m in raw)
        check(raws == sorted([b"abc", b"hello world"] * size), f"raw messages {raws}")
    # free() while the owner holds a view: the window goes on every rank, the view stays valid.
    q2 = rdq.Queue(comm, producers=EVERYONE, owner=owner, capacity=size, slot_bytes=16)
    q2.put(b"pinned")
    q2.close()
    if rank == owner:
        m = q2.get()
        view = np.asarray(m)
    q2.free()
    if rank == owner:
        check(bytes(view) == b"pinned", f"view after free: {bytes(view)!r}")
        expect_error(rdq.Closed, lambda: np.asarray(m), "freed")
        m.release()
        del view, m
    expect_error(rdq.Closed, lambda: q2.put(b"x"), "freed")
    expect_error(rdq.Closed, q2.get, "freed")
    q2.free()   # a second free does nothing
    q.free()
    raw.free()
    # Construction errors: collective checks raise on every rank instead of hanging.
    expect_error(ValueError, lambda: rdq.Queue(comm, owner=size, capacity=4, slot_bytes=8), "owner")
    if size > 1:
        expect_error(ValueError, lambda: rdq.Queue(comm, owner=0, capacity=4 + (rank == 0), slot_bytes=8),
                     "same arguments on every rank", "capacity=")
    expect_error(ValueError, lambda: rdq.Queue(comm, owner=owner, capacity=1 << 40, slot_bytes=1 << 20),
                 "cannot create the queue")
    if size > 1:
        half = comm.Split(rank % 2, rank)
        inter = half.Create_intercomm(0, comm, 1 - rank % 2)
        expect_error(TypeError, lambda: rdq.Queue(inter, capacity=4, slot_bytes=8), "intracommunicator")
        inter.Free()
        half.Free()
        only_some = rdq.Queue(comm, owner=owner, capacity=4, slot_bytes=8, producers=[owner])
        if rank != owner:
            expect_error(rdq.RDQError, lambda: only_some.put(b"x"), f"rank {rank}", "not one of its producers")
        only_some.close()
        only_some.free()
    print(f"rank {rank}: ok", flush=True)


def scenario_many_queues(argv):
    """Every rank owns a queue; every rank puts into every queue."""
    count = 50
    queues = [rdq.Queue(comm, producers=EVERYONE, owner=o, capacity=size * count, shape=TYPED_SHAPE, dtype=np.int64,
                        name=f"q{o}") for o in range(size)]
    for q in queues:
        for seq in range(count):
            q.put(typed_payload(rank, seq))
        q.close()
    got = drain_checked(queues[rank])
    check(got == {r: count for r in range(size)}, f"got {got}")
    for q in queues:
        q.free()
    print(f"rank {rank}: ok", flush=True)


def scenario_torch_views(argv):
    """torch.from_dlpack shares the window; a live tensor pins its slot across many wrap-arounds."""
    import torch
    owner = size - 1
    cap = 4
    count = 400 if size > 1 else cap - 1   # a lone owner-producer cannot put more than fits
    q = rdq.Queue(comm, producers=EVERYONE, owner=owner, capacity=cap, shape=TYPED_SHAPE, dtype=np.int64)
    if rank != owner or size == 1:
        for seq in range(count):
            q.put(torch.from_numpy(typed_payload(rank, seq)))   # DLPack input path
        q.close()
    if rank == owner:
        if size > 1:
            q.close()
        pinned = []
        n = 0
        for m in q:
            t = torch.from_dlpack(m)
            check(t.data_ptr() == np.asarray(m).ctypes.data, "torch tensor does not share the window")
            check_typed(t.numpy(), m.source, m.seq)
            if len(pinned) < cap - 1 and n % 37 == 0:
                pinned.append((t, t.clone()))
            del t
            m.release()
            n += 1
        check(all(torch.equal(t, copy) for t, copy in pinned), "a live tensor was overwritten")
        check(q.stats()["outstanding"] == len(pinned), f"stats {q.stats()}")
        del pinned
        check(q.stats()["outstanding"] == 0 and q.stats()["live_exports"] == 0, f"stats {q.stats()}")
        check(n == count * max(size - 1, 1), f"received {n}")
    q.free()
    print(f"rank {rank}: ok", flush=True)


def check_batch(rows, sources, seqs, next_seq):
    for row, src, seq in zip(rows, sources.tolist(), seqs.tolist()):
        check_typed(row, src, seq)
        check(seq == next_seq.get(src, 0), f"order from {src}: {seq}")
        next_seq[src] = seq + 1


def scenario_batches(argv):
    """Zero-copy batches from many producers; one batch held across many wrap-arounds.

    The owner is the slower side (it naps after each batch), as a trainer is: producers then keep
    k messages waiting in their rings, and every batch is one producer's, zero-copy."""
    k, count = 4, 300
    owner = size - 1
    producers = [r for r in range(size) if r != owner] or [owner]
    if size == 1:
        count = 2 * k                           # a lone owner-producer cannot put more than fits
    q = rdq.Queue(comm, owner=owner, capacity=4 * k, shape=TYPED_SHAPE, dtype=np.int64, producers=producers)
    if rank in producers and rank != owner:
        for seq in range(count):
            q.put(typed_payload(rank, seq))
        q.close()
    if rank == owner:
        if rank in producers:
            for seq in range(count):
                q.put(typed_payload(rank, seq))
            q.close()
        next_seq, held, received = {}, None, 0
        while True:
            try:
                b = q.get_batch(k)
            except rdq.Closed:
                break
            rows = np.asarray(b)
            check_batch(rows, b.sources, b.seqs, next_seq)
            received += len(b)
            if held is None:
                held = (rows, rows.copy())      # pinned while the other slots cycle
            del rows
            b.release()
            time.sleep(0.002)
            say(f"consumer: {received} received")
        check(received == count * len(producers), f"received {received}")
        check(np.array_equal(*held), "a held batch was overwritten")
        check(q.stats()["batch_copies"] == 0, f"batches were copied: {q.stats()}")
        del held
    q.free()
    print(f"rank {rank}: ok", flush=True)


def scenario_trainers(argv):
    """Producers feed two data-parallel trainers through a QueueGroup; the trainers all-reduce with gloo."""
    import socket

    import torch
    import torch.distributed as dist
    count = 200
    trainers = [size - 2, size - 1]
    roles = rdq.Roles(comm, "train" if rank in trainers else "sim")
    check(roles.ranks("train") == trainers, f"roles {roles.names}")
    group = rdq.QueueGroup(comm, owners=trainers, capacity=8, shape=TYPED_SHAPE, dtype=np.int64,
                           name="feed")   # producers: by default the ranks that own no queue
    check(all(q.producers == tuple(roles.ranks("sim")) for q in group.queues), "default group producers")
    if roles.role == "sim":
        from rdq.torch import QueueDataset
        expect_error(rdq.RDQError, lambda: QueueDataset(group.queues[0]), f"rank {rank}", "only its owner")
        expect_error(rdq.RDQError, group.get, f"rank {rank}", "owns none")
        for seq in range(count):
            group.put(typed_payload(rank, seq))
        group.close()
    else:
        got = {}
        for m in group:
            with m:
                a = np.asarray(m).copy()
                check_typed(a, m.source, int(a[0, 1]))   # seq in the payload counts over both queues
                check(m.seq == got.get(m.source, 0), f"order from {m.source}")
                got[m.source] = m.seq + 1
        say(f"trainer: end of stream after {sum(got.values())}")
        port = None
        if roles.comm.Get_rank() == 0:
            with socket.socket() as sock:      # a free port on loopback for the gloo rendezvous
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        port = roles.comm.bcast(port)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                rank=roles.comm.Get_rank(), world_size=roles.comm.Get_size())
        total = torch.tensor([sum(got.values())])
        dist.all_reduce(total)
        dist.destroy_process_group()
        check(total.item() == count * len(roles.ranks("sim")), f"all-reduced total {total.item()}")
        check(min(got.values()) > 0, f"a trainer missed a producer: {got}")
    group.free()
    roles.free()
    print(f"rank {rank}: ok ({roles.role})", flush=True)


def scenario_cython(argv):
    """Producers put from a nogil loop of a downstream extension that does `cimport rdq`."""
    sys.path.insert(0, os.environ["RDQ_DOWNSTREAM_DIR"])
    import rdq_downstream
    count = 500
    owner = size - 1
    producers = [r for r in range(size) if r != owner] or [owner]
    q = rdq.Queue(comm, owner=owner, capacity=8, shape=TYPED_SHAPE, dtype=np.int64, producers=producers)
    if rank != owner or size == 1:
        count = count if size > 1 else 8       # a lone owner-producer cannot put more than fits
        check(rdq_downstream.put_fields(q, count, rank) == count, "not all sent")
        expect_error(rdq.Closed, lambda: rdq_downstream.put_fields(q, 1, rank), f"rank {rank}", "after close()")
    else:
        q.close()
    if rank == owner:
        got = drain_checked(q)
        check(got == {p: count for p in producers}, f"got {got}")
    q.free()
    expect_error(rdq.Closed, lambda: rdq_downstream.put_fields(q, 1, rank), "freed")
    print(f"rank {rank}: ok", flush=True)


def scenario_resources(argv):
    """Thousands of queues alive at once, and queues made and freed in a loop, leak nothing."""
    def footprint():
        """Open file descriptors and resident memory (KiB) now."""
        gc.collect()
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
        return len(os.listdir("/proc/self/fd")), resident_pages * os.sysconf("SC_PAGESIZE") // 1024

    alive = int(argv[0])
    queues = [rdq.Queue(comm, producers=EVERYONE, owner=i % size, capacity=4, slot_bytes=64) for i in range(alive)]
    say(f"{alive} queues made")
    for q in queues:
        q.put(b"x")
        q.close()
    for q in queues:
        if q.owner == rank:
            check([bytes(m) for m in q] == [b"x"] * size, "lost a message")
    for q in queues:
        q.free()
    del queues
    for _ in range(200):           # warm up allocator caches before measuring
        rdq.Queue(comm, producers=EVERYONE, capacity=4, slot_bytes=4096).free()
    fds0, rss0 = footprint()
    for i in range(3000):
        with rdq.Queue(comm, producers=EVERYONE, owner=i % size, capacity=8, slot_bytes=4096) as q:
            q.put(np.full(4096, i % 256, np.uint8))
            q.close()
            if rank == q.owner:
                check(len(list(q)) == size, "lost a message")
        if i % 500 == 0:
            say(f"create/free loop: {i}")
    fds1, rss1 = footprint()
    check(fds1 == fds0, f"file descriptors leaked: {fds0} -> {fds1}")
    check(rss1 - rss0 < 20 * 1024, f"memory grew by {(rss1 - rss0) // 1024} MiB over 3000 queues")
    print(f"rank {rank}: ok: {alive} queues at once; 3000 made and freed: fds {fds0} -> {fds1}, "
          f"RSS {rss0 // 1024} -> {rss1 // 1024} MiB", flush=True)


def scenario_fail(argv):
    """A rank raises mid-stream; `python -m mpi4py` must end the whole job (the test expects failure)."""
    who = argv[0]                              # "producer" or "consumer"
    owner = size - 1
    with rdq.Queue(comm, producers=EVERYONE, owner=owner, capacity=2, shape=TYPED_SHAPE, dtype=np.int64) as q:
        if rank != owner:
            for seq in range(10_000):
                q.put(typed_payload(rank, seq))   # blocks on the full ring once the consumer is gone
                if who == "producer" and rank == 0 and seq == 50:
                    raise RuntimeError(f"producer rank {rank} failed on purpose")
            q.close()
        else:
            q.close()
            for n, m in enumerate(q):
                m.release()
                if who == "consumer" and n == 50:
                    time.sleep(0.5)            # let the producers block on the full ring
                    raise RuntimeError(f"consumer rank {rank} failed on purpose")


# --- the multi-ring protocol (docs/protocol.md) ----------------------------------------------

def scenario_natural_loop(argv):
    """What a new user writes: default producers (everyone but the owner), views kept past the
    loop, producers that forget close() (free() closes for them), the with block freeing."""
    owner = size - 1
    with rdq.Queue(comm, owner=owner, capacity=4, shape=TYPED_SHAPE, dtype=np.int64) as q:
        check(q.producers == tuple(r for r in range(size) if r != owner) or (owner,), f"{q.producers}")
        if rank != owner:
            for seq in range(50):
                q.put(typed_payload(rank, seq))
            if rank % 2:
                q.close()            # the even ranks forget: leaving the with block closes them
        else:
            got = {}
            for m in q:
                with m:
                    x = np.asarray(m)          # outlives the loop and the with block
                    check_typed(x.copy(), m.source, m.seq)
                    got[m.source] = got.get(m.source, 0) + 1
                    last = (m.source, m.seq)
            check(got == {r: 50 for r in range(size - 1)}, f"got {got}")
    if rank == owner:
        check_typed(x.copy(), *last)                   # the last view still reads its message
    comm.Barrier()
    print(f"rank {rank}: ok ({q.transport})", flush=True)


def scenario_full_ring_others_flow(argv):
    """One producer's ring is full (the owner holds all its messages) while the others keep flowing."""
    owner, blocked, cap, count = size - 1, 0, 4, 200
    q = rdq.Queue(comm, owner=owner, capacity=cap, shape=TYPED_SHAPE, dtype=np.int64,
                  producers=range(size - 1))
    if rank == blocked:
        for seq in range(cap):
            q.put(typed_payload(rank, seq))
        say("blocked producer: ring full")
        try:
            q.put(typed_payload(rank, cap), timeout=0.3)
            check(False, "put into a full ring returned")
        except rdq.Full:
            pass
        comm.Barrier()                                   # the owner has seen everyone else's messages
        for seq in range(cap, cap + count):              # and now released the held ones
            q.put(typed_payload(rank, seq))
        q.close()
    elif rank != owner:
        for seq in range(count):
            q.put(typed_payload(rank, seq))
        q.close()
    else:
        held, got = [], {r: 0 for r in range(size - 1)}
        while sum(got.values()) - got[blocked] < count * (size - 2) or got[blocked] < cap:
            m = q.get()
            check_typed(np.asarray(m), m.source, m.seq)
            check(m.seq == got[m.source], f"order: {m.source} seq {m.seq}, want {got[m.source]}")
            got[m.source] += 1
            if m.source == blocked:
                held.append(m)                            # the blocked producer's ring stays full
            else:
                m.release()
        say(f"owner: others done while holding {len(held)}")
        comm.Barrier()
        for m in held:
            m.release()
        for m in q:
            with m:
                check_typed(np.asarray(m), m.source, m.seq)
                check(m.seq == got[m.source], "order after release")
                got[m.source] += 1
        check(got == {r: count + (cap if r == blocked else 0) for r in range(size - 1)}, f"got {got}")
    if rank not in (owner, blocked):
        comm.Barrier()
    q.free()
    print(f"rank {rank}: ok ({q.transport})", flush=True)


def scenario_owner_computes(argv):
    """Producers whose rings have room complete their puts while the owner computes with numpy,
    making no rdq or MPI call for 2 s: a put must not need the owner."""
    owner, cap, busy = size - 1, 64, 2.0
    q = rdq.Queue(comm, owner=owner, capacity=cap, shape=(64, 64), dtype=np.float32,
                  producers=range(size - 1))
    x = np.ones((64, 64), np.float32)
    comm.Barrier()
    if rank == owner:
        data, t0 = np.random.default_rng(0).random(1 << 20), time.monotonic()
        while time.monotonic() - t0 < busy:
            np.sort(data)                                 # no MPI call in here
        q.close()
        received = 0
        for m in q:
            m.release()
            received += 1
        check(received == cap * (size - 1), f"received {received} messages")
    else:
        time.sleep(0.2)                                   # the owner is computing by now
        longest = 0.0
        for _ in range(cap - 1):
            t = time.monotonic()
            q.put(x)
            longest = max(longest, time.monotonic() - t)
        say(f"producer: longest put {longest * 1e3:.1f} ms")
        # a put that needed the owner would have waited for the rest of its 2 s computation
        check(longest < busy / 2, f"a put took {longest:.3f} s while the owner computed {busy} s")
        # F8: bounded waits are bounded while the owner computes, the ring now full
        q.put(x)
        overshoot = {}
        for what, call, bound in (("block=False", lambda: q.put(x, block=False), 0.0),
                                  ("timeout=0.2", lambda: q.put(x, timeout=0.2), 0.2)):
            t = time.monotonic()
            expect_error(rdq.Full, call, "no free slot")
            overshoot[what] = time.monotonic() - t - bound
        t = time.monotonic()
        q.close()
        overshoot["close"] = time.monotonic() - t
        say(f"producer: bounded waits overshot by {overshoot}")
        check(max(overshoot.values()) < 0.5, f"bounded waits overshot their bound: {overshoot}")
        print(f"rank {rank}: longest put {longest * 1e3:.2f} ms while the owner computed; bounded waits "
              f"overshot by at most {max(overshoot.values()) * 1e3:.1f} ms", flush=True)
    q.free()
    print(f"rank {rank}: ok ({q.transport})", flush=True)


def scenario_more_producers_than_capacity(argv):
    """capacity is per producer: a capacity of 1 with many producers is a ring of 1 slot each."""
    owner, count = 0, 100
    q = rdq.Queue(comm, owner=owner, capacity=1, shape=TYPED_SHAPE, dtype=np.int64,
                  producers=[r for r in range(size) if r != owner] or [owner])
    if rank != owner or size == 1:
        for seq in range(count):
            q.put(typed_payload(rank, seq), block=size > 1)
            if size == 1:
                with q.get() as m:
                    check_typed(np.asarray(m), m.source, m.seq)
        q.close()
    if rank == owner:
        got = {}
        for m in q:
            with m:
                check_typed(np.asarray(m), m.source, m.seq)
                check(m.seq == got.get(m.source, 0), "order")
                got[m.source] = m.seq + 1
        check(size == 1 or got == {r: count for r in range(1, size)}, f"got {got}")
    q.free()
    print(f"rank {rank}: ok ({q.transport})", flush=True)


def scenario_lockstep_batches(argv):
    """Producers that put fewer than k messages each and then wait for the trainer (a lock-step
    coupling): get_batch(k) must mix producers (one counted copy) instead of waiting forever for one."""
    owner, k, steps = size - 1, 8, 5
    per_step = max(1, k // (size - 1))                    # k in all, fewer than k from each producer
    q = rdq.Queue(comm, owner=owner, capacity=k, shape=TYPED_SHAPE, dtype=np.int64, producers=range(size - 1))
    next_seq = {}
    for step in range(steps):
        if rank != owner:
            for i in range(per_step):
                q.put(typed_payload(rank, step * per_step + i))
        else:
            got = 0
            while got < per_step * (size - 1):
                with q.get_batch(min(k, per_step * (size - 1) - got)) as b:
                    check_batch(np.asarray(b), b.sources, b.seqs, next_seq)
                    got += len(b)
            say(f"trainer: step {step}")
        comm.Barrier()                                    # the producers wait for the trainer's step
    if rank == owner:
        copies = q.stats()["batch_copies"]
        check(size == 2 or copies >= steps, f"{copies} copied batches in {steps} mixed steps")
        print(f"rank {rank}: {steps} lock-step rounds of {per_step} x {size - 1} messages, "
              f"{copies} copied batches", flush=True)
    else:
        q.close()
    if rank == owner:
        check(sum(1 for _ in q) == 0, "messages left after the lock-step rounds")
    q.free()
    print(f"rank {rank}: ok ({q.transport})", flush=True)


def scenario_more(argv):
    """put(more=True): staged messages arrive once flush(), a put without more or close()
    completes them; flush() and more are harmless where nothing is staged, and flush() names
    the rank and queue when it cannot be called."""
    owner = size - 1
    q = rdq.Queue(comm, owner=owner, capacity=8, shape=TYPED_SHAPE, dtype=np.int64, name="more")
    expected = {r: 0 for r in range(size - 1)}

    def take(n):
        for _ in range(n):
            with q.get(block=False) as m:      # already complete: no waiting
                check_typed(np.asarray(m).copy(), m.source, m.seq)
                check(m.seq == expected[m.source], f"order: {m.source} {m.seq}")
                expected[m.source] += 1

    if rank != owner:
        for seq in range(5):
            q.put(typed_payload(rank, seq), more=True)
        q.flush()
        q.flush()                                # nothing staged: returns at once
    comm.Barrier()
    if rank == owner:
        take(5 * (size - 1))
        expect_error(rdq.RDQError, q.flush, f"rank {rank}", "'more'", "producers")
    comm.Barrier()
    if rank != owner:
        for seq in range(5, 7):
            q.put(typed_payload(rank, seq), more=True)
        q.put(typed_payload(rank, 7))            # without more: completes the two before it too
    comm.Barrier()
    if rank == owner:
        take(3 * (size - 1))
    comm.Barrier()
    if rank != owner:
        for seq in range(8, 11):
            q.put(typed_payload(rank, seq), more=True)
        q.close()                                # completes the staged run, then ends the stream
        q.flush()                                # after close: nothing to do
    else:
        for m in q:
            with m:
                check(m.seq == expected[m.source], f"order: {m.source} {m.seq}")
                expected[m.source] += 1
        check(expected == {r: 11 for r in range(size - 1)}, f"got {expected}")
    q.free()
    expect_error(rdq.Closed, q.flush, f"rank {rank}", "'more'", "freed")
    print(f"rank {rank}: ok ({q.transport})", flush=True)


MPI_CALLS = ("puts", "gets", "flushes", "syncs", "atomics")


def mpi_calls():
    """What the PMPI shim (tests/pmpi/mpi_calls.c, in LD_PRELOAD) has counted in this process."""
    import ctypes
    out = (ctypes.c_int64 * len(MPI_CALLS))()
    ctypes.CDLL(None).rdq_mpi_calls(out)
    return dict(zip(MPI_CALLS, out))


def scenario_mpi_calls(argv):
    """The MPI calls a message costs in steady state, counted by MPI itself (PMPI) and by stats().

    The producer puts in rounds of half its ring and the owner takes each round before the next
    one, so it always keeps up: the steady state of a put is then exactly its own cost.  With
    "more", each round is 32 put(more=True) and a flush(): one staged run."""
    nbytes, rounds = int(argv[0]), 16
    staged = argv[1:] == ["more"] and nbytes <= 16384   # rdq's CHECKED_MAX: larger ones never stage
    owner, cap, half = 1, 64, 32
    q = rdq.Queue(comm, owner=owner, capacity=cap, slot_bytes=max(nbytes, 8), producers=[0])
    x = np.full(nbytes, 7, np.uint8)
    before = stats_before = None
    for r in range(rounds):
        if r == 2:                                       # past the first lap of the ring
            before, stats_before = mpi_calls(), q.stats()
        if rank == 0:
            for _ in range(half):
                q.put(x, more=bool(argv[1:]))
            q.flush()
        comm.Barrier()
        if rank == owner:
            q.get_batch(half).release()
        comm.Barrier()
    used = {k: v - before[k] for k, v in mpi_calls().items()}
    stats = {k: q.stats()[k] - stats_before[k] for k in ("mpi_puts", "mpi_gets", "mpi_flushes", "mpi_syncs")}
    messages = (rounds - 2) * half
    print(f"rank {rank} ({'producer' if rank == 0 else 'owner'}, {q.transport}, {nbytes} B): "
          f"{messages} messages: MPI saw {used}; stats() {stats}", flush=True)
    check(used["atomics"] == 0, f"MPI atomics on the data path: {used}")
    check([used[k] for k in ("puts", "gets", "flushes", "syncs")] == list(stats.values()),
          f"stats() {stats} disagrees with what MPI saw {used}")
    if q.transport == "shm":
        check(used == dict.fromkeys(MPI_CALLS, 0), f"shm made one-sided MPI calls: {used}")
    elif rank == 0 and staged:
        # a run of consecutive slots and meta records: one MPI_Put of each, one flush
        check(used["puts"] == 2 * (rounds - 2), f"{used['puts']} puts for {rounds - 2} staged runs")
        check(used["flushes"] == rounds - 2, f"{used['flushes']} flushes for {rounds - 2} staged runs")
        check(used["gets"] <= 2 * (rounds - 2), f"{used['gets']} credit reads for {rounds - 2} rounds")
    elif rank == 0:
        flushes = 1 if nbytes <= 16384 else 2                   # rdq's CHECKED_MAX
        check(used["puts"] == 2 * messages, f"{used['puts']} puts for {messages} messages")
        check(used["flushes"] == flushes * messages, f"{used['flushes']} flushes for {messages} messages")
        check(used["gets"] <= 2 * (rounds - 2), f"{used['gets']} credit reads for {rounds - 2} rounds")
    else:
        check(used == dict.fromkeys(MPI_CALLS, 0), f"the owner made one-sided MPI calls to read: {used}")
    q.free()


def main(scenarios):
    """Run scenarios[f"scenario_{argv[1]}"] (a module's globals()) with the rest of the command line."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)   # the launcher asks for stacks on timeout
    name = sys.argv[1]
    say(f"starting {name} {' '.join(sys.argv[2:])}")
    scenarios[f"scenario_{name}"](sys.argv[2:])
    say("done")


if __name__ == "__main__":
    main(globals())

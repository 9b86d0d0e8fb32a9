"""The systems the benchmark compares, each as both ends of a stream of fixed-size messages.

A stream is opened collectively on an MPI communicator: its last rank consumes, every other rank
produces.  MPI launches and times every system; it carries the data only for rdq and the mpi4py
baselines.  Each class is written the way a user of that system would write it, with its
defaults, except where a comment says otherwise.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from time import sleep

import numpy as np
from mpi4py import MPI

ROOT = Path(__file__).resolve().parent.parent
BATCH = 32          # messages per rdq batch get and per Redis pipeline


class Stream:
    """One rank's end of a stream of `size`-byte uint8 messages, `depth` of them in flight.

    Producers call put / put_many, then end(); the consumer calls get / get_many; every rank
    calls close().  A system whose consumer cannot tell that a message arrived sets
    timed_on = "producer": the producers' loop is then timed, and it must only return once its
    messages are at the consumer.
    """
    timed_on = "consumer"

    def __init__(self, comm, size, depth):
        self.comm, self.size, self.depth = comm, size, depth
        self.consumer = comm.size - 1
        self.is_consumer = comm.rank == self.consumer
        self.producers = comm.size - 1

    def put(self, buf):
        raise NotImplementedError

    def put_many(self, buf, n):
        put = self.put
        for _ in range(n):
            put(buf)

    def get(self):
        """Receive one message and let it go."""
        raise NotImplementedError

    def get_many(self, n):
        get = self.get
        for _ in range(n):
            get()

    def end(self):
        """A producer's end of stream, after its last put."""

    def sync(self):
        """Every rank, after each measurement: a barrier that sleeps while it waits (MPICH's
        Barrier spins, and a spinning idle rank slows the working ones on a 2-core machine)."""
        req = self.comm.Ibarrier()
        while not req.Test():
            sleep(1e-3)

    def close(self):
        """Collective teardown."""


class RdqStream(Stream):
    """rdq.Queue owned by the consumer; Python put/get, batch get, or the Cython nogil put;
    more: each put of a producer's loop says more follow (put(more=True)), then one flush()."""

    def __init__(self, comm, size, depth, batch=False, cython=False, more=False):
        super().__init__(comm, size, depth)
        import rdq
        self.q = rdq.Queue(comm, owner=self.consumer, capacity=depth, shape=(size,), dtype="uint8",
                           producers=range(self.consumer), name=f"bench-{size}")
        self.transport = self.q.transport
        self.put = self.q.put
        # a batch of a quarter ring at most, so the producer fills one part while the consumer holds another
        self.batch = min(BATCH, max(1, depth // 4)) if batch else 0
        self.put_nogil = build_downstream(comm).put_many if cython else None
        self.more = more

    def put_many(self, buf, n):
        if self.put_nogil is not None:
            self.put_nogil(self.q, buf, n, self.more)
        elif self.more:
            put = self.q.put
            for _ in range(n):
                put(buf, more=True)
            self.q.flush()
        else:
            super().put_many(buf, n)

    def get(self):
        self.q.get().release()

    def get_many(self, n):
        if not self.batch:
            return super().get_many(n)
        get_batch = self.q.get_batch
        while n > 0:
            k = min(self.batch, n)
            get_batch(k).release()
            n -= k

    def end(self):
        self.q.close()

    def close(self):
        self.q.free()


def build_downstream(comm):
    """The `cimport rdq` test extension (tests/downstream), imported on every rank: its put_many
    is a nogil loop of put_nogil.  Rank 0 builds it once per rdq build and Python (a folder named
    by a hash of those and of its sources; about 15 s on 2 cores, so not once per job)."""
    import rdq._core
    sources = sorted((ROOT / "tests" / "downstream").iterdir()) + sorted((ROOT / "rdq").glob("*.pxd"))
    key = hashlib.sha1(repr((sys.executable, rdq._core.__file__, os.stat(rdq._core.__file__).st_mtime_ns,
                             [(p.name, p.read_bytes()) for p in sources if p.is_file()])).encode()).hexdigest()
    where = Path(tempfile.gettempdir()) / f"rdq-bench-downstream-{key[:16]}"
    if comm.rank == 0 and not where.exists():
        build = Path(tempfile.mkdtemp(prefix="rdq-bench-downstream-"))
        shutil.copytree(ROOT / "tests" / "downstream", build, dirs_exist_ok=True)
        mpicc = Path(sys.executable).with_name("mpicc")
        # The build imports rdq (and so MPI) in a child: keep it out of this job's process manager.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PMI", "HYDRA", "HYDI", "OMPI_", "PMIX"))}
        env["CC"] = str(mpicc) if mpicc.exists() else "mpicc"
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=build, env=env,
                       check=True, capture_output=True)
        try:
            build.rename(where)      # whole or not at all: a job killed mid-build leaves no half
        except OSError:              # another run built it meanwhile
            shutil.rmtree(build, ignore_errors=True)
    comm.Barrier()
    sys.path.insert(0, str(where))
    import rdq_downstream
    return rdq_downstream


class SendRecvStream(Stream):
    """mpi4py's buffer-based Send / Recv, one reused buffer each side.  The consumer receives from
    the producers in turn (each sends the same count): with MPI.ANY_SOURCE, MPICH 5.0.2's network
    path (MPIR_CVAR_NOLOCAL=1) hung here even for 1000 messages of 64 B between two ranks."""

    def __init__(self, comm, size, depth):
        super().__init__(comm, size, depth)
        self.recv_buf = np.empty(size, np.uint8)
        self.turn = 0

    def put(self, buf):
        self.comm.Send(buf, self.consumer)

    def put_many(self, buf, n):
        send, dest = self.comm.Send, self.consumer
        for _ in range(n):
            send(buf, dest)

    def get(self):
        self.comm.Recv(self.recv_buf, self.turn)
        self.turn = (self.turn + 1) % self.producers

    def get_many(self, n):
        recv, rbuf, p = self.comm.Recv, self.recv_buf, self.producers
        for i in range(self.turn, self.turn + n):
            recv(rbuf, i % p)
        self.turn = (self.turn + n) % p


class RmaByHandStream(Stream):
    """What a user writes by hand with mpi4py: one MPI_Win_lock / MPI_Put / MPI_Win_unlock per
    message into a ring of slots in the consumer's window, each producer in slots of its own.
    It has no flow control and no arrival notice, so it is a lower bound on the cost of a
    correct hand-written queue; its rate is timed on the producers (data is at the target when
    unlock returns)."""
    timed_on = "producer"

    def __init__(self, comm, size, depth):
        super().__init__(comm, size, depth)
        self.win = MPI.Win.Allocate(size * depth if self.is_consumer else 0, 1, comm=comm)
        self.slots = max(1, depth // self.producers)
        self.first = (comm.rank * self.slots) % depth
        self.next = 0

    def put(self, buf):
        win, target = self.win, self.consumer
        win.Lock(target, MPI.LOCK_SHARED)
        win.Put(buf, target, (self.first + self.next) * self.size)
        win.Unlock(target)
        self.next = (self.next + 1) % self.slots

    def sync(self):
        # MPICH grants a passive-target lock only while the target makes MPI progress; a
        # spinning barrier gives it the most, so this baseline is measured at its best.
        self.comm.Barrier()

    def close(self):
        self.win.Free()


class CopyLimit(Stream):
    """The one-copy limit: numpy.copyto into a rotating destination as large as rdq's ring
    (depth x size), on the producer alone."""
    timed_on = "producer"

    def __init__(self, comm, size, depth):
        super().__init__(comm, size, depth)
        # ones, not empty: every page is touched before timing
        self.ring = np.ones((depth, size), np.uint8) if not self.is_consumer else None
        self.next = 0

    def put(self, buf):
        np.copyto(self.ring[self.next], buf)
        self.next = (self.next + 1) % self.depth


class ZmqStream(Stream):
    """pyzmq PUSH (producers connect) -> PULL (consumer binds), zero-copy frames
    (copy=False both ways; pyzmq copies frames below its copy threshold itself), default
    high-water marks (1000 messages each side)."""

    def __init__(self, comm, size, depth, transport):
        super().__init__(comm, size, depth)
        import zmq
        self.ctx = zmq.Context()
        self.tmp = None
        if self.is_consumer:
            self.sock = self.ctx.socket(zmq.PULL)
            if transport == "tcp":
                port = self.sock.bind_to_random_port("tcp://127.0.0.1")
                address = f"tcp://127.0.0.1:{port}"
            else:
                self.tmp = tempfile.mkdtemp(prefix="rdq-bench-zmq-")
                address = f"ipc://{self.tmp}/stream"
                self.sock.bind(address)
        else:
            self.sock = self.ctx.socket(zmq.PUSH)
            address = None
        address = comm.bcast(address, root=self.consumer)
        if not self.is_consumer:
            self.sock.connect(address)
        comm.Barrier()

    def put(self, buf):
        self.sock.send(buf, copy=False)

    def put_many(self, buf, n):
        send = self.sock.send
        for _ in range(n):
            send(buf, copy=False)

    def get(self):
        self.sock.recv(copy=False)

    def get_many(self, n):
        recv = self.sock.recv
        for _ in range(n):
            recv(copy=False)

    def close(self):
        self.sock.close(linger=0 if self.is_consumer else None)
        self.ctx.term()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


class RedisStream(Stream):
    """redis-py against the redis-server the bench started ($RDQ_BENCH_REDIS = host:port), the
    database-staging approach: producers RPUSH onto one list, the consumer BLPOPs.  Pipelined:
    producers send BATCH RPUSHes per round trip, the consumer LPOPs up to BATCH at a time.
    Redis has no flow control: a lagging consumer lets the list grow in the server."""
    KEY = "rdq-bench"

    def __init__(self, comm, size, depth, pipelined):
        super().__init__(comm, size, depth)
        import redis
        host, port = os.environ["RDQ_BENCH_REDIS"].rsplit(":", 1)
        self.db = redis.Redis(host=host, port=int(port))
        self.pipelined = pipelined
        comm.Barrier()

    def put(self, buf):
        self.db.rpush(self.KEY, buf.data)

    def put_many(self, buf, n):
        if not self.pipelined:
            return super().put_many(buf, n)
        data = buf.data
        while n > 0:
            k = min(BATCH, n)
            pipe = self.db.pipeline(transaction=False)
            for _ in range(k):
                pipe.rpush(self.KEY, data)
            pipe.execute()
            n -= k

    def get(self):
        self.db.blpop(self.KEY)

    def get_many(self, n):
        if not self.pipelined:
            return super().get_many(n)
        while n > 0:
            got = self.db.lpop(self.KEY, min(BATCH, n))
            if got:
                n -= len(got)
            else:
                self.db.blpop(self.KEY)   # wait for data, and take one message
                n -= 1

    def close(self):
        self.db.close()


class Adios2SstStream(Stream):
    """ADIOS2's SST engine, one step per message: BeginStep / Put / EndStep on the producer,
    BeginStep / Get (into a reused array) / EndStep on the consumer.  The PyPI wheel is serial
    and its only data plane is EVPath over TCP ("WAN", sockets), advertised on 127.0.0.1 (EVPath
    listens on every interface; the bench sends only to 127.0.0.1).  Up to `depth` steps queue
    in the writer (QueueLimit), then EndStep blocks (QueueFullPolicy=Block), like rdq's ring.
    One writer per stream: there is no fan-in without an MPI build of ADIOS2."""
    COMMON = {"DataTransport": "WAN", "WANDataTransport": "sockets", "ControlTransport": "sockets",
              "MarshalMethod": "BP5", "RegistrationMethod": "File", "NetworkInterface": "lo",
              "OpenTimeoutSecs": "60"}

    def __init__(self, comm, size, depth):
        super().__init__(comm, size, depth)
        if self.producers != 1:
            raise ValueError("ADIOS2 SST from the PyPI wheel (serial): one writer per stream")
        os.environ.setdefault("ADIOS2_IP", "127.0.0.1")   # EVPath reads it once, at the first Open
        import adios2.bindings as adios2
        self.adios2 = adios2
        self.tmp = comm.bcast(tempfile.mkdtemp(prefix="rdq-bench-sst-") if self.is_consumer else None,
                              root=self.consumer)
        name = f"{self.tmp}/stream"   # the writer's contact file is name.sst
        self.adios = adios2.ADIOS()
        self.io = self.adios.DeclareIO("stream")
        self.io.SetEngine("SST")
        if self.is_consumer:
            self.io.SetParameters(dict(self.COMMON, SpeculativePreloadMode="AUTO"))
            self.out = np.empty(size, np.uint8)
            self.engine = self.io.Open(name, adios2.Mode.Read)    # waits for name.sst
        else:
            self.io.SetParameters(dict(self.COMMON, RendezvousReaderCount="1", QueueLimit=str(depth),
                                       QueueFullPolicy="Block"))
            self.var = self.io.DefineVariable("data", np.zeros(size, np.uint8), [size], [0], [size], True)
            self.engine = self.io.Open(name, adios2.Mode.Write)   # returns once the reader connected

    def put(self, buf):
        engine = self.engine
        engine.BeginStep()
        engine.Put(self.var, buf, self.adios2.Mode.Sync)   # copied: buf is free again on return
        engine.EndStep()

    def get(self):
        engine = self.engine
        status = engine.BeginStep(self.adios2.StepMode.Read, -1.0)
        if status != self.adios2.StepStatus.OK:
            raise RuntimeError(f"ADIOS2 SST BeginStep: {status}")
        engine.Get(self.io.InquireVariable("data"), self.out, self.adios2.Mode.Sync)
        engine.EndStep()

    def end(self):
        self.engine.Close()   # returns once the reader has released every step

    def close(self):
        if self.is_consumer:
            # wait for the writer's end of stream, so that it never sees its reader vanish
            status = self.engine.BeginStep(self.adios2.StepMode.Read, 60.0)
            if status != self.adios2.StepStatus.EndOfStream:
                raise RuntimeError(f"ADIOS2 SST: expected the end of stream, got {status}")
            self.engine.Close()
            shutil.rmtree(self.tmp, ignore_errors=True)


SYSTEMS = {
    "rdq": RdqStream,
    "rdq-batch": lambda comm, size, depth: RdqStream(comm, size, depth, batch=True),
    "rdq-cython": lambda comm, size, depth: RdqStream(comm, size, depth, cython=True),
    "rdq-cython-batch": lambda comm, size, depth: RdqStream(comm, size, depth, batch=True, cython=True, more=True),
    "rdq-more": lambda comm, size, depth: RdqStream(comm, size, depth, more=True),
    "copy": CopyLimit,
    "sendrecv": SendRecvStream,
    "rma-by-hand": RmaByHandStream,
    "zmq-ipc": lambda comm, size, depth: ZmqStream(comm, size, depth, "ipc"),
    "zmq-tcp": lambda comm, size, depth: ZmqStream(comm, size, depth, "tcp"),
    "redis": lambda comm, size, depth: RedisStream(comm, size, depth, pipelined=False),
    "redis-pipelined": lambda comm, size, depth: RedisStream(comm, size, depth, pipelined=True),
    "adios2-sst": Adios2SstStream,
}

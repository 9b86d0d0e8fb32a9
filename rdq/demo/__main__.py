"""In-situ training: heat-equation simulations stream into a surrogate model's training.

    mpiexec -n 3 python -m rdq.demo [options]

The last rank trains, every other rank simulates.  Each simulation rank runs the 2D heat
equation with its own random initial conditions and diffusivities, and puts every
(u_t, diffusivity, u_{t+horizon}) sample into one rdq buffer owned by the trainer:

- `--buffer fifo` (default): an rdq.Queue.  A Bernoulli sampling policy on the producer
  leaves part of the samples out before any data moves; a full queue makes the simulation
  wait for the trainer (backpressure).  The trainer learns from zero-copy batches, each
  message once, until every simulation has closed the queue.
- `--buffer reservoir` or `window`: an rdq.ReplayBuffer, whose puts never wait.  The
  trainer learns from random batches of what is resident while the simulations run, then
  `--passes` more passes over the final buffer.

Then the trainer validates on fresh trajectories against the "no change" baseline and
reports.  `--seconds` runs the simulations until a deadline instead of for `--steps` steps,
so that buffers can be compared at equal wall time (bench/replay_compare.py does).
"""
import argparse
import sys
import time
import traceback

import numpy as np
from mpi4py import MPI

import rdq
from rdq.demo.heat import HeatSimulation

QUEUE_BATCHES = 8       # FIFO capacity in batches: a multiple of the batch size keeps batches zero-copy
REPLAY_CAPACITY = 1024  # replay buffer slots per producer (12 KiB each at the default grid)
BUFFERS = ("fifo", "reservoir", "window")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="mpiexec -n N python -m rdq.demo",
        description="In-situ training demo: N-1 heat-equation simulation ranks stream samples through "
                    "an rdq queue or replay buffer into a CNN surrogate trained on the last rank (N >= 2).",
        epilog="End of stream: with --buffer fifo the trainer stops once every simulation has closed the "
               "queue and it has trained on every message that was sent, each once.  With a replay buffer "
               "it trains on random batches of what is resident while the simulations run (a rank that "
               "has put fewer than --capacity samples has all of them resident); once every simulation "
               "has closed, the buffer no longer changes, and the trainer draws --passes more passes over "
               "it (ceil(passes x resident / batch-size) batches), then stops.  The learning rate decays "
               "along a cosine over the expected training: the stream's messages (--steps) or time "
               "(--seconds), and with a replay buffer those passes after it.")
    sim = parser.add_argument_group("simulation")
    sim.add_argument("--steps", type=int, default=12000,
                     help="time steps per simulation rank (default: %(default)s)")
    sim.add_argument("--seconds", type=float, default=None,
                     help="run every simulation rank for this many seconds of wall time instead of --steps "
                          "time steps: a deadline, so that runs with different buffers take equal time (a FIFO "
                          "put still waiting at the deadline gives up, and the simulation closes)")
    sim.add_argument("--grid", type=int, default=32, help="grid points per side (default: %(default)s)")
    sim.add_argument("--horizon", type=int, default=8,
                     help="time steps between a sample's input and its target (default: %(default)s)")
    sim.add_argument("--restart-every", type=int, default=64,
                     help="time steps before a simulation restarts from a new random state and "
                          "diffusivity (default: %(default)s)")
    buf = parser.add_argument_group("buffer")
    buf.add_argument("--buffer", choices=BUFFERS, default="fifo",
                     help="fifo: an rdq.Queue; the simulations wait while it is full, and the trainer learns "
                          "from every message it receives, once.  reservoir: an rdq.ReplayBuffer keeping a "
                          "uniform sample of each simulation's whole stream; window: one keeping each "
                          "simulation's newest samples.  A replay buffer's put never waits; the trainer "
                          "draws random batches of what is resident (default: %(default)s)")
    buf.add_argument("--capacity", type=int, default=None,
                     help=f"slots per simulation rank: fifo default {QUEUE_BATCHES} x --batch-size (a multiple "
                          f"of the batch size keeps batches zero-copy); reservoir and window default "
                          f"{REPLAY_CAPACITY} (a replay buffer is the trainer's data set: it holds "
                          f"N-1 x capacity samples)")
    buf.add_argument("--sample-p", type=float, default=None,
                     help="fifo only: probability that a producer sends a sample, rdq.sampling.Bernoulli "
                          "(default: 0.5)")
    buf.add_argument("--passes", type=float, default=None,
                     help="reservoir and window only: passes over the resident samples that the trainer "
                          "draws after every simulation has closed (default: 4; simulations that never wait "
                          "finish the default --steps in seconds, and the final buffer is then the data set)")
    train = parser.add_argument_group("training")
    train.add_argument("--batch-size", type=int, default=32,
                       help="samples per training step: one zero-copy batch from the queue, or one "
                            "sample(batch-size) of the replay buffer (default: %(default)s)")
    train.add_argument("--lr", type=float, default=2e-3,
                       help="initial Adam learning rate; it decays along a cosine over the expected "
                            "training, see below (default: %(default)s)")
    train.add_argument("--hidden", type=int, default=16,
                       help="channels of the CNN's hidden layers (default: %(default)s)")
    train.add_argument("--val-trajectories", type=int, default=16,
                       help="fresh trajectories the trainer simulates for validation (default: %(default)s)")
    out = parser.add_argument_group("output")
    out.add_argument("--png", default="rdq-demo.png",
                     help="figure with the loss curve and one predicted field (default: %(default)s)")
    out.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    out.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: %(default)s)")
    args = parser.parse_args(argv)

    for name in ("steps", "grid", "horizon", "batch_size", "hidden", "val_trajectories"):
        minimum = 0 if name == "steps" else 1
        if getattr(args, name) < minimum:
            parser.error(f"--{name.replace('_', '-')} must be at least {minimum}")
    if args.restart_every <= args.horizon:
        parser.error("--restart-every must exceed --horizon")
    if args.seconds is not None and not args.seconds > 0:
        parser.error("--seconds must be positive")
    producers = MPI.COMM_WORLD.Get_size() - 1
    if args.buffer == "fifo":
        if args.passes is not None:
            parser.error("--passes is for a replay buffer (--buffer reservoir or window)")
        if args.sample_p is None:
            args.sample_p = 0.5
        if not 0 < args.sample_p <= 1:
            parser.error("--sample-p must be in (0, 1]")
        if args.capacity is None:
            args.capacity = QUEUE_BATCHES * args.batch_size
        if args.capacity < args.batch_size:
            parser.error("--capacity must be at least --batch-size")
    else:
        if args.sample_p is not None:
            parser.error("--sample-p is for --buffer fifo: a replay buffer keeps what its policy chooses")
        if args.passes is None:
            args.passes = 4.0
        if not args.passes >= 0:
            parser.error("--passes must be at least 0")
        if args.capacity is None:
            args.capacity = REPLAY_CAPACITY
        if args.capacity < 1 or args.batch_size > max(1, producers) * args.capacity:
            parser.error("--capacity x (N-1) must be at least --batch-size")
    if producers < 1:
        parser.error("needs at least 2 MPI ranks (simulations and a trainer): "
                     "mpiexec -n 3 python -m rdq.demo")
    return args


def make_buffer(args, comm, owner, producers, shape):
    """The trainer's buffer (collective): a FIFO queue with put-side sampling, or a replay buffer."""
    if args.buffer == "fifo":
        return rdq.Queue(comm, owner=owner, capacity=args.capacity, shape=shape, dtype="float32",
                         producers=producers, sample=rdq.sampling.Bernoulli(args.sample_p, seed=args.seed),
                         name="heat-samples")
    return rdq.ReplayBuffer(comm, owner=owner, capacity=args.capacity, shape=shape, dtype="float32",
                            policy=args.buffer, producers=producers, seed=args.seed, name="heat-samples")


def simulate(buf, sim, args, start):
    """A simulation rank: put every sample (the queue's sampling policy or the reservoir leaves some
    out) for --steps steps or until the --seconds deadline, then close.  Returns this rank's
    counters and how its time was spent."""
    deadline = None if args.seconds is None else start + args.seconds
    put_seconds = 0.0
    produced = 0
    try:
        for sample in sim.samples(args.steps if deadline is None else None):
            before = time.perf_counter()
            if deadline is None:
                buf.put(sample)   # one copy into the trainer's window; a FIFO put waits while the queue is full
            else:
                if before >= deadline:
                    break
                try:
                    buf.put(sample, timeout=deadline - before)   # a replay buffer's put never waits
                except rdq.Full:   # the deadline passed while the queue was full
                    put_seconds += time.perf_counter() - before
                    break
            put_seconds += time.perf_counter() - before
            produced += 1
    finally:
        buf.close()   # the trainer's stream ends only when every producer has closed
    return dict(buf.stats(), seconds=time.perf_counter() - start, put_seconds=put_seconds,
                produced=produced, steps=sim.steps_done)


def stream_report(args, buf, producer_stats, stream_seconds, trained):
    """The trainer's report on the stream: its own counters, the producers' and what it trained on."""
    produced = sum(s["produced"] for s in producer_stats)
    producer_seconds = sum(s["seconds"] for s in producer_stats)
    put_seconds = sum(s["put_seconds"] for s in producer_stats)
    report = {
        "ranks": buf.comm.Get_size(),
        "producers": len(producer_stats),
        "buffer": args.buffer,
        "capacity": args.capacity,
        "seconds": args.seconds,
        "steps_per_producer": round(np.mean([s["steps"] for s in producer_stats])),
        "grid": args.grid,
        "horizon": args.horizon,
        "batch_size": args.batch_size,
        "transport": buf.transport,
        "messages_produced": produced,
        "producer_put_fraction": put_seconds / producer_seconds if producer_seconds else 0.0,
        "producer_seconds": producer_seconds,
        "producer_put_seconds": put_seconds,
        "simulation_seconds": max(s["seconds"] for s in producer_stats),
        "stream_seconds": stream_seconds,
        "messages_trained_on": trained["rows"],
        "distinct_messages_trained_on": trained["distinct"],
        "training_steps_after_end": trained["steps_after_end"],
    }
    if args.buffer == "fifo":
        got = buf.stats()
        puts = sum(s["puts"] for s in producer_stats)
        sampled_out = sum(s["sampled_out"] for s in producer_stats)
        if got["gets"] != puts or trained["rows"] != puts or produced != puts + sampled_out:
            raise RuntimeError(f"rdq delivered {got['gets']} messages, the producers sent {puts} of {produced} "
                               f"({sampled_out} sampled out), the trainer trained on {trained['rows']}")
        report.update(
            sample_p=args.sample_p,
            messages_received=got["gets"],
            bytes_received=got["bytes_got"],
            messages_sampled_out=sampled_out,
            batch_copies=got["batch_copies"],
            full_waits=sum(s["full_waits"] for s in producer_stats),
            messages_per_second=got["gets"] / stream_seconds,
            megabytes_per_second=got["bytes_got"] / stream_seconds / 1e6,
        )
    else:
        got = buf.stats()   # the owner's view of the whole buffer: exact once every producer closed
        inserted = sum(s["inserted"] for s in producer_stats)
        skipped = sum(s["skipped"] for s in producer_stats)
        if (got["inserted"], got["skipped"], got["drawn"]) != (inserted, skipped, trained["rows"]) \
                or produced != inserted + skipped:
            raise RuntimeError(f"the replay buffer counts {got}, the producers inserted {inserted} and skipped "
                               f"{skipped} of {produced}, the trainer trained on {trained['rows']} rows")
        written = sum(s["bytes_put"] for s in producer_stats)
        seconds = report["simulation_seconds"]
        report.update(
            passes=args.passes,
            messages_inserted=inserted,
            bytes_inserted=written,
            messages_skipped=skipped,
            messages_evicted=got["evicted"],
            resident=got["resident"],
            redrawn=got["redrawn"],
            reuse=got["reuse"],
            full_waits=0,
            messages_per_second=inserted / seconds if seconds else 0.0,
            megabytes_per_second=written / seconds / 1e6 if seconds else 0.0,
        )
    return report


def expected_messages(args, sim, producers):
    """How many samples the simulations will produce, when it is known beforehand (--steps)."""
    return None if args.seconds is not None else producers * sim.samples_per_run(args.steps)


def main(argv=None):
    wall_start = time.perf_counter()
    args = parse_args(argv)
    comm = MPI.COMM_WORLD
    trainer_rank = comm.Get_size() - 1
    producers = range(trainer_rank)
    is_trainer = comm.Get_rank() == trainer_rank
    if is_trainer:
        from rdq.demo import trainer   # torch and matplotlib: on the trainer only
        model, optimizer = trainer.make_model(args)
    # One independent random stream per rank; the trainer's draws its validation trajectories,
    # so they come from a seed that no simulation rank uses.
    seeds = np.random.SeedSequence(args.seed).spawn(comm.Get_size())
    rng = np.random.default_rng(seeds[comm.Get_rank()])
    sim = HeatSimulation(rng, n=args.grid, horizon=args.horizon, restart_every=args.restart_every)

    buf = make_buffer(args, comm, trainer_rank, producers, sim.sample_shape)
    comm.Barrier()   # the simulations' clocks (--seconds) and the trainer's start together
    stream_start = time.perf_counter()
    if is_trainer:
        losses, trained = trainer.learn_from_stream(buf, model, optimizer, args, stream_start,
                                                    expected_messages(args, sim, len(producers)))
        stream_seconds = time.perf_counter() - stream_start
        producer_stats = comm.gather(None, root=trainer_rank)[:len(producers)]
        report = stream_report(args, buf, producer_stats, stream_seconds, trained)
    else:
        comm.gather(simulate(buf, sim, args, stream_start), root=trainer_rank)
    buf.free()   # collective; the trainer holds no batch any more: training dropped each after its step

    if is_trainer:
        trainer.validate_and_report(model, losses, rng, args, report)
        report["wall_seconds"] = time.perf_counter() - wall_start
        trainer.publish(report, args)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        # the other ranks would otherwise wait for this one in a collective call forever
        MPI.COMM_WORLD.Abort(1)

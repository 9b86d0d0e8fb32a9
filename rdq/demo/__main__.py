"""In-situ training: heat-equation simulations stream into a surrogate model's training.

    mpiexec -n 3 python -m rdq.demo [options]

The last rank trains, every other rank simulates.  Each simulation rank runs the 2D heat
equation with its own random initial conditions and diffusivities, and puts every
(u_t, diffusivity, u_{t+horizon}) sample into one rdq queue owned by the trainer; a
Bernoulli sampling policy on the producer leaves part of them out before any data moves.
The trainer learns a CNN surrogate of the solver from zero-copy batches while the
simulations run, until they all have closed the queue; then it validates on fresh
trajectories against the "no change" baseline and reports.
"""
import argparse
import sys
import time
import traceback

import numpy as np
from mpi4py import MPI

import rdq
from rdq.demo.heat import HeatSimulation

QUEUE_BATCHES = 8   # queue capacity in batches: a multiple of the batch size keeps batches zero-copy


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="mpiexec -n N python -m rdq.demo",
        description="In-situ training demo: N-1 heat-equation simulation ranks stream samples through "
                    "an rdq queue into a CNN surrogate trained on the last rank (N >= 2).")
    sim = parser.add_argument_group("simulation")
    sim.add_argument("--steps", type=int, default=12000,
                     help="time steps per simulation rank (default: %(default)s)")
    sim.add_argument("--grid", type=int, default=32, help="grid points per side (default: %(default)s)")
    sim.add_argument("--horizon", type=int, default=8,
                     help="time steps between a sample's input and its target (default: %(default)s)")
    sim.add_argument("--restart-every", type=int, default=64,
                     help="time steps before a simulation restarts from a new random state and "
                          "diffusivity (default: %(default)s)")
    sim.add_argument("--sample-p", type=float, default=0.5,
                     help="probability that a producer sends a sample, rdq.sampling.Bernoulli "
                          "(default: %(default)s)")
    train = parser.add_argument_group("training")
    train.add_argument("--batch-size", type=int, default=32,
                       help="samples per training step, one zero-copy batch (default: %(default)s)")
    train.add_argument("--lr", type=float, default=2e-3,
                       help="initial Adam learning rate; it decays along a cosine over the expected "
                            "stream (default: %(default)s)")
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
    if not 0 < args.sample_p <= 1:
        parser.error("--sample-p must be in (0, 1]")
    if MPI.COMM_WORLD.Get_size() < 2:
        parser.error("needs at least 2 MPI ranks (simulations and a trainer): "
                     "mpiexec -n 3 python -m rdq.demo")
    return args


def simulate(q, sim, steps):
    """A simulation rank: put every sample (the queue's sampling policy drops some), then close.
    Returns this rank's counters and how its time was spent."""
    start = time.perf_counter()
    put_seconds = 0.0
    try:
        for sample in sim.samples(steps):
            before = time.perf_counter()
            q.put(sample)   # one copy into the trainer's window; waits while the queue is full
            put_seconds += time.perf_counter() - before
    finally:
        q.close()   # the trainer's stream ends only when every producer has closed
    return dict(q.stats(), seconds=time.perf_counter() - start, put_seconds=put_seconds)


def stream_report(args, q, producer_stats, stream_seconds):
    """The trainer's report on the stream: its own counters and the producers'."""
    got = q.stats()
    puts = sum(s["puts"] for s in producer_stats)
    if got["gets"] != puts:
        raise RuntimeError(f"rdq delivered {got['gets']} messages but the producers sent {puts}")
    producer_seconds = sum(s["seconds"] for s in producer_stats)
    put_seconds = sum(s["put_seconds"] for s in producer_stats)
    return {
        "ranks": q.comm.Get_size(),
        "producers": len(producer_stats),
        "steps_per_producer": args.steps,
        "grid": args.grid,
        "horizon": args.horizon,
        "sample_p": args.sample_p,
        "transport": q.transport,
        "messages_received": got["gets"],
        "bytes_received": got["bytes_got"],
        "messages_sampled_out": sum(s["sampled_out"] for s in producer_stats),
        "batch_copies": got["batch_copies"],
        "full_waits": sum(s["full_waits"] for s in producer_stats),
        "producer_put_fraction": put_seconds / producer_seconds if producer_seconds else 0.0,
        "stream_seconds": stream_seconds,
        "messages_per_second": got["gets"] / stream_seconds,
        "megabytes_per_second": got["bytes_got"] / stream_seconds / 1e6,
    }


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

    q = rdq.Queue(comm, owner=trainer_rank, capacity=QUEUE_BATCHES * args.batch_size,
                  shape=sim.sample_shape, dtype="float32", producers=producers,
                  sample=rdq.sampling.Bernoulli(args.sample_p, seed=args.seed), name="heat-samples")
    stream_start = time.perf_counter()
    if is_trainer:
        expected = round(args.sample_p * len(producers) * sim.samples_per_run(args.steps))
        losses = trainer.learn_from_stream(q, model, optimizer, args, expected)
        stream_seconds = time.perf_counter() - stream_start
        producer_stats = comm.gather(None, root=trainer_rank)[:len(producers)]
        report = stream_report(args, q, producer_stats, stream_seconds)
    else:
        comm.gather(simulate(q, sim, args.steps), root=trainer_rank)
    q.free()   # collective; the trainer holds no batch any more: training dropped each after its step

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

"""The trainer rank's side of the demo: learn from the stream, then validate and report.

Only the trainer imports this module, and with it torch and matplotlib: the simulation
ranks start faster and stay small without them.
"""
import json
import math
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from rdq.demo.heat import HeatSimulation
from rdq.demo.report import format_report, write_png
from rdq.demo.surrogate import Surrogate, cosine_decay, train, validate
from rdq.torch import QueueDataset, ReplayDataset

FINAL_LOSS_STEPS = 20   # the reported final training loss is the mean over these last steps


def make_model(args):
    """The untrained surrogate and its optimizer, made before the stream starts: the first
    optimizer torch makes in a process takes about a second (lazy imports)."""
    torch.set_num_threads(1)   # the machine's cores are shared with the simulation ranks
    torch.manual_seed(args.seed)
    model = Surrogate(hidden=args.hidden)
    return model, torch.optim.Adam(model.parameters(), lr=args.lr)


def stream_progress(buf, args, stream_start, expected_messages):
    """The fraction of the stream done: of --seconds, or of the expected messages (--steps)."""
    if expected_messages is None:
        return lambda: (time.perf_counter() - stream_start) / args.seconds
    if args.buffer == "fifo":
        return None   # the messages trained on say it: see training_progress

    def offered():
        # what the simulations have put, as far as the trainer knows (a reservoir's skipped
        # messages show with the producer's next insert)
        if buf.ended:
            return 1.0
        stats = buf.stats()
        return (stats["inserted"] + stats["skipped"]) / expected_messages
    return offered


def training_progress(buf, args, stream_start, expected_messages, dataset):
    """progress(step): the fraction of the training done after `step` steps, for the learning-rate
    schedule (an estimate: sampling is random).  A FIFO trains on what the stream brings, so its
    progress is the stream's: over --steps, the messages trained on (p x expected); over --seconds,
    the time.  A replay buffer's training goes on after the stream, for --passes passes over what is
    resident then: its total is the steps the stream's pace predicts (step / stream fraction) plus
    that tail (a full buffer until the stream ended, then exact)."""
    stream = stream_progress(buf, args, stream_start, expected_messages)
    if args.buffer == "fifo":
        if stream is not None:
            return lambda step: stream()
        steps = max(1, math.ceil(args.sample_p * expected_messages / args.batch_size))
        return lambda step: step / steps
    full_tail = math.ceil(args.passes * len(buf.producers) * buf.capacity / args.batch_size)

    def progress(step):
        if dataset.ended_at is not None:
            return step / max(1, dataset.ended_at + dataset.final_batches)
        done = stream()
        return step / (step / done + full_tail) if done > 0 else 0.0
    return progress


def learn_from_stream(buf, model, optimizer, args, stream_start, expected_messages):
    """Train until end of stream: on zero-copy batches of the FIFO queue, each message once, or on
    batches sampled from the replay buffer (ReplayDataset: while the simulations run, then
    --passes passes over what is resident).  Returns the loss of every step, and the rows trained
    on, the distinct messages among them and the steps taken after the simulations had ended."""
    replay = args.buffer != "fifo"
    if replay:
        dataset = ReplayDataset(buf, args.batch_size, passes=args.passes)
    else:
        dataset = QueueDataset(buf, batch_size=args.batch_size)
    batches = DataLoader(dataset, batch_size=None)
    schedule = cosine_decay(optimizer, training_progress(buf, args, stream_start, expected_messages, dataset))
    total = None
    if args.buffer == "fifo" and expected_messages is not None:
        total = round(args.sample_p * expected_messages)
    rows = 0
    # Under mpiexec a rank's stderr is a pipe even in a terminal, so tqdm's disable=None would
    # always hide the bar; it stays on instead, redrawn at most once a second to keep logs short.
    with tqdm(total=total, unit="row" if replay else "msg", desc="training", mininterval=1.0,
              disable=not args.progress) as bar:
        def on_batch(size, loss):
            nonlocal rows
            rows += size
            bar.update(size)
            bar.set_postfix(loss=f"{loss:.2e}", refresh=False)
        losses = train(model, optimizer, schedule, batches, on_batch)
        bar.total = bar.n   # the expected count was an estimate: sampling is random
    if not replay:   # a queue delivers every message once
        return losses, dict(rows=rows, distinct=rows, steps_after_end=None)
    after = len(losses) - (dataset.ended_at if dataset.ended_at is not None else len(losses))
    return losses, dict(rows=rows, distinct=buf.stats()["distinct"], steps_after_end=after)


def validate_and_report(model, losses, rng, args, report):
    """Validate on fresh trajectories drawn from rng, complete the report and write the PNG."""
    sim = HeatSimulation(rng, n=args.grid, horizon=args.horizon, restart_every=args.restart_every)
    samples = torch.from_numpy(np.stack(list(sim.samples(args.val_trajectories * args.restart_every))))
    model_mse, no_change_mse, predictions = validate(model, samples)
    report.update(
        batches=len(losses),
        final_train_loss=float(np.mean(losses[-FINAL_LOSS_STEPS:])) if losses else None,
        final_loss_steps=min(FINAL_LOSS_STEPS, len(losses)),
        validation_samples=len(samples),
        validation_mse=model_mse,
        no_change_mse=no_change_mse,
        mse_ratio=model_mse / no_change_mse,
        png=args.png,
        losses=losses,
    )
    # show the sample whose u_{t+horizon} differs most from u_t: where the surrogate has most to do
    example = int((samples[:, 2] - samples[:, 0]).square().mean(dim=(1, 2)).argmax())
    write_png(args.png, losses, samples[example].numpy(), predictions[example, 0].numpy(), report)


def publish(report, args):
    """Print the report, and write it as JSON when --json asks for it."""
    print(format_report(report), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")

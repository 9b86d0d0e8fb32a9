"""The trainer rank's side of the demo: learn from the stream, then validate and report.

Only the trainer imports this module, and with it torch and matplotlib: the simulation
ranks start faster and stay small without them.
"""
import json
import math

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from rdq.demo.heat import HeatSimulation
from rdq.demo.report import format_report, write_png
from rdq.demo.surrogate import Surrogate, cosine_decay, train, validate
from rdq.torch import QueueDataset

FINAL_LOSS_STEPS = 20   # the reported final training loss is the mean over these last steps


def make_model(args):
    """The untrained surrogate and its optimizer, made before the stream starts: the first
    optimizer torch makes in a process takes about a second (lazy imports)."""
    torch.set_num_threads(1)   # the machine's cores are shared with the simulation ranks
    torch.manual_seed(args.seed)
    model = Surrogate(hidden=args.hidden)
    return model, torch.optim.Adam(model.parameters(), lr=args.lr)


def learn_from_stream(q, model, optimizer, args, expected_messages):
    """Train on zero-copy batches from q until end of stream; returns the loss of every step."""
    batches = DataLoader(QueueDataset(q, batch_size=args.batch_size), batch_size=None)
    schedule = cosine_decay(optimizer, steps=max(1, math.ceil(expected_messages / args.batch_size)))
    # Under mpiexec a rank's stderr is a pipe even in a terminal, so tqdm's disable=None would
    # always hide the bar; it stays on instead, redrawn at most once a second to keep logs short.
    with tqdm(total=expected_messages, unit="msg", desc="training", mininterval=1.0,
              disable=not args.progress) as bar:
        def on_batch(size, loss):
            bar.update(size)
            bar.set_postfix(loss=f"{loss:.2e}", refresh=False)
        losses = train(model, optimizer, schedule, batches, on_batch)
        bar.total = bar.n   # the expected count was an estimate: sampling is random
    return losses


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

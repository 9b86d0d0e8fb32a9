"""The surrogate: a small CNN that learns one `horizon`-step jump of the heat solver."""
import math

import torch
import torch.nn.functional as F
from torch import nn

# channels of a sample (see heat.py)
STATE = slice(0, 1)     # u_t
INPUTS = slice(0, 2)    # what the model sees: u_t and the diffusivity
TARGET = slice(2, 3)    # what it predicts: u_{t+horizon}


class Surrogate(nn.Module):
    """u_{t+horizon} = u_t + a learned increment, from (u_t, diffusivity) fields.

    Circular padding matches the simulation's periodic boundary, so the model is the same
    everywhere on the grid.  The last layer starts at zero: the untrained model is the
    "no change" baseline, and training has to beat it.
    """

    def __init__(self, hidden=16, layers=3, kernel=5):
        super().__init__()
        convs = []
        channels = INPUTS.stop - INPUTS.start
        for _ in range(layers - 1):
            convs += [nn.Conv2d(channels, hidden, kernel, padding=kernel // 2, padding_mode="circular"),
                      nn.GELU()]
            channels = hidden
        last = nn.Conv2d(channels, 1, kernel, padding=kernel // 2, padding_mode="circular")
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.increment = nn.Sequential(*convs, last)

    def forward(self, inputs):
        return inputs[:, STATE] + self.increment(inputs)


def cosine_decay(optimizer, progress, floor=0.05):
    """Lower the learning rate along a half cosine to `floor` times its start as the training
    goes on, then hold it: `progress(step)` says which fraction of the training is done after
    `step` steps (an estimate: the stream's length is not known exactly).  The decay calms the
    noisy last steps, so the model the stream leaves behind is reliably good."""
    def factor(step):
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(max(progress(step), 0.0), 1.0)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(model, optimizer, schedule, batches, on_batch=None):
    """One optimizer step per batch of samples, (B, 3, n, n) tensors, until `batches` ends.

    Keeps no reference to a batch once its step is done, so that zero-copy batches give
    their queue slots back.  Returns the training loss of every step.
    """
    losses = []
    for batch in batches:
        loss = F.mse_loss(model(batch[:, INPUTS]), batch[:, TARGET])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if on_batch is not None:
            on_batch(len(batch), losses[-1])
    return losses


@torch.no_grad()
def validate(model, samples, chunk=256):
    """Mean squared error of the model and of the "no change" baseline (u_{t+horizon} = u_t)
    on (N, 3, n, n) samples; also returns the model's predictions, (N, 1, n, n)."""
    predictions = torch.cat([model(part[:, INPUTS]) for part in samples.split(chunk)])
    target = samples[:, TARGET]
    model_mse = F.mse_loss(predictions, target).item()
    no_change_mse = F.mse_loss(samples[:, STATE], target).item()
    return model_mse, no_change_mse, predictions

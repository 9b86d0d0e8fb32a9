"""The demo's simulation: the 2D heat equation u_t = a * laplacian(u) on a periodic grid.

Grid units throughout (dx = dt = 1): the explicit five-point scheme is stable for a
diffusivity a < 1/4, and every trajectory draws its own a below that.  Each sample pairs
the state u_t with the state `horizon` steps later, as one float32 array of shape
(3, n, n): channel 0 is u_t, channel 1 the diffusivity as a constant field (scaled to
[0, 1]), channel 2 the target u_{t+horizon}.  A surrogate learns channel 2 from 0 and 1.
"""
from collections import deque
import itertools

import numpy as np

DIFFUSIVITY_RANGE = (0.04, 0.2)   # below the stability limit 1/4
CHANNELS = 3                      # u_t, diffusivity, u_{t+horizon}


def random_field(rng, n):
    """A sum of 3 to 8 Gaussian blobs of random sign, size and place, periodic in both axes."""
    x = np.arange(n)
    field = np.zeros((n, n))
    for _ in range(rng.integers(3, 9)):
        cy, cx = rng.uniform(0, n, size=2)
        width = rng.uniform(1.5, 4.0)
        # distances on the torus, so that blobs wrap around the edges
        dy = np.abs(x - cy)[:, None]
        dx = np.abs(x - cx)[None, :]
        dy, dx = np.minimum(dy, n - dy), np.minimum(dx, n - dx)
        field += rng.normal() * np.exp(-(dy**2 + dx**2) / (2 * width**2))
    return field


def diffusivity(sample):
    """The diffusivity a sample was simulated with, read back from its channel 1."""
    low, high = DIFFUSIVITY_RANGE
    return low + float(sample[1, 0, 0]) * (high - low)


def laplacian(u):
    """Five-point Laplacian on the periodic grid."""
    return np.roll(u, 1, 0) + np.roll(u, -1, 0) + np.roll(u, 1, 1) + np.roll(u, -1, 1) - 4 * u


class HeatSimulation:
    """One simulation: explicit time steps, restarted every `restart_every` steps with a new
    random initial condition and diffusivity, so that the stream of samples stays varied
    (otherwise every field would soon decay to its mean)."""

    def __init__(self, rng, n=32, horizon=8, restart_every=64):
        if restart_every <= horizon:
            raise ValueError(f"restart_every ({restart_every}) must exceed horizon ({horizon})")
        self.rng = rng
        self.n = n
        self.horizon = horizon
        self.restart_every = restart_every
        self.sample_shape = (CHANNELS, n, n)
        self.steps_done = 0   # time steps run so far, over every call of samples()

    def samples(self, steps=None):
        """Run `steps` time steps (None: until the caller stops iterating); after each one that
        has a state `horizon` steps back in the same trajectory, yield a (3, n, n) float32
        sample (a new array each time)."""
        low, high = DIFFUSIVITY_RANGE
        for step in (range(steps) if steps is not None else itertools.count()):
            if step % self.restart_every == 0:
                a = self.rng.uniform(low, high)
                a_channel = np.full((self.n, self.n), (a - low) / (high - low))
                u = random_field(self.rng, self.n)
                history = deque([u], maxlen=self.horizon + 1)
            u = u + a * laplacian(u)
            self.steps_done += 1
            history.append(u)
            if len(history) == self.horizon + 1:
                yield np.stack([history[0], a_channel, u]).astype(np.float32)

    def samples_per_run(self, steps):
        """How many samples `samples(steps)` yields."""
        full, rest = divmod(steps, self.restart_every)
        per_trajectory = self.restart_every - self.horizon + 1   # the first pairs the initial state
        return full * per_trajectory + max(0, rest - self.horizon + 1)

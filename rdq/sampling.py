"""Put-side sampling: decide on the producer, before any MPI traffic, whether a message is sent.

A policy is any callable ``x -> bool``; pass it as ``rdq.Queue(..., sample=policy)``.
``put`` then returns whether the message was sent, and ``stats()["sampled_out"]``
counts the rest.  An exception raised by a policy reaches ``put``'s caller and
nothing is sent.  Policies keep per-producer state: make one per queue and rank.
"""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
from mpi4py import MPI

__all__ = ["Bernoulli", "EveryNth", "RateLimit"]


class Bernoulli:
    """Send each message with probability p.

    With a seed, the decisions are reproducible per rank: the generator is seeded
    with (seed, rank in MPI.COMM_WORLD), so ranks draw independent streams.
    """

    def __init__(self, p: float, seed: Optional[int] = None) -> None:
        if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"Bernoulli: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        entropy = None if seed is None else [int(seed), MPI.COMM_WORLD.Get_rank()]
        self._rng = np.random.default_rng(entropy)

    def __call__(self, x: Any) -> bool:
        return self._rng.random() < self.p

    def __repr__(self) -> str:
        return f"Bernoulli(p={self.p})"


class EveryNth:
    """Send the first message and then every n-th."""

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"EveryNth: n must be an integer >= 1, got {n!r}")
        self.n = n
        self._seen = 0

    def __call__(self, x: Any) -> bool:
        send = self._seen % self.n == 0
        self._seen += 1
        return send

    def __repr__(self) -> str:
        return f"EveryNth({self.n})"


class RateLimit:
    """Send at most `messages_per_second` on average (a token bucket holding up to `burst`)."""

    def __init__(self, messages_per_second: float, burst: float = 1) -> None:
        if not messages_per_second > 0 or not burst >= 1:
            raise ValueError(f"RateLimit: needs messages_per_second > 0 and burst >= 1, "
                             f"got {messages_per_second!r}, {burst!r}")
        self.rate = float(messages_per_second)
        self.burst = float(burst)
        self._tokens = self.burst
        self._last = time.monotonic()

    def __call__(self, x: Any) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def __repr__(self) -> str:
        return f"RateLimit({self.rate:g}/s)"

"""Retry delays: exponential backoff with jitter."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int,
    base_s: float,
    cap_s: float,
    *,
    jitter: float = 0.2,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number ``attempt`` (1 = first retry).

    ``min(base * 2^(attempt-1), cap) * (1 + jitter * U(-1, 1))``: doubling, capped, and spread
    by +/- ``jitter`` so that jobs failed together do not retry together.
    """
    r = (rng or random).uniform(-1.0, 1.0)
    raw = min(base_s * (2 ** max(attempt - 1, 0)), cap_s)
    return max(0.0, raw * (1.0 + jitter * r))

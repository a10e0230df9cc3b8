"""A rotation over n items with a fixed budget per tick: tick t takes items ``t mod P, t mod P + P, ...``
with period ``P = ceil(n / budget)``, so each tick takes at most ``budget`` items spread evenly over the
whole range (one every P), and ticks ``t .. t + P - 1`` take every item exactly once.

Verification uses it twice: over operators (replays) and over shards (file integrity), so whatever the
dataset size a tick costs its budget and the whole dataset is covered every P ticks.
"""

from __future__ import annotations

__all__ = ["rotation_period", "rotation_sample"]


def rotation_period(n_items: int, budget: int) -> int:
    """Ticks needed to take every one of ``n_items`` items at ``budget`` items per tick."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    return max(1, -(-n_items // budget))


def rotation_sample(n_items: int, budget: int, tick: int) -> list[int]:
    """The items (0 .. n_items-1) taken at ``tick``: at most ``budget``, evenly spaced."""
    period = rotation_period(n_items, budget)
    return list(range(tick % period, n_items, period))

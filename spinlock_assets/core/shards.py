"""Shard arithmetic: a dataset of N operators is cut into shards of ``shard_size`` consecutive operators.

Keys name the inclusive operator range, zero-padded so lexical order is numeric order:
operators 0..15 are ``ops-000000-000015``. Growing N appends shards and renames none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_OPERATORS", "ShardRange", "parse_shard_key", "shard_ranges"]

MAX_OPERATORS = 1_000_000  # six digits in the key; more would rename every existing shard
_KEY = re.compile(r"^ops-(\d{6})-(\d{6})$")


@dataclass(frozen=True, order=True)
class ShardRange:
    """Operators ``start .. stop-1``."""

    start: int
    stop: int

    @property
    def key(self) -> str:
        return f"ops-{self.start:06d}-{self.stop - 1:06d}"

    @property
    def bounds(self) -> tuple[int, int]:
        """``(start, stop)``, stop exclusive."""
        return self.start, self.stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        return iter(range(self.start, self.stop))


def shard_ranges(n_operators: int, shard_size: int) -> list[ShardRange]:
    """All shards of a dataset; ``n_operators`` is a multiple of ``shard_size`` (the spec enforces it)."""
    return [
        ShardRange(start, min(start + shard_size, n_operators)) for start in range(0, n_operators, shard_size)
    ]


def parse_shard_key(key: str) -> ShardRange:
    """The operator range a key names; a malformed key is a ``ValueError`` that shows the expected form."""
    match = _KEY.match(key)
    if not match or int(match.group(2)) < int(match.group(1)):
        raise ValueError(
            f"shard key must look like 'ops-000000-000015' (first and last operator); got {key!r}"
        )
    return ShardRange(int(match.group(1)), int(match.group(2)) + 1)

"""Seeds derived from (root seed, global operator index, stream), never from a process-local hash.

``numpy.random.SeedSequence`` mixes its entropy and spawn key with a fixed, documented hash, so a seed
depends only on those integers: the same in every process, on every platform, whatever N or the shard
size is. The stream codes below are part of the data format: never renumber them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["STREAMS", "OperatorSeeds", "derive_seed", "operator_seeds"]

STREAMS = {"weights": 0, "initial_condition": 1, "noise": 2, "probe": 3, "sobol": 4}
_SEED_MASK = (1 << 63) - 1  # fits int64 storage and torch.Generator.manual_seed


def derive_seed(root_seed: int, *key: int) -> int:
    """A 63-bit seed from the root seed and a spawn key of non-negative integers."""
    state = np.random.SeedSequence(entropy=root_seed, spawn_key=tuple(int(k) for k in key)).generate_state(
        1, np.uint64
    )
    return int(state[0]) & _SEED_MASK


@dataclass(frozen=True)
class OperatorSeeds:
    """All seeds of one operator. ``noise_seeds[m]`` seeds realization m's noise generator."""

    weight_seed: int
    ic_seed: int
    probe_seed: int
    noise_seeds: tuple[int, ...]


def operator_seeds(root_seed: int, operator_index: int, n_realizations: int) -> OperatorSeeds:
    """Seeds of operator ``operator_index``; realization m's seed does not depend on ``n_realizations``."""
    return OperatorSeeds(
        weight_seed=derive_seed(root_seed, operator_index, STREAMS["weights"]),
        ic_seed=derive_seed(root_seed, operator_index, STREAMS["initial_condition"]),
        probe_seed=derive_seed(root_seed, operator_index, STREAMS["probe"]),
        noise_seeds=tuple(
            derive_seed(root_seed, operator_index, STREAMS["noise"], m) for m in range(n_realizations)
        ),
    )

"""One operator as stored: enough to rebuild it and replay its rollout, with nothing else."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .parameters import OperatorHyperparameters, map_parameters
from .seeds import OperatorSeeds
from .spec import DatasetSpec

__all__ = ["OperatorRecord"]


@dataclass(frozen=True)
class OperatorRecord:
    """Operator ``index`` of a dataset: its parameter point ``[P]``, seeds and initial condition
    ``[C, H, W]``, plus what generation stored about its rollout (digests, base series ``[M, T, C, 10]``)
    when known."""

    index: int
    spec: DatasetSpec
    params: np.ndarray
    seeds: OperatorSeeds
    initial_condition: np.ndarray
    digests: tuple[str, ...] | None = None
    base_series: np.ndarray | None = None
    fingerprint: dict | None = None

    @property
    def hyperparameters(self) -> OperatorHyperparameters:
        return map_parameters(self.params, self.spec.parameter_space)

    def build_operator(self, device: str = "cpu"):
        """The rebuilt :class:`~spinlock_assets.core.operator.StochasticCNN` on ``device``."""
        from .operator import build_operator

        return build_operator(
            self.hyperparameters,
            channels=self.spec.channels,
            weight_seed=self.seeds.weight_seed,
            device=device,
        )

"""Resources: the dataset (spec + HDF5 folder) and the seeded rollout engine every rollout goes through."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import PrivateAttr

from spinlock_assets.core.progress import Progress
from spinlock_assets.core.spec import DatasetSpec
from spinlock_assets.storage import ShardStore

if TYPE_CHECKING:
    from spinlock_assets.core.record import OperatorRecord

__all__ = ["DatasetResource", "RolloutResource"]


class DatasetResource(dg.ConfigurableResource):
    """The dataset being built: its spec (JSON) and the folder holding its HDF5 shard files."""

    spec_json: str
    data_root: str

    @cached_property
    def spec(self) -> DatasetSpec:
        return DatasetSpec.from_json(self.spec_json)

    @cached_property
    def store(self) -> ShardStore:
        return ShardStore(self.data_root)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.check_root_matches_spec()

    def check_root_matches_spec(self) -> None:
        """Refuse, before any work, a data root holding shards of another spec (e.g. T or grid changed):
        mixing them would silently corrupt the dataset. Raises ``SpecMismatchError`` naming both hashes.
        One small marker file is read per run (``ShardStore.claim_spec``), whatever the number of shards."""
        self.store.claim_spec(self.spec.spec_hash, self.spec.to_json())


def _silent(line: str) -> None:
    """Progress sink when no log is given."""


class RolloutResource(dg.ConfigurableResource):
    """The seeded rollout engine. Generation and replay both run through ``roll_out`` here, on one device,
    with deterministic flags set."""

    device: str = "cpu"
    threads: int = 0  # 0 keeps torch's default (one per core)
    operator_cache_size: int = 0  # rebuilt operators kept in memory, for runs that rebuild the same ones

    _cache: OrderedDict = PrivateAttr(default_factory=OrderedDict)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        import torch

        from spinlock_assets.core.fingerprint import configure_determinism

        if self.threads:
            torch.set_num_threads(self.threads)
        configure_determinism(self.device)

    def fingerprint(self) -> dict[str, str]:
        from spinlock_assets.core.fingerprint import execution_fingerprint

        return execution_fingerprint(self.device)

    def build_operator(self, record: OperatorRecord) -> Any:
        """The record's operator, from the cache when enabled (keyed by what determines the weights)."""
        key = (record.spec.spec_hash, record.index)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        operator = record.build_operator(self.device)
        if self.operator_cache_size:
            self._cache[key] = operator
            while len(self._cache) > self.operator_cache_size:
                self._cache.popitem(last=False)
        return operator

    def roll_out(
        self,
        records: list[OperatorRecord],
        *,
        keep_trajectories: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[Any]:
        """Yield one :class:`RolloutRecord` per record, reporting ``progress(done, total)`` (a
        ``core.progress.Progress`` logs counts, rate and ETA)."""
        from spinlock_assets.core.generation import roll_out

        yield from roll_out(
            records,
            device=self.device,
            keep_trajectories=keep_trajectories,
            progress=progress,
            build_operator=self.build_operator,
        )

    def verify(
        self, records: list[OperatorRecord], *, log: Any = None, stored_features: Any = None
    ) -> list[Any]:
        """Replay ``records`` and verify each against what was stored (``verification.verify_records``)."""
        from spinlock_assets.core.verification import verify_records

        with Progress(emit=log.info if log is not None else _silent) as progress:
            return verify_records(
                records,
                device=self.device,
                stored_features=stored_features,
                build_operator=self.build_operator,
                progress=progress,
            )

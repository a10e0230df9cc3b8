"""Initial conditions in both stored forms: fields stored, or (compact) digests only, the fields regenerated
from ic_seed and checked against the digests; never returned when they no longer regenerate bit-exactly."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from spinlock_assets.core import initial_conditions
from spinlock_assets.core.generation import generate_initial_conditions, operator_parameters
from spinlock_assets.storage import InitialConditionMismatchError, Problem, ShardStore, validate_shard_file
from spinlock_assets.storage.operator_arrays import (
    initial_condition_arrays,
    initial_condition_fields,
    parameter_arrays,
)
from spinlock_assets_tests.conftest import tiny_spec

SPEC = tiny_spec(store_initial_conditions=False)
KEY = "ops-000004-000007"


def _shard() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Operators 4..7: their stored parameter arrays (by name) and their IC fields."""
    table = operator_parameters(SPEC, 4, 8)
    parameters = {name: array.data for name, array in parameter_arrays(table, SPEC).items()}
    return parameters, generate_initial_conditions(SPEC, table)


def _write_both_forms(root: Path) -> dict[bool, Path]:
    """The initial_conditions shard of operators 4..7 with fields stored (True) and without (False)."""
    _, fields = _shard()
    attrs = {
        "spec_hash": SPEC.spec_hash,
        "spec_json": SPEC.to_json(),
        "code_version": "1",
        "fingerprint_json": "{}",
        "package_version": "test",
    }
    families = SPEC.parameter_space.ic_families
    paths = {}
    for stored in (True, False):
        store = ShardStore(root / f"stored-{stored}")
        arrays = initial_condition_arrays(fields, families, store_fields=stored)
        paths[stored] = store.write("initial_conditions", KEY, arrays, attrs).path
    return paths


def test_compact_shard_holds_marked_digests_only_is_smaller_and_valid(tmp_path: Path) -> None:
    paths = _write_both_forms(tmp_path)
    with h5py.File(paths[False]) as compact, h5py.File(paths[True]) as full:
        assert list(compact) == ["ic_digest"] and sorted(full) == ["fields", "ic_digest"]
        assert json.loads(compact["ic_digest"].attrs["config"])["fields"] == "regenerated"
        assert compact["ic_digest"][()].tolist() == full["ic_digest"][()].tolist()
        assert json.loads(full["ic_digest"].attrs["config"]) == {}  # the stored form is unchanged
    # gzip saves little on random fields; the file keeps ~7 KB of HDF5 metadata either way.
    field_bytes = 4 * SPEC.channels * SPEC.height * SPEC.width * 4
    assert paths[False].stat().st_size < paths[True].stat().st_size - field_bytes / 2
    assert validate_shard_file(paths[False]) == [] and validate_shard_file(paths[True]) == []


def test_validator_refuses_fields_that_are_neither_stored_nor_marked_regenerated(tmp_path: Path) -> None:
    paths = _write_both_forms(tmp_path)
    with h5py.File(paths[True], "r+") as handle:
        del handle["fields"]  # a stored-form shard that lost its fields is not a compact shard
    assert [problem.path for problem in validate_shard_file(paths[True])] == [f"{paths[True]}:/fields"]
    with h5py.File(paths[False], "r+") as handle:
        handle.create_dataset("fields", data=np.zeros((4, 2, 16, 16), dtype=np.float32))
        handle["fields"].attrs.update(handle["ic_digest"].attrs)
        handle["fields"].attrs["axes"] = json.dumps(["operator", "channel", "y", "x"])
    assert validate_shard_file(paths[False]) == [
        Problem(
            f"{paths[False]}:/fields",
            'present, but ic_digest@config says "fields": "regenerated" (compact storage)',
        )
    ]
    with h5py.File(paths[False], "r+") as handle:
        del handle["fields"], handle["ic_digest"]
    assert validate_shard_file(paths[False]) == [
        Problem(f"{paths[False]}:/ic_digest", "required dataset (asset 'initial_conditions') is missing")
    ]


def test_fields_are_read_when_stored_and_regenerated_bit_exactly_when_not() -> None:
    parameters, fields = _shard()
    families = SPEC.parameter_space.ic_families
    stored = {name: a.data for name, a in initial_condition_arrays(fields, families).items()}
    compact = {
        name: a.data for name, a in initial_condition_arrays(fields, families, store_fields=False).items()
    }
    assert initial_condition_fields(SPEC, parameters, stored) is stored["fields"]
    regenerated = initial_condition_fields(SPEC, parameters, compact)
    assert regenerated.dtype == np.float32 and regenerated.tobytes() == fields.tobytes()


def test_a_tampered_digest_is_refused_naming_the_operator() -> None:
    parameters, fields = _shard()
    arrays = initial_condition_arrays(fields, SPEC.parameter_space.ic_families, store_fields=False)
    digests = arrays["ic_digest"].data.copy()
    digests[2] = b"0" * 64  # row 2 is operator 6
    with pytest.raises(
        InitialConditionMismatchError, match=r"operators \[6\].*no longer regenerates bit-exactly"
    ):
        initial_condition_fields(SPEC, parameters, {"ic_digest": digests})


def test_an_ic_generator_whose_bits_changed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    parameters, fields = _shard()
    arrays = initial_condition_arrays(fields, SPEC.parameter_space.ic_families, store_fields=False)
    original = initial_conditions.initial_condition

    def last_bit_differs(*args, **kwargs) -> np.ndarray:  # what a numpy upgrade could do to an FFT
        field = original(*args, **kwargs)
        return (
            np.nextafter(field, np.float32(np.inf)) if kwargs["seed"] == parameters["ic_seed"][1] else field
        )

    monkeypatch.setattr(initial_conditions, "initial_condition", last_bit_differs)
    with pytest.raises(InitialConditionMismatchError, match=r"operators \[5\]: .*numpy"):
        initial_condition_fields(SPEC, parameters, {"ic_digest": arrays["ic_digest"].data})

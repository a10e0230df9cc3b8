"""Shard files: round trip, atomic publication, refusal to overwrite, checked input, corruption detection."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from spinlock_assets.storage import (
    ShardArrayMissingError,
    ShardCorruptError,
    ShardExistsError,
    ShardMissingError,
    SpecMismatchError,
    StoredArray,
    file_sha256,
    read_shard_file,
    write_shard_file,
)
from spinlock_assets_tests.storage.helpers import SPEC_HASH, shard_arrays, shard_attrs

KEY = "ops-000004-000007"


@pytest.fixture(autouse=True)
def _folders(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()


def _write(folder: Path, **kwargs: object) -> Path:
    path = folder / f"{KEY}.h5"
    write_shard_file(path, shard_arrays(4), shard_attrs(4, 8), **kwargs)
    return path


def test_round_trip_keeps_arrays_and_attributes(tmp_path: Path) -> None:
    written = shard_arrays(4)
    info = write_shard_file(tmp_path / f"{KEY}.h5", written, shard_attrs(4, 8))
    assert info.sha256 == file_sha256(info.path) and info.n_bytes == info.path.stat().st_size
    contents = read_shard_file(info.path, expected_spec_hash=SPEC_HASH)
    assert contents.attrs == {**shard_attrs(4, 8), "schema_version": "1.0"}
    for name, array in written.items():
        read = contents.arrays[name]
        assert read.data.dtype == array.data.dtype and np.array_equal(read.data, array.data), name
        assert read.hdf5_attrs() == array.hdf5_attrs(), name
        assert (read.axes, read.field_names, read.compress) == (array.axes, array.field_names, array.compress)
    assert contents.arrays["summary"].axis_labels == {"statistic": ("mean", "std")}
    assert contents.arrays["series"].config == {"eps": 1e-12, "nested": {"k": [1, 2]}}


def test_reading_a_subset_reads_only_those_arrays(tmp_path: Path) -> None:
    contents = read_shard_file(_write(tmp_path), names=["seed"])
    assert list(contents.arrays) == ["seed"]


def test_compressed_arrays_are_chunked_one_operator_per_chunk_with_checksums(tmp_path: Path) -> None:
    with h5py.File(_write(tmp_path), "r") as handle:
        series, seed = handle["series"], handle["seed"]
        assert (series.compression, series.shuffle, series.chunks) == ("gzip", True, (1, 2, 5, 3))
        assert series.fletcher32 and seed.fletcher32 and seed.compression is None


def test_same_content_gives_identical_bytes(tmp_path: Path) -> None:
    first = write_shard_file(tmp_path / "a" / f"{KEY}.h5", shard_arrays(4), shard_attrs(4, 8))
    second = write_shard_file(tmp_path / "b" / f"{KEY}.h5", shard_arrays(4), shard_attrs(4, 8))
    assert first.sha256 == second.sha256


def test_failure_in_the_middle_leaves_no_file_and_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    _fail_after_first_dataset(monkeypatch)
    with pytest.raises(OSError, match="No space left on device"):
        _write(tmp_path / "a")
    assert list((tmp_path / "a").iterdir()) == []


def test_failed_overwrite_keeps_the_old_bytes(tmp_path: Path, monkeypatch) -> None:
    path = _write(tmp_path / "a")
    before = file_sha256(path)
    _fail_after_first_dataset(monkeypatch)
    with pytest.raises(OSError, match="No space left on device"):
        write_shard_file(path, shard_arrays(4, seed=1), shard_attrs(4, 8), overwrite=True)
    assert file_sha256(path) == before
    assert list((tmp_path / "a").iterdir()) == [path]


def _fail_after_first_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    original = h5py.Group.create_dataset
    calls = []

    def create_dataset(self: h5py.Group, *args: object, **kwargs: object) -> h5py.Dataset:
        calls.append(args)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", create_dataset)


def test_existing_shard_is_not_overwritten_unless_told(tmp_path: Path) -> None:
    path = _write(tmp_path / "a")
    before = file_sha256(path)
    with pytest.raises(ShardExistsError, match="overwrite=True"):
        write_shard_file(path, shard_arrays(4, seed=1), shard_attrs(4, 8))
    assert file_sha256(path) == before
    write_shard_file(path, shard_arrays(4, seed=1), shard_attrs(4, 8), overwrite=True)
    assert file_sha256(path) != before


def test_row_count_mismatch_is_refused_before_any_write(tmp_path: Path, monkeypatch) -> None:
    arrays = {
        **shard_arrays(4),
        "short": StoredArray(np.zeros(3), axes=("operator",), version="1", source="derived"),
    }
    monkeypatch.setattr(h5py, "File", None)  # any attempt to create a file would fail with TypeError
    with pytest.raises(
        ValueError, match=r"array 'short': expected 4 rows on axis 0 \(operators 4..7\), got 3"
    ):
        write_shard_file(tmp_path / "a" / f"{KEY}.h5", arrays, shard_attrs(4, 8))
    assert list((tmp_path / "a").iterdir()) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"field_names": ("a", "b")}, r"@feature_names must have 3 entries \(feature axis\), got 2"),
        (
            {"axes": ("time", "operator", "x", "feature")},
            "@axes must be distinct names starting with 'operator'",
        ),
        ({"axes": ("operator", "feature")}, r"@axes must name each of the 4 dimensions"),
        ({"source": "magic"}, "@source must be one of"),
        ({"data": np.zeros((4, 2, 5, 3), dtype="U3")}, "dtype <U3 cannot be stored"),
    ],
)
def test_bad_array_description_is_refused_naming_the_array(
    tmp_path: Path, change: dict, message: str
) -> None:
    series = shard_arrays(4)["series"]
    fields = {name: getattr(series, name) for name in series.__dataclass_fields__}
    arrays = {"series": StoredArray(**{**fields, **change})}
    with pytest.raises(ValueError, match=message) as raised:
        write_shard_file(tmp_path / f"{KEY}.h5", arrays, shard_attrs(4, 8))
    assert "'series'" in str(raised.value)


def test_shard_key_must_match_operator_range(tmp_path: Path) -> None:
    attrs = {**shard_attrs(4, 8), "operator_stop": 9}
    with pytest.raises(
        ValueError, match=r"expected \(4, 8\) from shard key 'ops-000004-000007', got \(4, 9\)"
    ):
        write_shard_file(tmp_path / f"{KEY}.h5", {}, attrs)


def test_missing_file_attribute_is_refused(tmp_path: Path) -> None:
    attrs = shard_attrs(4, 8)
    del attrs["spec_hash"]
    with pytest.raises(ValueError, match=r"file attributes missing: \['spec_hash'\]"):
        write_shard_file(tmp_path / f"{KEY}.h5", shard_arrays(4), attrs)


def test_spec_hash_mismatch_names_both_hashes(tmp_path: Path) -> None:
    path = _write(tmp_path)
    with pytest.raises(SpecMismatchError) as raised:
        read_shard_file(path, expected_spec_hash="f" * 64)
    assert SPEC_HASH in str(raised.value) and "f" * 64 in str(raised.value) and str(path) in str(raised.value)
    assert "new dataset root" in str(raised.value)


def test_missing_file_raises_shard_missing_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ShardMissingError, match=KEY):
        read_shard_file(tmp_path / f"{KEY}.h5")


def test_missing_array_names_the_file_and_the_arrays_present(tmp_path: Path) -> None:
    path = _write(tmp_path)
    with pytest.raises(ShardArrayMissingError) as raised:
        read_shard_file(path, names=["seed", "nope"])
    assert (
        str(raised.value)
        == f"{path}: no array(s) ['nope']; arrays present: ['digest', 'seed', 'series', 'summary']"
    )


def test_truncated_file_is_corrupt_naming_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path)
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(ShardCorruptError, match=str(path)):
        read_shard_file(path)


def test_non_hdf5_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / f"{KEY}.h5"
    path.write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(ShardCorruptError, match="not a readable HDF5 file"):
        read_shard_file(path)


def test_flipped_data_byte_fails_the_checksum(tmp_path: Path) -> None:
    path = _write(tmp_path)
    with h5py.File(path, "r") as handle:
        offset = handle["seed"].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as handle:
        handle.seek(offset + 3)
        byte = handle.read(1)
        handle.seek(offset + 3)
        handle.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(ShardCorruptError, match=rf"{path}: array '/seed' cannot be read"):
        read_shard_file(path)

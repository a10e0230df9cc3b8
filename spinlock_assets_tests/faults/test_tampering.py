"""An adversary with write access to the data folder: every tamper below is caught from the data alone.

Each attack changes a private copy of a generated dataset (12 operators in 3 shards of 4, derived families
on the first shard) the way the adversarial tester of issue #17 did, then asserts what the command line
says: wrong data is never reported ``exact`` (0 of the operators touched), ``verify`` exits non-zero,
``info`` lists the problem, and nothing dies with a traceback. Where a Dagster check applies, it fails too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import h5py
import numpy as np
import pytest

from spinlock_assets.cli.main import main
from spinlock_assets.storage import ShardChangedError, file_sha256
from spinlock_assets.storage.reader import open_dataset
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import SHARDS, materialize, tiny_definitions
from spinlock_assets_tests.faults.helpers import (
    REPLAY_KEY,
    copy_root,
    error_text,
    flip_bytes_in_chunk,
    rewrite_shard,
    run_checks,
    shard_file,
)

FAMILIES = ["spectral_features", "dynamics_features"]


@pytest.fixture(scope="module")
def featured_root(generated_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated dataset plus two derived families on the first shard, dataset.h5 rebuilt over them."""
    root = copy_root(generated_root, tmp_path_factory.mktemp("featured") / "data")
    with dg.instance_for_test() as instance:
        defs = tiny_definitions(tiny_spec(), root)
        assert materialize(defs, FAMILIES, instance, SHARDS[0]).success
        assert materialize(defs, ["dataset"], instance).success
    return root


@pytest.fixture
def root(featured_root: Path, tmp_path: Path) -> Path:
    return copy_root(featured_root, tmp_path / "data")


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def verify_json(capsys, root: Path, *options: object) -> tuple[int, dict]:
    code, out, err = cli(capsys, "verify", root, "--json", *options)
    assert "Traceback" not in err
    return code, (json.loads(out) if out else {"error": err})


def info_problems(capsys, root: Path) -> tuple[int, list[str]]:
    code, out, err = cli(capsys, "info", root, "--json")
    assert "Traceback" not in err
    return code, (json.loads(out)["problems"] if out else [err])


# -- how the attacks edit files ---------------------------------------------------------------------------


def edit_shard(root: Path, asset: str, shard: str, edit: Callable[[h5py.File], None]) -> None:
    """Change a shard file in place with plain h5py (its bytes change, dataset.h5 is not told)."""
    with h5py.File(root / shard_file(asset, shard), "r+") as handle:
        edit(handle)


def record_sha256(root: Path, asset: str, shard: str) -> None:
    """Update dataset.h5's recorded sha256 of one shard file to its current bytes (hiding an edit)."""
    with h5py.File(root / "dataset.h5", "r+") as handle:
        table = handle["/metadata/shards"][()]
        row = (table["asset"] == asset.encode()) & (table["shard_key"] == shard.encode())
        table["sha256"][row] = file_sha256(root / shard_file(asset, shard)).encode()
        handle["/metadata/shards"][...] = table


def rewrite_mappings(root: Path, redirect: Callable[[str], str]) -> None:
    """Rebuild every virtual dataset of dataset.h5 with each source file name passed through ``redirect``."""
    with h5py.File(root / "dataset.h5", "r+") as handle:
        names: list[str] = []

        def collect(name: str, item: object) -> None:
            if getattr(item, "is_virtual", False):
                names.append(name)

        handle.visititems(collect)
        for name in names:
            dataset = handle[name]
            layout = h5py.VirtualLayout(shape=dataset.shape, dtype=dataset.dtype)
            for source in dataset.virtual_sources():
                first, last = source.vspace.get_select_bounds()
                rows = last[0] - first[0] + 1
                target = h5py.VirtualSource(
                    redirect(source.file_name), source.dset_name, shape=(rows, *dataset.shape[1:])
                )
                layout[first[0] : last[0] + 1] = target
            attrs, fill = dict(dataset.attrs), dataset.fillvalue
            del handle[name]
            handle.create_virtual_dataset(name, layout, fillvalue=fill).attrs.update(attrs)


def edit_spec_json(root: Path, **changes: object) -> None:
    with h5py.File(root / "dataset.h5", "r+") as handle:
        spec = json.loads(handle["/metadata"].attrs["spec_json"]) | changes
        handle["/metadata"].attrs["spec_json"] = json.dumps(spec, sort_keys=True)


def swap_rows(values: np.ndarray, a: int = 1, b: int = 2) -> np.ndarray:
    values[[a, b]] = values[[b, a]]
    return values


def rebuild_honestly(root: Path) -> None:
    """dataset.h5 rebuilt from scratch over the files as they are (an adversary who also rebuilds it):
    every recorded hash then matches the tampered files."""
    (root / "dataset.h5").unlink()
    with dg.instance_for_test() as instance:
        assert materialize(tiny_definitions(tiny_spec(), root), ["dataset"], instance).success


# -- the attacks: (what it does, operators it makes wrong) ---------------------------------------------


def redirect_first_shard(root: Path) -> None:  # rows 0-3 read the files of operators 4-7
    rewrite_mappings(root, lambda name: name.replace(SHARDS[0], SHARDS[1]))


def map_outside_the_root(root: Path) -> None:  # rows 0-3 read a copy of shard 1 outside the data folder
    outside = root.parent / "elsewhere"
    for asset in ("operator_parameters", "initial_conditions", "base_features"):
        (outside / asset).mkdir(parents=True)
        shutil.copyfile(root / shard_file(asset, SHARDS[1]), outside / shard_file(asset, SHARDS[0]))
    rewrite_mappings(root, lambda name: str(outside / name) if SHARDS[0] in name else name)


def one_series_float(root: Path) -> None:
    edit_shard(root, "base_features", SHARDS[1], lambda f: f["series"].__setitem__((1, 0, 2, 0, 0), 0.5))


def one_spectral_float(root: Path) -> None:
    def edit(handle: h5py.File) -> None:
        name = next(iter(handle))
        values = handle[name][()]
        values.flat[3] += 1.0
        handle[name][...] = values

    edit_shard(root, "spectral_features", SHARDS[0], edit)


def digest_and_fingerprint(root: Path) -> None:
    def edit(handle: h5py.File) -> None:
        handle["digests"][1, 0] = b"0" * 64
        fingerprint = json.loads(handle.attrs["fingerprint_json"]) | {"cpu_capability": "elsewhere"}
        handle.attrs["fingerprint_json"] = json.dumps(fingerprint, sort_keys=True)

    edit_shard(root, "base_features", SHARDS[1], edit)


def forged_digest_recorded(root: Path) -> None:  # the same, dataset.h5 rebuilt over it (new hash recorded)
    digest_and_fingerprint(root)
    rebuild_honestly(root)


def series_float_recorded(root: Path) -> None:
    one_series_float(root)
    record_sha256(root, "base_features", SHARDS[1])


def rows_swapped_everywhere(root: Path) -> None:  # operators 5 and 6 trade places in all three shards
    for asset in ("operator_parameters", "initial_conditions", "base_features"):
        names = list(open_shard_arrays(root, asset, SHARDS[1]))
        rewrite_shard(root, asset, SHARDS[1], arrays={name: swap_rows for name in names})
    rebuild_honestly(root)


def rows_swapped_but_index(root: Path) -> None:  # the same, operator_index left in place
    for asset in ("operator_parameters", "initial_conditions", "base_features"):
        names = [name for name in open_shard_arrays(root, asset, SHARDS[1]) if name != "operator_index"]
        rewrite_shard(root, asset, SHARDS[1], arrays={name: swap_rows for name in names})
    rebuild_honestly(root)


def spectral_value_everything_rewritten(root: Path) -> None:  # a valid shard file, honestly re-recorded
    def bump(values: np.ndarray) -> np.ndarray:
        values.flat[0] += np.float32(0.25)
        return values

    name = next(iter(open_shard_arrays(root, "spectral_features", SHARDS[0])))
    rewrite_shard(root, "spectral_features", SHARDS[0], arrays={name: bump})
    rebuild_honestly(root)


def series_everything_rewritten(root: Path) -> None:
    def bump(values: np.ndarray) -> np.ndarray:
        values[1, 0, 2, 0, 0] += np.float32(0.5)
        return values

    rewrite_shard(root, "base_features", SHARDS[1], arrays={"series": bump})
    rebuild_honestly(root)


def truncated(root: Path) -> None:
    path = root / shard_file("base_features", SHARDS[1])
    os.truncate(path, path.stat().st_size // 2)


def bytes_flipped(root: Path) -> None:  # reads as fill values through dataset.h5, present still 1
    flip_bytes_in_chunk(root / shard_file("initial_conditions", SHARDS[1]), "fields", row=1)


def replaced_by_another_shard(root: Path) -> None:
    for asset in ("operator_parameters", "initial_conditions", "base_features"):
        shutil.copyfile(root / shard_file(asset, SHARDS[2]), root / shard_file(asset, SHARDS[1]))


def open_shard_arrays(root: Path, asset: str, shard: str) -> list[str]:
    with h5py.File(root / shard_file(asset, shard), "r") as handle:
        return list(handle)


ATTACKS: dict[str, tuple[Callable[[Path], None], list[int]]] = {
    "mappings-redirected": (redirect_first_shard, [0, 1, 2, 3]),
    "mapping-outside-the-root": (map_outside_the_root, [0, 1, 2, 3]),
    "series-float": (one_series_float, [4, 5, 6, 7]),
    "spectral-float": (one_spectral_float, [0, 1, 2, 3]),
    "digest-and-fingerprint": (digest_and_fingerprint, [4, 5, 6, 7]),
    "forged-digest-recorded": (forged_digest_recorded, [5]),
    "series-float-recorded": (series_float_recorded, [5]),
    "rows-swapped-everywhere": (rows_swapped_everywhere, [5, 6]),
    "rows-swapped-but-index": (rows_swapped_but_index, [5, 6]),
    "spectral-value-everything-rewritten": (spectral_value_everything_rewritten, [0]),
    "series-everything-rewritten": (series_everything_rewritten, [5]),
    "truncated": (truncated, [4, 5, 6, 7]),
    "bytes-flipped": (bytes_flipped, [4, 5, 6, 7]),
    "replaced-by-another-shard": (replaced_by_another_shard, [4, 5, 6, 7]),
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_wrong_data_is_never_reported_exact(root: Path, capsys, attack: str) -> None:
    tamper, wrong = ATTACKS[attack]
    tamper(root)
    code, summary = verify_json(capsys, root, "--operators", ",".join(map(str, wrong)))
    assert code != 0, summary
    assert summary.get("counts", {}).get("exact", 0) == 0, summary  # 0 of N


# Files and records rewritten consistently: no file check can tell, only a replay (the test above).
ONLY_A_REPLAY_TELLS = {
    "forged-digest-recorded",
    "series-float-recorded",
    "spectral-value-everything-rewritten",
    "series-everything-rewritten",
}


@pytest.mark.parametrize("attack", [name for name in ATTACKS if name not in ONLY_A_REPLAY_TELLS])
def test_info_validation_tells_the_truth(root: Path, capsys, attack: str) -> None:
    tamper, _ = ATTACKS[attack]
    tamper(root)
    code, problems = info_problems(capsys, root)
    assert code != 0 and problems


def test_untouched_operators_stay_exact_next_to_a_tampered_shard(root: Path, capsys) -> None:
    one_series_float(root)
    code, summary = verify_json(capsys, root, "--operators", "0:4,8:12")
    assert (code, summary["counts"]["exact"]) == (0, 8)
    code, summary = verify_json(capsys, root, "--operators", "0:4", "--all-files")
    assert code == 1 and summary["counts"]["exact"] == 4
    assert any("base_features/ops-000004-000007.h5" in problem for problem in summary["problems"])


def test_replay_of_a_redirected_row_is_refused_in_one_line(root: Path, tmp_path: Path, capsys) -> None:
    redirect_first_shard(root)
    code, out, err = cli(capsys, "replay", root, "--operator", 0, "--output", tmp_path / "op.npy")
    assert code == 2 and out == "" and err.count("\n") == 1 and "/metadata/shards" in err
    assert not (tmp_path / "op.npy").exists()
    with pytest.raises(OSError, match="refused"):
        open_dataset(root)


def test_a_forged_digest_under_an_edited_fingerprint_is_tampering_not_tolerance(root: Path, capsys) -> None:
    forged_digest_recorded(root)
    code, summary = verify_json(capsys, root, "--operators", "5")
    [entry] = summary["non_exact"]
    assert code == 1 and entry["status"] == "tampered" and "forged digest" in entry["differences"][0]
    assert summary["fingerprint_changed"] == [5]  # reported as such, and still not excused


def test_a_lowered_n_operators_is_refused_not_hidden(root: Path, capsys) -> None:
    edit_spec_json(root, n_operators=8)
    code, problems = info_problems(capsys, root)
    assert code == 1 and any("n_operators" in problem for problem in problems)
    code, summary = verify_json(capsys, root)
    assert code == 1 and summary["counts"]["exact"] == 0  # nothing is replayed from a file that lies
    assert any("n_operators" in problem for problem in summary["problems"])


def test_a_spec_claiming_huge_steps_is_refused_before_any_allocation(root: Path, capsys) -> None:
    edit_spec_json(root, steps=100_000_000)
    for command in (["info"], ["verify"], ["replay", "--operator", "1"]):
        code, out, err = cli(capsys, *command[:1], root, *command[1:])
        assert code != 0 and "Traceback" not in err and "MemoryError" not in err


def test_an_external_link_is_refused_in_one_line(root: Path, tmp_path: Path, capsys) -> None:
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other["params"] = np.zeros((12, 10))
    with h5py.File(root / "dataset.h5", "r+") as handle:
        handle["/parameters/elsewhere"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/params")
    for command in ("info", "verify"):
        code, out, err = cli(capsys, command, root)
        assert (code, out) == (2, "") and "external link" in err and err.count("\n") == 1


def test_rebuilding_dataset_h5_never_records_a_changed_file(root: Path, instance) -> None:
    digest_and_fingerprint(root)
    result = materialize(tiny_definitions(tiny_spec(), root), ["dataset"], instance, raise_on_error=False)
    assert not result.success and ShardChangedError.__name__ in error_text(result)
    assert "previous dataset.h5 recorded" in error_text(result)


def test_dagster_checks_catch_an_edited_derived_family_shard(root: Path, instance) -> None:
    defs = tiny_definitions(tiny_spec(), root)
    assert materialize(defs, ["spectral_features"], instance, SHARDS[0]).success
    one_spectral_float(root)
    evaluation = run_checks(defs, instance, SHARDS[0])
    assert not evaluation[("spectral_features", "shard_file_intact")].passed
    # The replay check recomputes the shard's stored features too, whatever the recorded hashes say.
    replay = evaluation[("base_features", REPLAY_KEY.name)]
    assert not replay.passed and replay.severity == dg.AssetCheckSeverity.ERROR
    assert replay.metadata["tampered"].value and replay.metadata["exact"].value < 4
    result = materialize(defs, ["dataset"], instance, raise_on_error=False)
    assert not result.success and "when it was materialized" in error_text(result)


def test_a_family_that_cannot_be_recomputed_here_is_unverified_not_exact(
    root: Path, capsys, monkeypatch
) -> None:
    from spinlock_assets.core.features import registry

    monkeypatch.setitem(
        registry.FAMILIES, "spectral", dataclasses.replace(registry.FAMILIES["spectral"], version="9")
    )
    code, summary = verify_json(capsys, root, "--operators", "0")
    [entry] = summary["non_exact"]
    assert code == 1 and entry["status"] == "unverified"
    assert entry["differences"] == [
        "cannot recompute family spectral version 1.0.0 (registered here at version 9)"
    ]
    monkeypatch.delitem(registry.FAMILIES, "spectral")
    code, summary = verify_json(capsys, root, "--operators", "0")
    assert code == 1 and summary["non_exact"][0]["status"] == "unverified"

"""The ``spinlock-assets`` command line, run in-process through ``main`` on a real tiny dataset."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import h5py
import numpy as np
import pytest

from spinlock_assets.cli.main import main, parse_operators
from spinlock_assets.core.verification import replay
from spinlock_assets.definitions import build_definitions
from spinlock_assets.storage.reader import open_dataset
from spinlock_assets_tests.conftest import tiny_spec

# Every test here shares one generated dataset: keep them on one xdist worker so it is built once.
pytestmark = pytest.mark.xdist_group("cli")

SHARDS = ["ops-000000-000003", "ops-000004-000007", "ops-000008-000011"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 operators in 3 shards; derived feature families for the first shard only, so that the present
    counts differ between groups."""
    root = tmp_path_factory.mktemp("cli") / "data"
    defs = build_definitions(tiny_spec(), root)
    with dg.instance_for_test() as instance:
        for key in SHARDS:
            job = defs.resolve_job_def("generate_shards")
            assert job.execute_in_process(partition_key=key, instance=instance).success
        job = defs.resolve_job_def("replay_features")
        assert job.execute_in_process(partition_key=SHARDS[0], instance=instance).success
        assert defs.resolve_job_def("consolidate_dataset").execute_in_process(instance=instance).success
    return root


@pytest.fixture
def data_copy(data: Path, tmp_path: Path) -> Path:
    """A private copy to damage; dataset.h5 maps its shards by relative path, so the copy is whole."""
    return Path(shutil.copytree(data, tmp_path / "data"))


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_info_text_describes_spec_groups_fingerprints_and_validation(data: Path, capsys) -> None:
    code, out, _ = run(capsys, "info", data)
    assert code == 0
    spec = tiny_spec()
    assert f"tiny (spec hash {spec.spec_hash}, schema 1.0)" in out
    assert "12 in 3 shards of 4" in out
    assert "grid 16x16, C=2, T=6, M=3" in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  /")}
    assert lines["/parameters"] == ["12/12"]
    assert lines["/verification"] == ["12/12"]
    assert lines["/features/spectral"] == ["4/12", "1.0.0"]
    # the rollout's fingerprint (base features) and the inputs' (numpy/scipy, no torch) differ by design
    assert "fingerprints  2 distinct" in out
    assert out.rstrip().endswith("validation    ok")


def test_info_json_is_one_object_matching_the_file(data: Path, capsys) -> None:
    code, out, _ = run(capsys, "info", data / "dataset.h5", "--json")
    assert code == 0
    info = json.loads(out)
    with h5py.File(data / "dataset.h5") as f:
        versions = json.loads(f["/metadata"].attrs["family_versions"])
        present = {group: int(f[group]["present"][()].sum()) for group in info["present"]}
    assert info["families"] == versions and "spectral" in versions
    assert info["present"] == present
    assert info["present"]["/inputs"] == 12 and info["present"]["/features/dynamics"] == 4
    assert (info["n_operators"], info["shard_size"], info["n_shards"]) == (12, 4, 3)
    assert (info["grid"], info["channels"], info["steps"], info["realizations"]) == ([16, 16], 2, 6, 3)
    assert info["spec_hash"] == tiny_spec().spec_hash
    assert [fp["device_type"] for fp in info["fingerprints"]] == ["cpu", "cpu"]  # rollout and inputs
    assert info["problems"] == []


def test_info_lists_validation_problems_and_exits_1(data_copy: Path, capsys) -> None:
    (data_copy / "spectral_features" / f"{SHARDS[0]}.h5").unlink()
    code, out, _ = run(capsys, "info", data_copy, "--json")
    assert code == 1
    problems = json.loads(out)["problems"]
    assert any(problem.startswith("/features/spectral/") and "missing" in problem for problem in problems)


def stored_record(data: Path, index: int):
    with open_dataset(data) as reader:
        return reader.operator(index)


def test_replay_npy_holds_the_replayed_bytes_and_matches_the_stored_digests(data, tmp_path, capsys) -> None:
    output = tmp_path / "op5.npy"
    code, out, _ = run(capsys, "replay", data, "--operator", 5, "--output", output)
    assert code == 0
    assert "verification: exact" in out and f"wrote {output}" in out
    trajectories = np.load(output)
    record = stored_record(data, 5)
    assert trajectories.dtype == np.float32 and trajectories.shape == (3, 6, 2, 16, 16)
    assert trajectories.tobytes() == replay(record).tobytes()
    assert [hashlib.sha256(m.tobytes()).hexdigest() for m in trajectories] == list(record.digests)


def test_replay_h5_holds_the_replayed_bytes_and_describes_them(data, tmp_path, capsys) -> None:
    output = tmp_path / "op7.h5"
    code, _, _ = run(capsys, "replay", data, "--operator", 7, "--output", output)
    assert code == 0
    record = stored_record(data, 7)
    with h5py.File(output) as f:
        dataset = f["trajectories"]
        trajectories, attrs = dataset[()], dict(dataset.attrs)
    assert trajectories.tobytes() == replay(record).tobytes()
    assert [hashlib.sha256(m.tobytes()).hexdigest() for m in trajectories] == list(record.digests)
    assert attrs["operator_index"] == 7 and attrs["spec_hash"] == tiny_spec().spec_hash
    assert json.loads(attrs["axes"]) == ["realization", "time", "channel", "y", "x"]
    assert json.loads(attrs["digests"]) == json.loads(attrs["stored_digests"]) == list(record.digests)
    assert attrs["verification"] == "exact"


def test_replay_writes_operator_i_npy_by_default(data, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "replay", data, "--operator", 2)[0] == 0
    assert np.load(tmp_path / "operator-2.npy").shape == (3, 6, 2, 16, 16)


def test_replay_overwrites_an_existing_output_only_with_force(data, tmp_path, capsys) -> None:
    output = tmp_path / "op.npy"
    output.write_bytes(b"keep me")
    code, out, err = run(capsys, "replay", data, "--operator", 1, "--output", output)
    assert (code, out, output.read_bytes()) == (2, "", b"keep me")
    assert err == f"spinlock-assets: error: {output} already exists; pass --force to overwrite it\n"
    assert run(capsys, "replay", data, "--operator", 1, "--output", output, "--force")[0] == 0
    assert np.load(output).tobytes() == replay(stored_record(data, 1)).tobytes()


def test_verify_all_operators_is_exact_and_exits_0(data: Path, capsys) -> None:
    code, out, err = run(capsys, "verify", data)
    assert code == 0
    assert ": 12 exact, 0 within_tolerance, 0 mismatch, 0 diverged" in out
    assert "non-exact operators: none" in out
    # stderr is not a terminal here: one plain progress line per tenth reached, ending at 100%.
    progress = err.splitlines()
    assert 1 <= len(progress) <= 10 and "\r" not in err
    assert progress[-1].startswith("replayed 12/12 (") and "ETA" in progress[-1]


def test_verify_reports_an_edited_shard_as_tampered_and_exits_1(data_copy: Path, capsys) -> None:
    """A stored digest overwritten in place: the shard file no longer hashes to the sha256 dataset.h5
    recorded, so none of its operators is reported exact, and the digest itself is a mismatch."""
    with h5py.File(data_copy / "base_features" / f"{SHARDS[1]}.h5", "r+") as shard:
        shard["digests"][1, 2] = b"0" * 64  # operator 5, realization 2
    code, out, _ = run(capsys, "verify", data_copy, "--operators", "4:8")
    assert code == 1
    assert "4 operators" in out and "0 exact, 0 within_tolerance, 0 mismatch, 0 diverged, 4 tampered" in out
    assert f"operator 5: tampered ({data_copy / 'base_features' / SHARDS[1]}.h5: sha256 is" in out
    code, out, _ = run(capsys, "verify", data_copy, "--operators", "5", "--json")
    summary = json.loads(out)
    assert code == 1 and summary["ok"] is False
    assert summary["counts"]["tampered"] == 1 and summary["counts"]["exact"] == 0
    [entry] = summary["non_exact"]
    assert (entry["operator"], entry["status"], entry["mismatched_realizations"]) == (5, "tampered", [2])
    assert "dataset.h5 recorded" in entry["differences"][0]


def sampled(capsys, data: Path, *options: object) -> list[int]:
    code, out, _ = run(capsys, "verify", data, "--json", *options)
    assert code == 0
    return json.loads(out)["operators"]


def test_sample_draws_the_same_operators_for_the_same_seed(data: Path, capsys) -> None:
    state = np.random.get_state()[1].copy()
    first = sampled(capsys, data, "--sample", 3, "--seed", 11)
    assert first == sampled(capsys, data, "--sample", 3, "--seed", 11)
    assert first == sorted(np.random.default_rng(11).choice(12, size=3, replace=False).tolist())
    assert sampled(capsys, data, "--operators", "8:12", "--sample", 2, "--seed", 3) == sorted(
        np.random.default_rng(3).choice(np.arange(8, 12), size=2, replace=False).tolist()
    )
    assert np.array_equal(np.random.get_state()[1], state)  # the global RNG is never drawn from


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0:3", [0, 1, 2]), ("3,5,9", [3, 5, 9]), ("7", [7]), (":2,10:", [0, 1, 10, 11]), ("5,2,5", [2, 5])],
)
def test_operators_accepts_ranges_lists_and_mixes(text: str, expected: list[int]) -> None:
    assert parse_operators(text, 12).tolist() == expected


def damage(data_copy: Path, what: str) -> Path:
    """A copy of the dataset broken in one way; returns the PATH argument to give the CLI."""
    dataset = data_copy / "dataset.h5"
    if what == "not_hdf5":
        dataset.write_text("not an HDF5 file\n")
    elif what == "truncated":
        dataset.write_bytes(dataset.read_bytes()[:2000])
    elif what == "foreign_hdf5":
        dataset.unlink()
        with h5py.File(dataset, "w") as f:
            f["x"] = np.arange(3)
    elif what == "no_dataset_h5":
        dataset.unlink()
    elif what == "shard_deleted":
        (data_copy / "initial_conditions" / f"{SHARDS[1]}.h5").unlink()
    return data_copy


@pytest.mark.parametrize(
    ("damaged", "argv", "message"),
    [
        (None, ["info", "{tmp}/nowhere"], "nowhere: no such file or directory"),
        ("not_hdf5", ["info", "{data}"], "dataset.h5: not a readable HDF5 file ("),
        ("truncated", ["verify", "{data}"], "dataset.h5: not a readable HDF5 file ("),
        ("foreign_hdf5", ["info", "{data}"], "not a spinlock dataset (no /metadata@spec_json)"),
        ("no_dataset_h5", ["info", "{data}"], "no dataset file at"),
        (None, ["replay", "{data}", "--operator", "12"], "--operator 12: outside 0..11"),
        (None, ["replay", "{data}", "--operator", "-1"], "--operator -1: outside 0..11"),
        (None, ["replay", "{data}", "--operator", "x"], "argument --operator: invalid int value: 'x'"),
        (None, ["replay", "{data}", "--operator", "1", "--output", "{tmp}/o.txt"], "expected a .npy or .h5"),
        ("shard_deleted", ["replay", "{data}", "--operator", "5"], "initial_conditions/ops-000004-000007.h5"),
        ("shard_deleted", ["verify", "{data}"], "operator 4 (and 3 more of the chosen operators): shard"),
        (None, ["verify", "{data}", "--operators", "3-5"], "--operators '3-5': expected 'START:STOP'"),
        (None, ["verify", "{data}", "--operators", "a,b"], "--operators 'a,b': expected 'START:STOP'"),
        (None, ["verify", "{data}", "--operators", "1:2:3"], "--operators '1:2:3': expected 'START:STOP'"),
        (None, ["verify", "{data}", "--operators", "5:3"], "range '5:3' is empty"),
        (None, ["verify", "{data}", "--operators", "0:13"], "'0:13' is outside 0..11"),
        (None, ["verify", "{data}", "--sample", "13"], "--sample 13: expected 1..12"),
        (None, ["verify", "{data}", "--seed", "1"], "--seed only applies together with --sample"),
        (None, ["verify", "{data}", "--device", "tpu"], "--device 'tpu'"),
        (None, ["frobnicate", "{data}"], "invalid choice: 'frobnicate'"),
        (None, [], "the following arguments are required: {info,replay,verify}"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(data, tmp_path, capsys, damaged, argv, message) -> None:
    path = damage(Path(shutil.copytree(data, tmp_path / "data")), damaged) if damaged else data
    code, out, err = run(capsys, *(arg.format(data=path, tmp=tmp_path) for arg in argv))
    assert (code, out) == (2, "")
    assert err.startswith("spinlock-assets: error: ") and err.count("\n") == 1, err
    assert message in err


@pytest.mark.slow
def test_the_console_script_runs_main(data: Path, tmp_path: Path) -> None:
    def cli(*argv: object) -> subprocess.CompletedProcess[str]:
        script = Path(sys.executable).parent / "spinlock-assets"  # installed from pyproject [project.scripts]
        return subprocess.run([script, *argv], capture_output=True, text=True, check=False)

    info = cli("info", data, "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["n_operators"] == 12
    error = cli("info", tmp_path / "nowhere")
    assert error.returncode == 2 and "Traceback" not in error.stderr
    assert error.stderr == f"spinlock-assets: error: {tmp_path / 'nowhere'}: no such file or directory\n"

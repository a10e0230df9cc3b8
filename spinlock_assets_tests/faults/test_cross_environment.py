"""Replay under another execution fingerprint is classified, never passed or failed blindly: a digest
difference under the SAME fingerprint is a ``mismatch`` (an error); under ANOTHER fingerprint it is
``within_tolerance`` when the base series agree to RTOL/ATOL and ``diverged`` otherwise (a warning);
identical digests are ``exact``. Combinations no real change of numerics produces (digests that differ
over an identical series, a series that differs under identical digests) are ``tampered``. Proven on
``core.verification`` and through the replay asset check."""

from __future__ import annotations

import dataclasses
import json

import dagster as dg
import numpy as np
import pytest

from spinlock_assets.core.fingerprint import execution_fingerprint
from spinlock_assets.core.verification import classify, replay_rollout, same_fingerprint, verify
from spinlock_assets.storage import ShardStore
from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.defs.helpers import SHARDS, tiny_definitions
from spinlock_assets_tests.faults.helpers import (
    REPLAY_KEY,
    rewrite_shard,
    run_checks,
    shard_records,
)

SHARD = SHARDS[0]  # operators 0..3, row = operator index


def foreign(fingerprint: dict) -> dict:
    """The fingerprint of another machine: same torch, another CPU capability (other conv kernels)."""
    return {**fingerprint, "cpu_capability": f"{fingerprint.get('cpu_capability')}-on-another-host"}


def other_digest(digests) -> tuple:
    return ("0" * 64, *digests[1:])


def near(series: np.ndarray) -> np.ndarray:  # a few ulps: what another platform's rounding gives
    return series * np.float32(1 + 1e-6)


def far(series: np.ndarray) -> np.ndarray:  # what a chaotic operator makes of those ulps
    return series * np.float32(1.5) + np.float32(1.0)


def nan_moved(series: np.ndarray) -> np.ndarray:
    series = series.copy()
    series[0, -1, 0, 0] = np.nan
    return series


@pytest.fixture(scope="module")
def stored_and_replayed(generated_root):
    record = shard_records(generated_root, tiny_spec(), SHARD)[1]
    return record, replay_rollout(record)


# stored digests changed?, stored series change, same fingerprint? -> status
CASES = {
    "identical": (False, None, True, "exact"),
    "identical-other-fingerprint": (False, None, False, "exact"),
    # Digests that differ while the series is identical bit for bit: a forged digest, whatever the numerics.
    "digest-differs-same-fingerprint": (True, None, True, "tampered"),
    "digest-differs-same-fingerprint-series-near": (True, near, True, "mismatch"),
    "other-fingerprint-series-near": (True, near, False, "within_tolerance"),
    "other-fingerprint-series-equal": (True, None, False, "tampered"),
    "series-edited-digests-equal": (False, near, True, "tampered"),
    "other-fingerprint-series-far": (True, far, False, "diverged"),
    "other-fingerprint-nan-pattern-differs": (True, nan_moved, False, "diverged"),
}


@pytest.mark.parametrize("case", CASES)
def test_classify_separates_reproducibility_bugs_from_platform_differences(stored_and_replayed, case):
    record, replayed = stored_and_replayed
    digest_differs, series_change, same, expected = CASES[case]
    stored = dataclasses.replace(
        record,
        digests=other_digest(record.digests) if digest_differs else record.digests,
        base_series=series_change(record.base_series) if series_change else record.base_series,
    )
    verification = classify(stored, replayed, same_fingerprint=same)
    assert verification.status == expected
    assert verification.ok == (expected in ("exact", "within_tolerance"))
    assert verification.mismatched_realizations == ((0,) if digest_differs else ())
    assert verification.same_fingerprint == same


@pytest.mark.parametrize(
    "case",
    [
        "digest-differs-same-fingerprint",
        "digest-differs-same-fingerprint-series-near",
        "other-fingerprint-series-near",
        "other-fingerprint-series-far",
    ],
)
def test_verify_reads_the_fingerprint_the_operator_was_generated_under(stored_and_replayed, case):
    record, _ = stored_and_replayed
    digest_differs, series_change, same, expected = CASES[case]
    current = execution_fingerprint()
    stored = dataclasses.replace(
        record,
        digests=other_digest(record.digests),
        base_series=series_change(record.base_series) if series_change else record.base_series,
        fingerprint=current if same else foreign(current),
    )
    assert verify(stored).status == expected


def test_fingerprints_differ_by_numerics_not_by_package_version():
    current = execution_fingerprint()
    assert same_fingerprint({**current, "package": "0.0.0-elsewhere"}, current)
    assert same_fingerprint(None, current)  # no recorded fingerprint: must reproduce exactly
    assert not same_fingerprint(foreign(current), current)
    assert not same_fingerprint({**current, "torch": "1.0.0"}, current)


# fingerprint of the stored shard, {row: series change} for rows whose digest is changed -> expected check
SHARD_CASES = {
    "other-fingerprint-within-tolerance": (foreign, {1: near}, True, dg.AssetCheckSeverity.WARN),
    "other-fingerprint-diverged": (foreign, {1: near, 2: far}, False, dg.AssetCheckSeverity.WARN),
    "same-fingerprint-mismatch": (lambda fp: fp, {1: near}, False, dg.AssetCheckSeverity.ERROR),
}


@pytest.mark.parametrize("case", SHARD_CASES)
def test_replay_check_warns_under_another_fingerprint_and_errs_on_a_mismatch(data_root, instance, case):
    fingerprint_of, changed_rows, passes, severity = SHARD_CASES[case]
    stored = json.loads(ShardStore(data_root).read_header("base_features", SHARD).attrs["fingerprint_json"])

    def digests(values: np.ndarray) -> np.ndarray:
        for row in changed_rows:
            values[row, 0] = b"0" * 64
        return values

    def series(values: np.ndarray) -> np.ndarray:
        for row, change in changed_rows.items():
            values[row] = change(values[row])
        return values

    rewrite_shard(
        data_root,
        "base_features",
        SHARD,
        arrays={"digests": digests, "series": series},
        attrs={"fingerprint_json": json.dumps(fingerprint_of(stored), sort_keys=True)},
    )
    defs = tiny_definitions(tiny_spec(), data_root)
    evaluation = run_checks(defs, instance, SHARD)[("base_features", REPLAY_KEY.name)]
    metadata = {key: value.value for key, value in evaluation.metadata.items()}
    assert (evaluation.passed, evaluation.severity) == (passes, severity)
    assert metadata["operators_verified"] == 4
    statuses = {"exact": metadata["exact"], "within": metadata["within_tolerance"]}
    statuses |= {"diverged": metadata["diverged"], "mismatched": metadata["mismatched"]}
    unchanged = 4 - len(changed_rows)
    if fingerprint_of is foreign:
        far_rows = [row for row, change in changed_rows.items() if change is far]
        assert statuses == {
            "exact": unchanged,
            "within": len(changed_rows) - len(far_rows),
            "diverged": len(far_rows),
            "mismatched": 0,
        }
    else:
        assert statuses == {
            "exact": unchanged,
            "within": 0,
            "diverged": 0,
            "mismatched": len(changed_rows),
        }

"""Workflow: a run whose input shard is missing fails with a message that says what to run first, and the
run page shows that message, not a stack trace ending in a file path (README, "When a run fails")."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from spinlock_assets.defs.jobs import FEATURES_JOB
from spinlock_assets_tests.e2e.dagster_dev import DagsterDev

from .dagster_ui import doc_screenshot, save_screenshot
from .server_setup import current_spec, shard_keys

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ASSET = "dynamics_features"  # not the family the feature-family workflow starts from unmaterialized


def test_a_missing_input_shard_fails_saying_what_to_run_first(generated_dev: DagsterDev, page: Page) -> None:
    dev = generated_dev
    key = shard_keys(current_spec(dev))[0]
    shard = dev.data_root / "base_features" / f"{key}.h5"
    aside = shard.with_suffix(".aside")  # not a shard file name: the store no longer sees it
    shard.rename(aside)
    try:
        run_id = dev.launch_run(FEATURES_JOB, [ASSET], tags={"dagster/partition": key})
        assert dev.wait_run(run_id) == "FAILURE", dev.describe_run(run_id)
    finally:
        aside.rename(shard)

    # Runs → the failed run → its errored step (right panel): the step's log, where the failure reads as
    # an instruction with the input asset, partition and job as metadata
    page.goto(f"{dev.url}/runs/{run_id}")
    page.get_by_text("Errored (1)").locator("xpath=../..").get_by_text("replay_feature_families").click()
    step_failure = page.get_by_text("STEP_FAILURE", exact=True).first
    step_failure.scroll_into_view_if_needed()
    message = (
        f"replay_feature_families cannot read its input: base_features has not been materialized for "
        f"partition {key}. Run generate_shards for partition {key} first"
    )
    expect(page.get_by_text(message).first).to_be_visible()
    doc_screenshot(page, "ui-failure-says-what-to-run")
    save_screenshot(page, "test_a_missing_input_shard_fails_saying_what_to_run_first")

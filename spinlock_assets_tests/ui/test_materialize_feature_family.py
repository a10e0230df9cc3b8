"""Workflow: a derived feature family never materialized is materialized from the UI, shard by shard,
then consolidated into dataset.h5, all by clicking."""

from __future__ import annotations

import h5py
import pytest
from playwright.sync_api import Page, expect

from spinlock_assets_tests.e2e.dagster_dev import DagsterDev

from .dagster_ui import (
    asset_link,
    confirm_if_asked,
    launch_from_dialog,
    materialize_button,
    metadata_value,
    open_asset,
    save_screenshot,
    wait_for_launched,
)
from .server_setup import current_spec, materialized_partitions, shard_keys

pytestmark = [pytest.mark.slow, pytest.mark.browser]

FAMILY = "spectral"
ASSET = f"{FAMILY}_features"


def test_materialize_new_feature_family_from_the_ui(generated_dev: DagsterDev, page: Page) -> None:
    dev = generated_dev
    shards = shard_keys(current_spec(dev))
    assert not materialized_partitions(dev, ASSET), f"{ASSET} must start never materialized"

    # Catalog → spectral_features → Materialize… → Missing (every shard) → Launch backfill
    open_asset(page, ASSET)
    expect(page.get_by_text("Never materialized")).to_be_visible()
    materialize_button(page).click()
    launch_from_dialog(page, "Missing", shards)
    # the toast's View → the backfill page, until its status reads Succeeded
    wait_for_launched(page, dev)
    save_screenshot(page, "feature_family_backfill")

    # the asset's Partitions tab agrees: every shard materialized, none missing, and a shard's
    # materialization says every operator's replay matched its generation run bit for bit
    asset_link(page, ASSET).first.click()
    page.get_by_role("tab", name="Partitions").click()
    expect(page.get_by_text(f"Materialized ({len(shards)})", exact=True)).to_be_visible()
    expect(page.get_by_text("Missing (0)", exact=True)).to_be_visible()
    page.get_by_text(shards[0], exact=True).first.click()
    operators = str(current_spec(dev).shard_size)
    expect(metadata_value(page, "operators", operators)).to_be_visible()
    expect(metadata_value(page, "replay_exact", operators)).to_be_visible()
    save_screenshot(page, "feature_family_partitions")
    for key in shards:
        assert (dev.data_root / ASSET / f"{key}.h5").is_file(), key

    # Catalog → dataset → Materialize (the other families are missing: confirm) → the run succeeds
    open_asset(page, "dataset")
    materialize_button(page).click()
    confirm_if_asked(page)
    wait_for_launched(page, dev)
    save_screenshot(page, "test_materialize_new_feature_family_from_the_ui")

    spec = current_spec(dev)
    with h5py.File(dev.data_root / "dataset.h5", "r") as dataset:
        series = dataset[f"/features/{FAMILY}/series"]
        assert series.shape[:4] == (spec.n_operators, spec.realizations, spec.steps, spec.channels)
        assert dataset[f"/features/{FAMILY}/present"][()].all()

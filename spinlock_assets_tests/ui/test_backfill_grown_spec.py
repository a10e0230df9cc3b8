"""Workflow: the spec grows by a shard; the code location is reloaded and the missing shard backfilled
from the Catalog (the generation assets ticked together), leaving every existing shard file byte for
byte as it was (README, "Workflows in the UI")."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from spinlock_assets_tests.e2e.dagster_dev import DagsterDev

from .dagster_ui import (
    eventually,
    launch_from_dialog,
    materialize_button,
    nav_link,
    open_asset,
    save_screenshot,
    tick_in_catalog,
    wait_for_launched,
)
from .server_setup import (
    GENERATION_ASSETS,
    current_spec,
    generate_missing_shards,
    grow_spec,
    sha256_of,
    shard_keys,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

RELOAD_TIMEOUT_S = 120


def _shard_hashes(dev: DagsterDev, shards: list[str]) -> dict[tuple[str, str], str]:
    return {
        (asset, key): sha256_of(dev.data_root / asset / f"{key}.h5")
        for asset in GENERATION_ASSETS
        for key in shards
    }


def test_backfill_new_shard_after_growing_the_spec_from_the_ui(live_dev: DagsterDev, page: Page) -> None:
    dev = live_dev
    generate_missing_shards(dev)  # setup (GraphQL): every shard of the current spec generated
    before = current_spec(dev)
    old_shards = shard_keys(before)
    hashes = _shard_hashes(dev, old_shards)
    grown = grow_spec(dev, before.n_operators + before.shard_size)
    new_shards = [key for key in shard_keys(grown) if key not in old_shards]
    assert len(new_shards) == 1

    # Deployment → Code locations → Reload: the location reloads the grown spec file
    nav_link(page, "Deployment").click()
    expect(
        page.get_by_role("link", name=re.compile(rf"{re.escape(dev.location_name)}$")).first
    ).to_be_visible()
    page.get_by_role("button", name=re.compile(r"^code_location_reload Reload$")).click()

    # base_features → Partitions: once reloaded, the new shard is the one missing partition
    open_asset(page, "base_features")
    page.get_by_role("tab", name="Partitions").click()
    eventually(
        page,
        lambda timeout_ms: expect(page.get_by_text("Missing (1)", exact=True)).to_be_visible(
            timeout=timeout_ms
        ),
        RELOAD_TIMEOUT_S,
        reload_every_s=5,
    )
    expect(page.get_by_text(new_shards[0], exact=True).first).to_be_visible()

    # Catalog → tick operator_parameters, initial_conditions and base_features (base_features alone
    # would read input shards that do not exist yet) → Materialize selected (3)… → Missing → launch
    tick_in_catalog(page, GENERATION_ASSETS)
    materialize_button(page).click()
    expect(page.get_by_role("dialog")).to_contain_text(
        f"Launch runs to materialize {len(GENERATION_ASSETS)} assets"
    )
    launch_from_dialog(page, "Missing", new_shards, screenshot="ui-backfill-grown-partitions")
    wait_for_launched(page, dev)
    save_screenshot(page, "test_backfill_new_shard_after_growing_the_spec_from_the_ui")

    assert _shard_hashes(dev, old_shards) == hashes, "an existing shard file changed"
    for asset in GENERATION_ASSETS:
        assert (dev.data_root / asset / f"{new_shards[0]}.h5").is_file(), asset

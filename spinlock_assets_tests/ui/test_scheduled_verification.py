"""Workflow: the replay-verification schedule, found under Automation, stopped and started again, and
one of its ticks launched from the UI (one verify_now run, whatever the number of shards); its check
results then show on ``base_features`` → Checks, per shard."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from spinlock_assets.defs.verification.checks import REPLAY_CHECK
from spinlock_assets.defs.verification.verify_now import VERIFY_JOB
from spinlock_assets_tests.e2e.dagster_dev import DagsterDev, poll

from .dagster_ui import nav_link, open_asset, run_ids_in_url, save_screenshot, wait_for_run
from .server_setup import schedule_status

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SCHEDULE = "verify_replay_sample"
STATE_TIMEOUT_S = 15


def _toggle_schedule(page: Page, dev: DagsterDev, *, running: bool) -> None:
    """Click the schedule page's Running switch and check the stored state follows."""
    switch = page.get_by_role("row", name="Running").get_by_role("checkbox")
    switch.locator("xpath=..").click()  # the input is hidden behind its styled switch (the label)
    expect(switch).to_be_checked(checked=running)
    wanted = "RUNNING" if running else "STOPPED"
    poll(
        lambda: True if schedule_status(dev, SCHEDULE) == wanted else None,
        timeout=STATE_TIMEOUT_S,
        what=f"schedule {SCHEDULE} {wanted}",
    )


def test_scheduled_replay_verification_from_the_ui(generated_dev: DagsterDev, page: Page) -> None:
    dev = generated_dev

    # Automation → verify_replay_sample: running by default; stop it, then start it again
    nav_link(page, "Automation").click()
    page.get_by_role("link", name=re.compile(rf"{SCHEDULE}\b")).click()
    expect(page.get_by_role("link", name=VERIFY_JOB, exact=True)).to_be_visible()
    assert schedule_status(dev, SCHEDULE) == "RUNNING"
    _toggle_schedule(page, dev, running=False)
    _toggle_schedule(page, dev, running=True)

    # Preview tick result → Continue: one verify_now run request, whatever the number of shards → launch it
    page.get_by_role("button", name=re.compile("Preview tick result$")).click()
    dialog = page.get_by_role("dialog").filter(has_text=f"Preview tick result for {SCHEDULE}")
    dialog.get_by_role("button", name="Continue").click()
    # Dagster 1.13.27 reads "1 run requests", 1.13.28 "1 run request"
    expect(dialog.get_by_text(re.compile(r"^1 run requests?$"))).to_be_visible(timeout=60_000)
    dialog.get_by_role("button", name=re.compile("Launch all & commit tick result$")).click()

    # the UI moves to the runs list filtered to the launched run; its page until it succeeds
    expect(page).to_have_url(re.compile(r"/runs\?"), timeout=60_000)
    runs_list = page.url
    run_ids = run_ids_in_url(runs_list)
    assert len(run_ids) == 1, runs_list
    for run_id in run_ids:
        page.get_by_role("link", name=re.compile(rf"{run_id[:8]}$")).first.click()
        wait_for_run(page, lambda run_id=run_id: dev.describe_run(run_id))
        page.go_back()

    # base_features → Checks → the replay check → Execution history: the run's evaluations passed
    open_asset(page, "base_features")
    page.get_by_role("tab", name="Checks").click()
    page.get_by_text(REPLAY_CHECK, exact=True).first.click()
    page.get_by_role("tab", name="Execution history").click()
    execution = page.get_by_role("row").filter(has=page.locator(f'a[href^="/runs/{run_ids[0]}"]'))
    expect(execution.first).to_contain_text("Passed")
    save_screenshot(page, "test_scheduled_replay_verification_from_the_ui")
